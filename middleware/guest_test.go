package middleware_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"
	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/agent"
	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// agentResult is what a middleware between VM and Route saw when it used
// the session's guest agent.
type agentResult struct {
	err    error
	output string
	status agent.ExitStatus
}

// runInGuest returns a middleware for the place between VM and Route that
// runs command through the session's guest agent before it calls the next
// handler, and sends what it saw to results.
func runInGuest(command string, results chan<- agentResult) wish.Middleware {
	return func(next ssh.Handler) ssh.Handler {
		return func(s ssh.Session) {
			s = middleware.SessionContext(s)
			results <- runCommand(s.Context(), command)
			next(s)
		}
	}
}

func runCommand(ctx ssh.Context, command string) agentResult {
	guest, ok := middleware.GuestFrom(ctx)
	if !ok {
		return agentResult{err: errors.New("no guest in the session context")}
	}
	client, err := guest.Agent()
	if err != nil {
		return agentResult{err: err}
	}
	startCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	proc, err := client.Start(startCtx, agent.StartRequest{Command: command, TTY: true})
	if err != nil {
		return agentResult{err: err}
	}
	output, err := io.ReadAll(proc)
	if err != nil {
		return agentResult{err: err}
	}
	status, err := proc.Wait()
	return agentResult{err: err, output: string(output), status: status}
}

func agentChain(t *testing.T, withAgent bool, command string, results chan<- agentResult) []ssh.Option {
	return []ssh.Option{
		middleware.PasswordAuth("u", "p", nil),
		middleware.RawPTY(),
		wish.WithMiddleware(
			middleware.Route(),
			runInGuest(command, results),
			middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(krtest.Rootfs(t, withAgent))),
			middleware.Logging(nil),
		),
	}
}

func receive(t *testing.T, results <-chan agentResult) agentResult {
	t.Helper()
	select {
	case r := <-results:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("the middleware between VM and Route did not run")
		return agentResult{}
	}
}

// A middleware between VM and Route runs a second command in a PTY
// session's VM, and the user's command then reads the file it wrote.
func TestGuestAgentRunsSecondCommand(t *testing.T) {
	results := make(chan agentResult, 1)
	addr := serve(t, agentChain(t, true, "echo prepared > /root/note; echo done; exit 4", results)...)

	session, err := dial(t, addr, "u", "p").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := session.RequestPty("xterm", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	out, err := session.CombinedOutput("cat /root/note")
	if err != nil {
		t.Fatalf("user command: %v (output %q)", err, out)
	}

	r := receive(t, results)
	if r.err != nil {
		t.Fatalf("second command: %v", r.err)
	}
	if r.output != "done\r\n" {
		t.Errorf("second command output = %q, want %q", r.output, "done\r\n")
	}
	if r.status.Code != 4 {
		t.Errorf("second command status = %d, want 4", r.status.Code)
	}
	if got := strings.TrimSpace(string(out)); got != "prepared" {
		t.Errorf("user command output = %q, want %q", got, "prepared")
	}
}

// In a console session Agent fails with ErrNoAgent, and the session runs
// as usual.
func TestGuestAgentConsoleHasNone(t *testing.T) {
	results := make(chan agentResult, 1)
	addr := serve(t, agentChain(t, true, "true", results)...)

	session, err := dial(t, addr, "u", "p").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := session.Output("echo console")
	if err != nil {
		t.Fatalf("run: %v (output %q)", err, out)
	}

	r := receive(t, results)
	if !errors.Is(r.err, middleware.ErrNoAgent) {
		t.Errorf("Agent error = %v, want ErrNoAgent", r.err)
	}
	if string(out) != "console\n" {
		t.Errorf("output = %q, want %q", out, "console\n")
	}
}

// The agent client of an SFTP session runs a command too, and several
// middlewares share the one client.
func TestGuestAgentSharedInSFTPSession(t *testing.T) {
	results := make(chan agentResult, 2)
	chain := []wish.Middleware{
		middleware.Route(),
		runInGuest("echo second", results),
		runInGuest("echo first", results),
		middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(krtest.Rootfs(t, true))),
		middleware.Logging(nil),
	}
	addr := serve(t,
		middleware.PasswordAuth("u", "p", nil),
		middleware.SFTP(chain...),
	)

	session, err := dial(t, addr, "u", "p").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := session.RequestSubsystem("sftp"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"first\r\n", "second\r\n"} {
		r := receive(t, results)
		if r.err != nil {
			t.Fatalf("command %q: %v", want, r.err)
		}
		if r.output != want {
			t.Errorf("output = %q, want %q", r.output, want)
		}
	}
	_ = session.Close()
}

// Agent returns the error of a VM whose agent never connects, and Route
// still ends the session with its own message for it.
func TestGuestAgentErrorReachesRoute(t *testing.T) {
	results := make(chan agentResult, 1)
	launcher := &krtest.Launcher{}
	// A rootfs whose agent sleeps instead of dialing the host.
	root := rootfsWithAgent(t, "#!/bin/sh\nexec sleep 600\n")
	addr := serve(t,
		middleware.PasswordAuth("u", "p", nil),
		middleware.RawPTY(),
		wish.WithMiddleware(
			middleware.Route(),
			runInGuest("true", results),
			middleware.VM(launcher, middleware.WithRootfs(root), middleware.WithBootTimeout(500*time.Millisecond)),
			middleware.Logging(nil),
		),
	)

	session, err := dial(t, addr, "u", "p").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := session.RequestPty("xterm", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	out, err := session.CombinedOutput("true")

	r := receive(t, results)
	if r.err == nil || !strings.Contains(r.err.Error(), "did not connect within") {
		t.Errorf("Agent error = %v, want the boot timeout", r.err)
	}
	var exitErr *gossh.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitStatus() != middleware.ExitVMFailed {
		t.Errorf("session ended with %v, want exit status %d", err, middleware.ExitVMFailed)
	}
	if !strings.Contains(string(out), "did not become ready") {
		t.Errorf("output = %q, want Route's boot timeout message", out)
	}
}

// Agent called from several goroutines at once connects once and gives
// every caller the same client.
func TestGuestAgentConcurrentCalls(t *testing.T) {
	clients := make(chan []*agent.Client, 1)
	collect := func(next ssh.Handler) ssh.Handler {
		return func(s ssh.Session) {
			guest, _ := middleware.GuestFrom(s.Context())
			var wg sync.WaitGroup
			got := make([]*agent.Client, 8)
			for i := range got {
				wg.Go(func() {
					client, err := guest.Agent()
					if err == nil {
						got[i] = client
					}
				})
			}
			wg.Wait()
			clients <- got
			next(s)
		}
	}
	addr := serve(t,
		middleware.PasswordAuth("u", "p", nil),
		middleware.RawPTY(),
		wish.WithMiddleware(
			middleware.Route(),
			collect,
			middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(krtest.Rootfs(t, true))),
		),
	)
	session, err := dial(t, addr, "u", "p").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := session.RequestPty("xterm", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	if out, err := session.CombinedOutput("true"); err != nil {
		t.Fatalf("run: %v (output %q)", err, out)
	}

	got := <-clients
	for i, client := range got {
		if client == nil {
			t.Errorf("call %d got no client", i)
		} else if client != got[0] {
			t.Errorf("call %d got another client than call 0", i)
		}
	}
}
