package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// waitForProcess waits until a process matching marker runs.
func waitForProcess(t *testing.T, marker string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(processesMatching(marker)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no process matching %q started", marker)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// uniqueSleep returns a sleep command line that no other test uses.
func uniqueSleep(t *testing.T, n int) string {
	return fmt.Sprintf("sleep %d%d", 40000+os.Getpid()%10000, n)
}

// A client killed with SIGKILL never closes its channel. The server learns
// of it only from the TCP connection ending, and must then kill the VM and
// remove the session's directory.
func TestClientKilledEndsVM(t *testing.T) {
	for i, options := range [][]string{nil, {"-tt"}} {
		name := "console"
		if options != nil {
			name = "pty"
		}
		t.Run(name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, b backend) {
				cfg := testConfig(t, b.rootfs(t, true))
				srv := startServer(t, cfg, b.launcher)
				sleep := uniqueSleep(t, i)

				args := append(srv.openSSHArgs("test"), options...)
				cmd := exec.Command(requireOpenSSH(t), append(args, "127.0.0.1", sleep)...)
				cmd.Env = askpassEnv(t, testPassword)
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				waitForProcess(t, sleep)

				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				waitNoProcesses(t, sleep)
				waitNoSessionDirs(t, cfg.RuntimeDir)
			})
		})
	}
}

func TestPTYSignalRequestReachesCommand(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)
		session := srv.goSession(t)
		if err := session.RequestPty("xterm", 24, 80, gossh.TerminalModes{}); err != nil {
			t.Fatal(err)
		}
		sleep := uniqueSleep(t, 7)
		if err := session.Start(sleep + " | cat"); err != nil {
			t.Fatal(err)
		}
		waitForProcess(t, sleep)
		if err := session.Signal(gossh.SIGTERM); err != nil {
			t.Fatal(err)
		}

		done := make(chan error, 1)
		go func() { done <- session.Wait() }()
		var waitErr error
		select {
		case waitErr = <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("the command did not end after the signal request")
		}
		exitErr, ok := waitErr.(*gossh.ExitError)
		if !ok {
			t.Fatalf("session ended with %v, want an exit status or signal", waitErr)
		}
		// The shell runs the pipeline; TERM reaches every process of it,
		// and the shell reports the pipeline's status, 128+15.
		if exitErr.ExitStatus() != 143 && exitErr.Signal() != "TERM" {
			t.Errorf("exit status %d signal %q, want 143 or TERM", exitErr.ExitStatus(), exitErr.Signal())
		}
		waitNoProcesses(t, sleep)
	})
}

func TestPTYSessionLeavesNoProcess(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)
		sleep := uniqueSleep(t, 8)

		got := srv.runSSH(t, sshCall{options: []string{"-tt"}, command: "nohup " + sleep + " >/dev/null 2>&1 & echo started"})
		if !strings.Contains(string(got.stdout), "started") || got.status != 0 {
			t.Fatalf("stdout %q status %d, want started and 0 (stderr %q)", got.stdout, got.status, got.stderr)
		}
		waitNoProcesses(t, sleep)
	})
}

// A command that exits ends its VM process and removes its session
// directory, in console and PTY mode.
func TestCommandExitLeavesNothing(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	srv := startServer(t, cfg, testLauncher())
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, options := range [][]string{nil, {"-tt"}} {
		got := srv.runSSH(t, sshCall{options: options, command: "echo hi; exit 4"})
		if got.status != 4 {
			t.Errorf("ssh %v: exit status %d, want 4; stderr: %s", options, got.status, got.stderr)
		}
	}
	waitNoProcesses(t, exe)
	waitNoSessionDirs(t, cfg.RuntimeDir)
}
