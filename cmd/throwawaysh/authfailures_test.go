package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// gatedSleep is a FailureTrackerConfig.Sleep that reports each delay on
// started and then blocks until the test opens the gate or the connection
// ends. It replaces the real wait, so the test checks the delay without
// timing it.
type gatedSleep struct {
	started chan time.Duration
	gate    chan struct{}
	once    sync.Once
}

func newGatedSleep(t *testing.T) *gatedSleep {
	g := &gatedSleep{started: make(chan time.Duration, 16), gate: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *gatedSleep) Sleep(ctx context.Context, d time.Duration) {
	g.started <- d
	select {
	case <-g.gate:
	case <-ctx.Done():
	}
}

func (g *gatedSleep) open() { g.once.Do(func() { close(g.gate) }) }

// nextDelay returns the next delay the server started, failing the test
// after 10 seconds without one.
func (g *gatedSleep) nextDelay(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-g.started:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("the server never delayed a rejection")
		return 0
	}
}

func TestAuthFailuresSlowDownOneAddress(t *testing.T) {
	sleep := newGatedSleep(t)
	cfg := testConfig(t, krtest.Rootfs(t, false))
	cfg.authFailures = middleware.FailureTrackerConfig{FreeFailures: 2, BaseDelay: time.Second, Sleep: sleep.Sleep}
	srv := startServer(t, cfg, &krtest.Launcher{})
	from := func(address string) []string { return []string{"-o", "BindAddress=" + address} }

	for i := 1; i <= 2; i++ {
		got := srv.runSSH(t, sshCall{options: from("127.0.0.1"), command: "echo in", password: "wrong password"})
		if got.status != 255 {
			t.Fatalf("wrong password %d: status %d, want 255", i, got.status)
		}
		if !logHasLine(srv, "auth failed", "method=password", "user=test", "remote=127.0.0.1:", fmt.Sprintf("failures=%d", i), "delay=0s") {
			t.Fatalf("no auth failed line with failures=%d and no delay:\n%s", i, srv.logs.String())
		}
	}

	// The third failure from 127.0.0.1 is held back, and the gate keeps it
	// waiting while other clients log in.
	heldResult := make(chan sshResult, 1)
	go func() {
		heldResult <- srv.runSSH(t, sshCall{options: from("127.0.0.1"), command: "echo in", password: "wrong password"})
	}()
	if d := sleep.nextDelay(t); d != time.Second {
		t.Errorf("third failure delayed by %v, want 1s", d)
	}
	if !logHasLine(srv, "auth failed", "remote=127.0.0.1:", "failures=3", "delay=1s") {
		t.Errorf("no auth failed line with failures=3 and delay=1s:\n%s", srv.logs.String())
	}

	// Another address has a count of its own and is not held up.
	got := srv.runSSH(t, sshCall{options: from("127.0.0.2"), command: "echo in", password: "wrong password"})
	if got.status != 255 {
		t.Errorf("wrong password from 127.0.0.2: status %d, want 255", got.status)
	}
	if !logHasLine(srv, "auth failed", "remote=127.0.0.2:", "failures=1", "delay=0s") {
		t.Errorf("127.0.0.2 does not have a count of its own:\n%s", srv.logs.String())
	}
	got = srv.runSSH(t, sshCall{options: from("127.0.0.2"), command: "echo in"})
	if string(got.stdout) != "in\n" || got.status != 0 {
		t.Errorf("right password from 127.0.0.2 while 127.0.0.1 waits: stdout %q status %d (stderr %q)", got.stdout, got.status, got.stderr)
	}
	select {
	case <-heldResult:
		t.Fatal("the held-back rejection ended before the gate opened")
	default:
	}

	sleep.open()
	if got := <-heldResult; got.status != 255 || strings.Contains(string(got.stdout), "in") {
		t.Errorf("held-back wrong password: stdout %q status %d, want nothing and 255", got.stdout, got.status)
	}

	// The right password from the slowed-down address still gets in, at
	// once: success is never delayed.
	got = srv.runSSH(t, sshCall{options: from("127.0.0.1"), command: "echo in"})
	if string(got.stdout) != "in\n" || got.status != 0 {
		t.Errorf("right password from 127.0.0.1 after failures: stdout %q status %d (stderr %q)", got.stdout, got.status, got.stderr)
	}
	select {
	case d := <-sleep.started:
		t.Errorf("a delay of %v was applied after the last failure", d)
	default:
	}
}
