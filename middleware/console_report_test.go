package middleware

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/throwawaysh/throwawaysh/agent"
)

func reportListener(t *testing.T) net.Listener {
	t.Helper()
	dir, err := os.MkdirTemp("", "report")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := agent.Listen(filepath.Join(dir, "a.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestConsoleResultUsesAgentReport(t *testing.T) {
	ln := reportListener(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	report := awaitConsoleReport(ctx, &Guest{agentListener: ln}, &consoleSignals{}, slog.New(slog.DiscardHandler))

	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", ln.Addr().String())
	}
	status, err := agent.RunConsole(ctx, []string{"/bin/sh", "-c", "kill -TERM $$"}, dial,
		agent.ConsoleOptions{Stdin: devNull, Stdout: devNull, Stderr: devNull})
	if err != nil {
		t.Fatalf("RunConsole: %v", err)
	}

	got := consoleResult(status.Code, report, slog.New(slog.DiscardHandler))
	if got.Signal != "TERM" || got.Status != 143 {
		t.Errorf("result = %+v, want status 143 and signal TERM", got)
	}
}

func TestConsoleResultAgentClosesWithoutReport(t *testing.T) {
	ln := reportListener(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	report := awaitConsoleReport(ctx, &Guest{agentListener: ln}, &consoleSignals{}, slog.New(slog.DiscardHandler))

	// A peer that connects and hangs up, as an agent does when the VM
	// dies before it reports.
	conn, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.Close()

	start := time.Now()
	got := consoleResult(143, report, slog.New(slog.DiscardHandler))
	if got != (Result{Status: 143}) {
		t.Errorf("result = %+v, want the VM status 143 without a signal", got)
	}
	if waited := time.Since(start); waited >= consoleReportTimeout {
		t.Errorf("waited %s, want less than the report timeout %s for a closed connection", waited, consoleReportTimeout)
	}
}

func TestConsoleResultAgentNeverConnects(t *testing.T) {
	ln := reportListener(t)
	ctx, cancel := context.WithCancel(context.Background())
	report := awaitConsoleReport(ctx, &Guest{agentListener: ln}, &consoleSignals{}, slog.New(slog.DiscardHandler))

	got := consoleResult(7, report, slog.New(slog.DiscardHandler))
	if got != (Result{Status: 7}) {
		t.Errorf("result = %+v, want the VM status 7", got)
	}

	// Ending the context closes the listener and ends the accept.
	cancel()
	select {
	case r := <-report:
		if r.err == nil {
			t.Error("report without an agent has no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("awaitConsoleReport did not end within 5 seconds of its context")
	}
}
