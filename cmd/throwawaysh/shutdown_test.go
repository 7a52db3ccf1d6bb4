package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/krun"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// shutdownLine is what a client whose session the shutdown ended reads on
// stderr.
const shutdownLine = "throwawaysh: " + shutdownMessage

// backgroundClient is an OpenSSH client that runs while the test goes on.
type backgroundClient struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{}
}

// startClient starts the OpenSSH client against srv with options and
// command, and kills it when the test ends.
func (srv *testServer) startClient(t *testing.T, options []string, command string) *backgroundClient {
	t.Helper()
	args := append(srv.openSSHArgs("test"), options...)
	client := &backgroundClient{done: make(chan struct{})}
	client.cmd = exec.Command(requireOpenSSH(t), append(args, "127.0.0.1", command)...)
	client.cmd.Env = askpassEnv(t, testPassword)
	client.cmd.Stdout, client.cmd.Stderr = &client.stdout, &client.stderr
	if err := client.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = client.cmd.Wait()
		close(client.done)
	}()
	t.Cleanup(func() {
		_ = client.cmd.Process.Kill()
		<-client.done
	})
	return client
}

// wait waits for the client to exit and returns its exit status, failing
// the test after 30 seconds.
func (c *backgroundClient) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-c.done:
		return c.cmd.ProcessState.ExitCode()
	case <-time.After(30 * time.Second):
		t.Fatalf("%q did not exit within 30 s", c.cmd.Args)
		return -1
	}
}

// A shutdown sends every client the reason its session ends, ends the VMs,
// removes the session directories and stops accepting connections.
func TestShutdownEndsSessions(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	logs := &syncBuffer{}
	logger := newLogger(cfg, logs)
	sessions := middleware.NewTracker()
	server, err := newServer(cfg, testLauncher(), sessions, logger)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan int, 1)
	go func() { served <- serve(ctx, server, ln, sessions, logger) }()
	t.Cleanup(func() {
		stop()
		_ = server.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	srv := &testServer{addr: ln.Addr().String(), port: port, cfg: cfg, logs: logs, sessions: sessions}

	sleeps := map[string]string{"console": uniqueSleep(t, 51), "pty": uniqueSleep(t, 52)}
	clients := map[string]*backgroundClient{
		"console": srv.startClient(t, nil, sleeps["console"]),
		"pty":     srv.startClient(t, []string{"-tt"}, sleeps["pty"]),
	}
	for _, sleep := range sleeps {
		waitForProcess(t, sleep)
	}
	if dirs := sessionDirs(t, cfg.RuntimeDir); len(dirs) != 2 {
		t.Fatalf("session directories before the shutdown: %q, want 2", dirs)
	}

	stop()
	select {
	case status := <-served:
		if status != exitOK {
			t.Errorf("serve returned %d, want %d", status, exitOK)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return within 30 s of the shutdown")
	}

	for name, sleep := range sleeps {
		if left := processesMatching(sleep); len(left) > 0 {
			t.Errorf("%s: processes outlived serve: %q", name, left)
		}
	}
	if dirs := sessionDirs(t, cfg.RuntimeDir); len(dirs) > 0 {
		t.Errorf("session directories outlived serve: %q", dirs)
	}
	for name, client := range clients {
		status := client.wait(t)
		if status != middleware.ExitShutdown {
			t.Errorf("%s: client exit status %d, want %d (stderr %q)", name, status, middleware.ExitShutdown, client.stderr.String())
		}
		if !strings.Contains(client.stderr.String(), shutdownLine) {
			t.Errorf("%s: client stderr %q does not contain %q", name, client.stderr.String(), shutdownLine)
		}
	}
	if conn, err := net.DialTimeout("tcp", srv.addr, 5*time.Second); err == nil {
		_ = conn.Close()
		t.Errorf("a new connection to %s succeeded after serve returned", srv.addr)
	}
}

// A session that starts after the shutdown began ends at once, without a
// VM.
func TestShutdownRejectsNewSessions(t *testing.T) {
	var booted atomic.Int32
	launcher := &krtest.Launcher{Started: func(krun.Spec) { booted.Add(1) }}
	srv := startServer(t, testConfig(t, krtestRootfs(t)), launcher)
	if err := srv.sessions.Shutdown(context.Background(), shutdownMessage); err != nil {
		t.Fatalf("Shutdown without sessions: %v", err)
	}

	for _, options := range [][]string{nil, {"-tt"}} {
		got := srv.runSSH(t, sshCall{options: options, command: "echo started"})
		if got.status != middleware.ExitShutdown {
			t.Errorf("ssh %q: exit status %d, want %d (stderr %q)", options, got.status, middleware.ExitShutdown, got.stderr)
		}
		if !strings.Contains(string(got.stderr), shutdownLine) {
			t.Errorf("ssh %q: stderr %q does not contain %q", options, got.stderr, shutdownLine)
		}
		if strings.Contains(string(got.stdout), "started") {
			t.Errorf("ssh %q: the command ran: stdout %q", options, got.stdout)
		}
	}
	if n := booted.Load(); n != 0 {
		t.Errorf("%d VMs booted after the shutdown began", n)
	}
}

// sessionDirs returns the session directories in dir.
func sessionDirs(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
