package middleware

import (
	"log/slog"
	"net"
	"sync"
	"time"

	"charm.land/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// keepaliveRequest is the global request OpenSSH's sshd sends for
// ClientAliveInterval. Clients usually reply with failure because they do
// not implement it, and any reply shows that the client is there.
const keepaliveRequest = "keepalive@openssh.com"

// Keepalive returns a server option that sends a keepalive@openssh.com
// global request with want-reply on every authenticated connection every
// interval, and closes the connection when a request has gone unanswered
// for countMax intervals, as OpenSSH's ClientAliveInterval and
// ClientAliveCountMax do. Closing the connection ends its sessions, and
// the VM middleware then kills their VMs. A client that vanishes without
// closing its TCP connection is so found after between countMax and
// countMax+1 intervals. An interval of zero or less turns keepalives off;
// a countMax below 1 counts as 1.
//
// Keepalive wraps the server's ConnCallback, so apply it after options
// that set ConnCallback, such as ssh.WrapConn, or they replace it.
func Keepalive(interval time.Duration, countMax int, logger *slog.Logger) ssh.Option {
	if logger == nil {
		logger = discardLogger
	}
	countMax = max(countMax, 1)
	return func(srv *ssh.Server) error {
		if interval <= 0 {
			return nil
		}
		previous := srv.ConnCallback
		srv.ConnCallback = func(ctx ssh.Context, conn net.Conn) net.Conn {
			if previous != nil {
				conn = previous(ctx, conn)
				if conn == nil {
					return nil
				}
			}
			// The watch starts on the first read, which the SSH library
			// makes only for a connection it goes on to serve. A
			// callback applied after this one may still reject the
			// connection, and the library then never cancels ctx.
			return &keepaliveConn{Conn: conn, start: func() {
				go keepConnAlive(ctx, interval, countMax, logger)
			}}
		}
		return nil
	}
}

// keepaliveConn starts the keepalive watch on its first read.
type keepaliveConn struct {
	net.Conn
	once  sync.Once
	start func()
}

// NetConn returns the wrapped connection, so QuickAck finds the TCP
// connection under it.
func (c *keepaliveConn) NetConn() net.Conn { return c.Conn }

func (c *keepaliveConn) Read(p []byte) (int, error) {
	c.once.Do(c.start)
	return c.Conn.Read(p)
}

// keepConnAlive sends keepalives on the connection of ctx until ctx ends,
// which the SSH library does when the connection closes. Before the
// handshake and authentication finish there is no gossh.Conn in ctx, and
// ticks pass without a keepalive; the server's handshake timeout bounds
// that phase.
func keepConnAlive(ctx ssh.Context, interval time.Duration, countMax int, logger *slog.Logger) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()

	// The SSH library sends one want-reply global request at a time, so
	// one keepalive is outstanding at most, and unanswered counts the
	// intervals it has waited.
	replies := make(chan error, 1)
	pending := false
	unanswered := 0
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-replies:
			if err != nil {
				// The connection closed; ctx ends with it.
				return
			}
			pending = false
			unanswered = 0
		case <-ticker.C:
			conn, ok := ctx.Value(ssh.ContextKeyConn).(gossh.Conn)
			if !ok {
				continue
			}
			if !pending {
				pending = true
				go func() {
					_, _, err := conn.SendRequest(keepaliveRequest, true, nil)
					replies <- err
				}()
				continue
			}
			unanswered++
			if unanswered < countMax {
				continue
			}
			logger.Info("client did not reply to keepalives; closing the connection",
				"remote", remoteAddr(ctx), "user", logSafe(connectionUser(ctx)),
				"interval", interval, "unanswered", unanswered)
			if err := conn.Close(); err != nil {
				logger.Debug("close connection after keepalive timeout", "remote", remoteAddr(ctx), "err", err)
			}
			return
		}
	}
}

// remoteAddr returns the client address of ctx for logs.
func remoteAddr(ctx ssh.Context) string {
	if addr := ctx.RemoteAddr(); addr != nil {
		return addr.String()
	}
	return "unknown"
}

// connectionUser returns the user name of ctx, or "" before
// authentication has set one.
func connectionUser(ctx ssh.Context) string {
	user, _ := ctx.Value(ssh.ContextKeyUser).(string)
	return user
}
