package main

import (
	"testing"

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
