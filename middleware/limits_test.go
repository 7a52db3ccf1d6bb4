package middleware_test

import (
	"errors"
	"io"
	"sync/atomic"
	"testing"

	"charm.land/ssh"
	"charm.land/wish/v2"
	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/middleware"
)

// A handler that panics must not keep its session counted: the SSH library
// recovers the panic, and the next session on the connection is admitted.
func TestLimitReleasedAfterPanic(t *testing.T) {
	var calls atomic.Int32
	handler := func(next ssh.Handler) ssh.Handler {
		return func(s ssh.Session) {
			if calls.Add(1) == 1 {
				panic("handler failure in test")
			}
			_, _ = io.WriteString(s, "admitted\n")
		}
	}
	addr := serve(t,
		middleware.PasswordAuth("u", "p", nil),
		wish.WithMiddleware(handler, middleware.Limit(middleware.WithMaxSessionsPerConnection(1))),
	)
	client := dial(t, addr, "u", "p")

	first, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var exitErr *gossh.ExitError
	if err := first.Run("x"); !errors.As(err, &exitErr) || exitErr.ExitStatus() != 1 {
		t.Fatalf("panicking session ended with %v, want exit status 1 from the SSH library", err)
	}

	second, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := second.Output("x")
	if err != nil || string(out) != "admitted\n" {
		t.Errorf("session after the panic: output %q, err %v; want \"admitted\\n\"", out, err)
	}
}

// Limit used alone, without the other middlewares of this package, rejects
// with ExitCapacity and a message on stderr.
func TestLimitAloneRejectsWithCapacity(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	handler := func(next ssh.Handler) ssh.Handler {
		return func(s ssh.Session) {
			started <- struct{}{}
			<-release
		}
	}
	addr := serve(t,
		middleware.PasswordAuth("u", "p", nil),
		wish.WithMiddleware(handler, middleware.Limit(middleware.WithMaxSessions(1))),
	)
	client := dial(t, addr, "u", "p")

	holder, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start("x"); err != nil {
		t.Fatal(err)
	}
	<-started

	rejected, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	rejected.Stderr = stderr
	err = rejected.Run("x")
	var exitErr *gossh.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitStatus() != middleware.ExitCapacity {
		t.Errorf("rejected session ended with %v, want exit status %d", err, middleware.ExitCapacity)
	}
	if want := "throwawaysh: session rejected: the server has reached its limit of 1 session; try again later\n"; stderr.String() != want {
		t.Errorf("stderr = %q, want %q", stderr.String(), want)
	}
	close(release)
	if err := holder.Wait(); err != nil {
		t.Errorf("holding session: %v", err)
	}
}
