package agent

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// consoleHost starts a host that accepts one agent on a unix socket and
// waits for its console report. It returns the agent's dial function and a
// channel that receives what ConsoleExit returned.
func consoleHost(t *testing.T) (dial func(context.Context) (net.Conn, error), reports <-chan consoleHostResult) {
	t.Helper()
	ln, err := Listen(socketPath(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	results := make(chan consoleHostResult, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			results <- consoleHostResult{err: err}
			return
		}
		client, err := Connect(context.Background(), conn, nil)
		if err != nil {
			results <- consoleHostResult{err: err}
			return
		}
		status, err := client.ConsoleExit(context.Background())
		_ = client.Close()
		results <- consoleHostResult{status: status, err: err}
	}()
	dial = func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", ln.Addr().String())
	}
	return dial, results
}

type consoleHostResult struct {
	status ExitStatus
	err    error
}

// consoleFiles returns files for the command's stdout and stderr, and a
// function that reads what was written to them.
func consoleFiles(t *testing.T) (stdout, stderr *os.File, read func() (string, string)) {
	t.Helper()
	dir := t.TempDir()
	open := func(name string) *os.File {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	stdout, stderr = open("stdout"), open("stderr")
	read = func() (string, string) {
		out, err := os.ReadFile(stdout.Name())
		if err != nil {
			t.Fatal(err)
		}
		errOut, err := os.ReadFile(stderr.Name())
		if err != nil {
			t.Fatal(err)
		}
		return string(out), string(errOut)
	}
	return stdout, stderr, read
}

func waitHostResult(t *testing.T, results <-chan consoleHostResult) consoleHostResult {
	t.Helper()
	select {
	case r := <-results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the host got no console report within 10 seconds")
		return consoleHostResult{}
	}
}

func TestRunConsoleReportsSignal(t *testing.T) {
	checkGoroutines(t)
	dial, results := consoleHost(t)
	stdout, stderr, read := consoleFiles(t)

	status, err := RunConsole(testContext(t, 20*time.Second), []string{"/bin/sh", "-c", "echo out; echo err >&2; kill -TERM $$; echo after"}, dial,
		ConsoleOptions{Logger: testLogger(t, "agent"), Stdout: stdout, Stderr: stderr})
	if err != nil {
		t.Fatalf("RunConsole: %v", err)
	}
	if status != (ExitStatus{Code: 143, Signal: "TERM"}) {
		t.Errorf("RunConsole status = %+v, want 143 TERM", status)
	}
	host := waitHostResult(t, results)
	if host.err != nil {
		t.Fatalf("host ConsoleExit: %v", host.err)
	}
	if host.status != (ExitStatus{Code: 143, Signal: "TERM"}) {
		t.Errorf("host got %+v, want 143 TERM", host.status)
	}
	out, errOut := read()
	if out != "out\n" {
		t.Errorf("stdout = %q, want %q", out, "out\n")
	}
	if errOut != "err\n" {
		t.Errorf("stderr = %q, want %q", errOut, "err\n")
	}
}

func TestRunConsoleReportsExitCode(t *testing.T) {
	checkGoroutines(t)
	dial, results := consoleHost(t)
	stdout, stderr, _ := consoleFiles(t)

	status, err := RunConsole(testContext(t, 20*time.Second), []string{"/bin/sh", "-c", "exit 143"}, dial,
		ConsoleOptions{Stdout: stdout, Stderr: stderr})
	if err != nil {
		t.Fatalf("RunConsole: %v", err)
	}
	if status != (ExitStatus{Code: 143}) {
		t.Errorf("RunConsole status = %+v, want 143 without a signal", status)
	}
	host := waitHostResult(t, results)
	if host.err != nil {
		t.Fatalf("host ConsoleExit: %v", host.err)
	}
	if host.status != (ExitStatus{Code: 143}) {
		t.Errorf("host got %+v, want 143 without a signal", host.status)
	}
}

func TestRunConsoleForwardsSignal(t *testing.T) {
	checkGoroutines(t)
	dial, results := consoleHost(t)
	stdout, stderr, read := consoleFiles(t)
	signals := make(chan os.Signal, 1)

	// The command signals through a file that its trap is set, and only then
	// gets the signal, so the trap decides the status.
	ready := filepath.Join(t.TempDir(), "ready")
	go func() {
		for range 200 {
			if _, err := os.Stat(ready); err == nil {
				signals <- syscall.SIGINT
				return
			}
			time.Sleep(25 * time.Millisecond)
		}
	}()
	status, err := RunConsole(testContext(t, 20*time.Second),
		[]string{"/bin/sh", "-c", `trap 'echo got-int; exit 9' INT; : > "$0"; while :; do sleep 0.05; done`, ready}, dial,
		ConsoleOptions{Signals: signals, Stdout: stdout, Stderr: stderr})
	if err != nil {
		t.Fatalf("RunConsole: %v", err)
	}
	if status != (ExitStatus{Code: 9}) {
		t.Errorf("RunConsole status = %+v, want 9 from the INT trap", status)
	}
	if host := waitHostResult(t, results); host.status != (ExitStatus{Code: 9}) {
		t.Errorf("host got %+v (err %v), want 9", host.status, host.err)
	}
	if out, _ := read(); out != "got-int\n" {
		t.Errorf("stdout = %q, want %q", out, "got-int\n")
	}
}

func TestRunConsoleWithoutHost(t *testing.T) {
	checkGoroutines(t)
	stdout, stderr, _ := consoleFiles(t)
	missing := filepath.Join(t.TempDir(), "none.sock")
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", missing)
	}

	status, err := RunConsole(testContext(t, 20*time.Second), []string{"/bin/sh", "-c", "exit 7"}, dial,
		ConsoleOptions{Stdout: stdout, Stderr: stderr, ReportTimeout: time.Second})
	if err == nil {
		t.Error("RunConsole returned no error, want one for the failed dial")
	}
	if status != (ExitStatus{Code: 7}) {
		t.Errorf("status = %+v, want 7 even without a host", status)
	}
}

func TestRunConsoleCommandNotFound(t *testing.T) {
	dial := func(context.Context) (net.Conn, error) { return nil, errors.New("must not dial") }

	status, err := RunConsole(context.Background(), []string{filepath.Join(t.TempDir(), "missing")}, dial, ConsoleOptions{})
	if !errors.Is(err, ErrConsoleStart) {
		t.Errorf("err = %v, want ErrConsoleStart", err)
	}
	if status.Code != 127 {
		t.Errorf("status = %d, want 127 for a missing command", status.Code)
	}
}

func TestConsoleExitSecondReportRejected(t *testing.T) {
	client, err := connectFake(t, func(a *fakeAgent) {
		a.handshake()
		a.send(&ExitMsg{ID: ConsoleID, Status: 1})
		a.send(&ExitMsg{ID: ConsoleID, Status: 2})
		a.waitClosed()
	})
	if err != nil {
		t.Fatal(err)
	}
	status, err := client.ConsoleExit(testContext(t, 10*time.Second))
	if err != nil {
		t.Fatalf("ConsoleExit: %v", err)
	}
	if status.Code != 1 {
		t.Errorf("status = %d, want the first report's 1", status.Code)
	}
	select {
	case <-client.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the client kept the connection after a second console report")
	}
	if err := client.stopErr(); !errors.Is(err, ErrAgentLost) {
		t.Errorf("stop error = %v, want ErrAgentLost", err)
	}
}

func TestRunConsoleKillZeroSparesAgent(t *testing.T) {
	checkGoroutines(t)
	dial, results := consoleHost(t)
	stdout, stderr, _ := consoleFiles(t)

	status, err := RunConsole(testContext(t, 20*time.Second), []string{"/bin/sh", "-c", "kill -TERM 0"}, dial,
		ConsoleOptions{Stdout: stdout, Stderr: stderr})
	if err != nil {
		t.Fatalf("RunConsole: %v", err)
	}
	if status != (ExitStatus{Code: 143, Signal: "TERM"}) {
		t.Errorf("RunConsole status = %+v, want 143 TERM", status)
	}
	if host := waitHostResult(t, results); host.status != (ExitStatus{Code: 143, Signal: "TERM"}) {
		t.Errorf("host got %+v (err %v), want 143 TERM", host.status, host.err)
	}
}
