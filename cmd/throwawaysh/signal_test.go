package main

import (
	"io"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
)

// Without a PTY the command is the VM's workload, and a VM's exit status
// holds a signal only as 128+N. These tests pin that the guest agent's
// report turns a signal into exit-signal, as OpenSSH's sshd sends it, and
// that "exit 143" stays a plain status.

func TestConsoleSignalReportedByName(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)

		out, err := srv.goSession(t).Output("echo before; kill -TERM $$; echo after")
		if string(out) != "before\n" {
			t.Errorf("stdout = %q, want %q", out, "before\n")
		}
		exitErr := exitErrorOf(t, err)
		if exitErr.Signal() != "TERM" {
			t.Errorf("signal = %q (status %d), want TERM", exitErr.Signal(), exitErr.ExitStatus())
		}
	})
}

func TestConsoleExit143IsNoSignal(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)

		exitErr := exitErrorOf(t, srv.goSession(t).Run("exit 143"))
		if exitErr.ExitStatus() != 143 {
			t.Errorf("exit status = %d, want 143", exitErr.ExitStatus())
		}
		if exitErr.Signal() != "" {
			t.Errorf("signal = %q, want none for a plain exit 143", exitErr.Signal())
		}
	})
}

func TestConsoleSignalOpenSSHExits255(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)

		// OpenSSH's client exits 255 when the command was killed by a
		// signal, and 137 would mean the server sent only a status.
		got := srv.runSSH(t, sshCall{command: "echo out; kill -KILL $$"})
		if string(got.stdout) != "out\n" {
			t.Errorf("stdout = %q, want %q", got.stdout, "out\n")
		}
		if got.status != 255 {
			t.Errorf("ssh exit status = %d, want 255 (stderr %q)", got.status, got.stderr)
		}
	})
}

func TestConsoleSignalWithoutAgentKeepsStatus(t *testing.T) {
	srv := startServer(t, testConfig(t, krtest.Rootfs(t, false)), testLauncher())

	exitErr := exitErrorOf(t, srv.goSession(t).Run("kill -TERM $$"))
	if exitErr.ExitStatus() != 143 {
		t.Errorf("exit status = %d, want 143", exitErr.ExitStatus())
	}
	if exitErr.Signal() != "" {
		t.Errorf("signal = %q, want none: without the agent only the VM status is known", exitErr.Signal())
	}
}

// A signal request in a session without a PTY reaches the command's whole
// process group, as with sshd: a trap runs, and TERM ends every process of
// a pipeline.
func TestConsoleSignalRequestReachesCommand(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)

		t.Run("trap", func(t *testing.T) {
			session := srv.goSession(t)
			stdout, err := session.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := session.Start(`trap 'echo got-INT; exit 7' INT; echo ready; while true; do sleep 0.1; done`); err != nil {
				t.Fatal(err)
			}
			output := readUntil(t, stdout, "ready\n")
			if err := session.Signal(gossh.SIGINT); err != nil {
				t.Fatal(err)
			}
			output += readUntil(t, stdout, "got-INT\n")
			if status := exitStatusOf(t, waitSession(t, session)); status != 7 {
				t.Errorf("exit status = %d, want 7 from the trap; output %q", status, output)
			}
		})

		t.Run("pipeline", func(t *testing.T) {
			session := srv.goSession(t)
			stdout, err := session.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			sleep := uniqueSleep(t, 80)
			if err := session.Start("echo ready; " + sleep + " | cat"); err != nil {
				t.Fatal(err)
			}
			readUntil(t, stdout, "ready\n")
			if b.name == "testlauncher" {
				waitForProcess(t, sleep)
			}
			if err := session.Signal(gossh.SIGTERM); err != nil {
				t.Fatal(err)
			}
			exitErr := exitErrorOf(t, waitSession(t, session))
			if exitErr.Signal() != "TERM" {
				t.Errorf("signal = %q (status %d), want TERM", exitErr.Signal(), exitErr.ExitStatus())
			}
			if b.name == "testlauncher" {
				waitNoProcesses(t, sleep)
			}
		})
	})
}

// readUntil reads r until the text read ends with want, and returns it.
func readUntil(t *testing.T, r io.Reader, want string) string {
	t.Helper()
	result := make(chan string, 1)
	go func() {
		var got []byte
		buf := make([]byte, 1)
		for !strings.HasSuffix(string(got), want) {
			if _, err := r.Read(buf); err != nil {
				break
			}
			got = append(got, buf[0])
		}
		result <- string(got)
	}()
	select {
	case got := <-result:
		if !strings.HasSuffix(got, want) {
			t.Fatalf("output %q ended before %q", got, want)
		}
		return got
	case <-time.After(30 * time.Second):
		t.Fatalf("no %q in the output within 30s", want)
		return ""
	}
}

// waitSession waits for session to end, failing the test after 30 seconds.
func waitSession(t *testing.T, session *gossh.Session) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- session.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("the session did not end within 30s")
		return nil
	}
}
