//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/throwawaysh/throwawaysh/agent"
)

var (
	buildOnce   sync.Once
	buildDir    string
	buildOutput string
	buildErr    error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// buildAgent builds the agent binary once per test run, the way it is
// installed into guests: static, with CGO_ENABLED=0.
func buildAgent(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "agent-build")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, "throwawaysh-guest-agent"), ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		var output []byte
		output, buildErr = cmd.CombinedOutput()
		buildOutput = string(output)
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, buildOutput)
	}
	return filepath.Join(buildDir, "throwawaysh-guest-agent")
}

func TestBinarySession(t *testing.T) {
	binary := buildAgent(t)
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "a.sock")
	ln, err := agent.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	var stderr syncBuffer
	cmd := exec.Command(binary, "--connect", "unix:"+socket)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// waitErr is set before exited is closed.
	var waitErr error
	exited := make(chan struct{})
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client, err := agent.Connect(ctx, conn, nil)
	if err != nil {
		t.Fatalf("Connect: %v; agent log:\n%s", err, stderr.String())
	}
	proc, err := client.Start(ctx, agent.StartRequest{Command: "echo hi; exit 3", TTY: true, Term: "xterm", Rows: 24, Cols: 80})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	output, err := io.ReadAll(proc)
	if err != nil {
		t.Fatalf("read output: %v", err)
	}
	status, err := proc.Wait()
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if string(output) != "hi\r\n" || status != (agent.ExitStatus{Code: 3}) {
		t.Errorf("output %q, status %+v; want \"hi\\r\\n\" and code 3", output, status)
	}

	client.Close()
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("agent exited with %v after the host closed; log:\n%s", waitErr, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("agent did not exit within 10s after the host closed")
	}
}

func TestBinaryRejectsBadFlags(t *testing.T) {
	binary := buildAgent(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--vsock-port", "abc"}, "vsock-port"},
		{[]string{"--vsock-port", "4294967296"}, "--vsock-port"},
		{[]string{"--vsock-cid", "-1"}, "vsock-cid"},
		{[]string{"--connect", "tcp:127.0.0.1:22"}, "--connect"},
		{[]string{"--connect", "unix:"}, "--connect"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"extra"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		cmd := exec.Command(binary, tt.args...)
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.ExitCode() == 0 {
			t.Errorf("%v: err = %v, want a non-zero exit", tt.args, err)
		}
		if !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: stderr %q does not name %q", tt.args, stderr.String(), tt.want)
		}
	}
}

func TestBinaryDialFails(t *testing.T) {
	binary := buildAgent(t)
	socket := filepath.Join(t.TempDir(), "nobody-listens.sock")
	var stderr bytes.Buffer
	cmd := exec.Command(binary, "--connect", "unix:"+socket)
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
		t.Errorf("err = %v, want exit status 1", err)
	}
	// It retries for about dialTimeout before it gives up.
	if elapsed := time.Since(start); elapsed < dialTimeout || elapsed > 3*dialTimeout {
		t.Errorf("gave up after %s, want about %s", elapsed, dialTimeout)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "dial host") || !strings.Contains(lines[0], socket) {
		t.Errorf("stderr = %q, want one log line about the dial naming the socket", stderr.String())
	}
}

func TestBinaryVersion(t *testing.T) {
	binary := buildAgent(t)
	output, err := exec.Command(binary, "--version").Output()
	if err != nil {
		t.Fatalf("--version: %v", err)
	}
	if !strings.HasPrefix(string(output), "throwawaysh-guest-agent ") || !strings.Contains(string(output), "protocol version 1") {
		t.Errorf("--version printed %q", output)
	}
}

// syncBuffer is a bytes.Buffer that a running process's output can be
// copied into while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestBinaryExecReportsSignal(t *testing.T) {
	binary := buildAgent(t)
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "a.sock")
	ln, err := agent.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type report struct {
		status agent.ExitStatus
		err    error
	}
	reports := make(chan report, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			reports <- report{err: err}
			return
		}
		client, err := agent.Connect(context.Background(), conn, nil)
		if err != nil {
			reports <- report{err: err}
			return
		}
		status, err := client.ConsoleExit(context.Background())
		_ = client.Close()
		reports <- report{status: status, err: err}
	}()

	// The agent's stdout and stderr are the user's, so it must write
	// nothing of its own to them.
	var stdout, stderr syncBuffer
	cmd := exec.Command(binary, "--connect", "unix:"+socket, "--exec", "--", "/bin/sh", "-c", "echo out; echo err >&2; kill -TERM $$")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 143 {
		t.Errorf("agent exited with %v, want status 143", err)
	}
	if stdout.String() != "out\n" {
		t.Errorf("stdout = %q, want %q", stdout.String(), "out\n")
	}
	if stderr.String() != "err\n" {
		t.Errorf("stderr = %q, want only the command's %q", stderr.String(), "err\n")
	}
	select {
	case r := <-reports:
		if r.err != nil {
			t.Fatalf("host: %v", r.err)
		}
		if r.status != (agent.ExitStatus{Code: 143, Signal: "TERM"}) {
			t.Errorf("host got %+v, want 143 TERM", r.status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the host got no report within 10 seconds")
	}
}

func TestBinaryExecWithoutCommand(t *testing.T) {
	binary := buildAgent(t)
	var stderr bytes.Buffer
	cmd := exec.Command(binary, "--exec")
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 2 {
		t.Errorf("agent exited with %v, want status 2", err)
	}
	if !strings.Contains(stderr.String(), "needs a command after --") {
		t.Errorf("stderr = %q, want the missing command explained", stderr.String())
	}
}
