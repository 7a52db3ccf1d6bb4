package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// With OpenSSH connection sharing, sessions on one connection arrive as
// several session channels. Each must get its own VM, and they must run
// at the same time.
func TestControlMasterSessionsGetOwnVMs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)

		args := srv.startControlMaster(t)

		type result struct {
			out    string
			status int
		}
		run := func(command string) result {
			cmd := exec.Command(requireOpenSSH(t), append(append([]string{}, args...), "127.0.0.1", command)...)
			cmd.Env = askpassEnv(t, testPassword)
			out, _ := cmd.Output()
			return result{string(out), cmd.ProcessState.ExitCode()}
		}

		// Two sessions each run a sleep of their own; both sleeps alive at
		// once prove the sessions run at the same time. Ending the sleeps
		// from the host then ends each session with its own status.
		sleeps := []string{uniqueSleep(t, 21), uniqueSleep(t, 22)}
		var wg sync.WaitGroup
		results := make([]result, 3)
		commands := []string{sleeps[0] + "; echo one; exit 11", sleeps[1] + "; echo two; exit 12", "echo three"}
		for i, command := range commands {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = run(command)
			}()
		}
		for _, sleep := range sleeps {
			waitForProcess(t, sleep)
		}
		for _, sleep := range sleeps {
			for _, pid := range processIDs(sleep) {
				_ = syscall.Kill(pid, syscall.SIGTERM)
			}
		}
		wg.Wait()

		want := []result{{"one\n", 11}, {"two\n", 12}, {"three\n", 0}}
		for i := range want {
			if results[i] != want[i] {
				t.Errorf("session %d = %+v, want %+v", i, results[i], want[i])
			}
		}
		if n := strings.Count(srv.logs.String(), "vm boot"); n != 3 {
			t.Errorf("server booted %d VMs, want 3", n)
		}
		if n := strings.Count(srv.logs.String(), "session start"); n != 3 {
			t.Errorf("server logged %d session starts, want 3", n)
		}
	})
}

// startControlMaster starts an OpenSSH control master connected to srv and
// returns the client options that share its connection.
func (srv *testServer) startControlMaster(t *testing.T) []string {
	t.Helper()
	// Unix socket paths are short; t.TempDir() paths can be too long.
	dir, err := os.MkdirTemp("", "tsh-cm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	control := filepath.Join(dir, "c")
	sharing := []string{"-o", "ControlMaster=auto", "-o", "ControlPath=" + control, "-o", "ControlPersist=no"}
	base := srv.openSSHArgs("test")
	// openSSHArgs turns sharing off; the options given later lose to
	// the first ones in OpenSSH, so drop those two.
	var args []string
	for i := 0; i < len(base); i++ {
		if base[i] == "-o" && (strings.HasPrefix(base[i+1], "ControlMaster=") || strings.HasPrefix(base[i+1], "ControlPath=")) {
			i++
			continue
		}
		args = append(args, base[i])
	}
	args = append(args, sharing...)

	master := exec.Command(requireOpenSSH(t), append(args, "-N", "-M", "127.0.0.1")...)
	master.Env = askpassEnv(t, testPassword)
	if err := master.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = master.Process.Kill()
		_ = master.Wait()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(control); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the control master did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return args
}
