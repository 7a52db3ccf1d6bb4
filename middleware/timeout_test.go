package middleware_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"
	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// A handler that does not end when the timeout kills its VM, as Route does
// while it waits to write to a client that stopped reading, still gets
// the session ended: Timeout sends ExitTimeout and closes the channel.
func TestTimeoutEndsStuckHandler(t *testing.T) {
	stuck := func(ssh.Handler) ssh.Handler {
		return func(s ssh.Session) {
			// Reads until the channel closes, whatever the VM does.
			_, _ = io.Copy(io.Discard, s)
		}
	}
	addr := serve(t,
		middleware.PasswordAuth("u", "p", nil),
		wish.WithMiddleware(
			stuck,
			middleware.Timeout(
				middleware.WithSessionTimeout(300*time.Millisecond),
				middleware.WithTimeoutGrace(200*time.Millisecond),
			),
			middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(krtest.Rootfs(t, false))),
			middleware.Logging(nil),
		),
	)
	session, err := dial(t, addr, "u", "p").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	// An open stdin that sends nothing keeps the handler reading.
	if _, err := session.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	session.Stderr = &stderr
	if err := session.Start("sleep 600"); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() { done <- session.Wait() }()
	var waitErr error
	select {
	case waitErr = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the session did not end after its timeout and grace period")
	}
	var exitErr *gossh.ExitError
	if !errors.As(waitErr, &exitErr) || exitErr.ExitStatus() != middleware.ExitTimeout {
		t.Errorf("session ended with %v, want exit status %d", waitErr, middleware.ExitTimeout)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr = %q, want nothing: the forced end writes no message", stderr.String())
	}
}

// A client that stops reading its TCP connection, as a stopped process
// does, holds every write to it, the channel's close included, so a
// handler writing to it would block for good. After a second grace period
// the Timeout middleware closes the connection, which ends the write.
func TestTimeoutClosesConnectionOfClientThatReadsNothing(t *testing.T) {
	returned := make(chan struct{})
	writer := func(ssh.Handler) ssh.Handler {
		return func(s ssh.Session) {
			defer close(returned)
			block := make([]byte, 32<<10)
			for {
				if _, err := s.Write(block); err != nil {
					return
				}
			}
		}
	}
	addr := serve(t,
		middleware.PasswordAuth("u", "p", nil),
		wish.WithMiddleware(
			writer,
			middleware.Timeout(
				middleware.WithSessionTimeout(300*time.Millisecond),
				middleware.WithTimeoutGrace(200*time.Millisecond),
			),
			middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(krtest.Rootfs(t, false))),
			middleware.Logging(nil),
		),
	)
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := &stallingConn{Conn: raw, stall: make(chan struct{}), closed: make(chan struct{})}
	defer conn.Close()
	clientConn, chans, reqs, err := gossh.NewClientConn(conn, addr, &gossh.ClientConfig{
		User:            "u",
		Auth:            []gossh.AuthMethod{gossh.Password("p")},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
	})
	if err != nil {
		t.Fatal(err)
	}
	session, err := gossh.NewClient(clientConn, chans, reqs).NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := session.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if err := session.Start("sleep 600"); err != nil {
		t.Fatal(err)
	}
	close(conn.stall)

	select {
	case <-returned:
	case <-time.After(30 * time.Second):
		t.Fatal("the handler still writes to a client that reads nothing")
	}
}

// stallingConn is a client connection whose reads block, once stall is
// closed, until the connection is closed, as those of a stopped client do.
type stallingConn struct {
	net.Conn
	stall     chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func (c *stallingConn) Read(p []byte) (int, error) {
	select {
	case <-c.stall:
		<-c.closed
		return 0, net.ErrClosed
	default:
	}
	return c.Conn.Read(p)
}

func (c *stallingConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}
