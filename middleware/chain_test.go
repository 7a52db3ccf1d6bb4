package middleware_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"
	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// runChain serves chain and runs command in one console session, returning
// its exit status, its stderr and the server log once the session has
// ended on the server too.
func runChain(t *testing.T, command string, chain ...wish.Middleware) (int, string, string) {
	t.Helper()
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	withLogging := append(append([]wish.Middleware(nil), chain...), middleware.Logging(logger))
	addr := serve(t, middleware.PasswordAuth("u", "p", nil), wish.WithMiddleware(withLogging...))
	session, err := dial(t, addr, "u", "p").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	session.Stderr = &stderr
	err = session.Run(command)
	status := 0
	var exitErr *gossh.ExitError
	switch {
	case errors.As(err, &exitErr):
		status = exitErr.ExitStatus()
	case err != nil:
		t.Fatalf("session ended without an exit status: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "session end") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return status, stderr.String(), logs.String()
}

func TestChainWithTwoVMsFails(t *testing.T) {
	rootDir := krtest.Rootfs(t, false)
	launcher := &krtest.Launcher{}
	status, stderr, logs := runChain(t, "echo ran",
		middleware.Route(),
		middleware.VM(launcher, middleware.WithRootfs(rootDir)),
		middleware.VM(launcher, middleware.WithRootfs(rootDir)),
	)
	if status != middleware.ExitVMFailed || !strings.Contains(stderr, "misconfigured") {
		t.Errorf("status %d, stderr %q; want %d and the misconfiguration message", status, stderr, middleware.ExitVMFailed)
	}
	if !strings.Contains(logs, "list VM once") {
		t.Errorf("log does not name the fix:\n%s", logs)
	}
	if n := strings.Count(logs, "vm boot"); n != 1 {
		t.Errorf("%d VMs booted, want 1", n)
	}
}

func TestChainWithoutRouteFails(t *testing.T) {
	status, stderr, logs := runChain(t, "echo ran",
		middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(krtest.Rootfs(t, false))),
	)
	if status != middleware.ExitVMFailed || !strings.Contains(stderr, "misconfigured") {
		t.Errorf("status %d, stderr %q; want %d and the misconfiguration message", status, stderr, middleware.ExitVMFailed)
	}
	if !strings.Contains(logs, "put Route after VM") {
		t.Errorf("log does not name the fix:\n%s", logs)
	}
}

func TestChainPanicAfterVMEndsSession(t *testing.T) {
	panicky := func(ssh.Handler) ssh.Handler {
		return func(ssh.Session) { panic("app bug") }
	}
	status, stderr, logs := runChain(t, "echo ran",
		middleware.Route(),
		panicky,
		middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(krtest.Rootfs(t, false))),
	)
	if status != middleware.ExitVMFailed || !strings.Contains(stderr, "internal error") {
		t.Errorf("status %d, stderr %q; want %d and the internal error message", status, stderr, middleware.ExitVMFailed)
	}
	if !strings.Contains(logs, "panic in a handler after the VM middleware") || !strings.Contains(logs, "app bug") {
		t.Errorf("log does not record the panic:\n%s", logs)
	}
	if !strings.Contains(logs, "vm stop") {
		t.Errorf("the VM was not stopped after the panic:\n%s", logs)
	}
}

func TestEndSessionFromAppMiddleware(t *testing.T) {
	gate := func(next ssh.Handler) ssh.Handler {
		return func(s ssh.Session) {
			middleware.EndSession(s, 3, errors.New("quota used up"), "your quota for today is used up")
		}
	}
	status, stderr, logs := runChain(t, "echo ran",
		middleware.Route(),
		gate,
		middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(krtest.Rootfs(t, false))),
	)
	if status != 3 || stderr != "throwawaysh: your quota for today is used up\n" {
		t.Errorf("status %d, stderr %q; want 3 and the app's message", status, stderr)
	}
	if !strings.Contains(logs, "quota used up") || !strings.Contains(logs, "status=3") {
		t.Errorf("log lacks the app's error and status:\n%s", logs)
	}
}

func TestChainWithLimitAfterVMIsLogged(t *testing.T) {
	status, _, logs := runChain(t, "echo ran",
		middleware.Route(),
		middleware.Limit(middleware.WithMaxSessions(4)),
		middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(krtest.Rootfs(t, false))),
	)
	if status != 0 {
		t.Errorf("status %d, want 0: the order is wrong but works", status)
	}
	if !strings.Contains(logs, "misconfigured chain: Limit runs after VM") {
		t.Errorf("log does not report Limit after VM:\n%s", logs)
	}
}
