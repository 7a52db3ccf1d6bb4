package middleware

import (
	"fmt"
	"log/slog"
	"sync"

	"charm.land/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// LimitSessionChannels returns a server option that rejects a new session
// channel with "administratively prohibited" while its connection already
// has max open, as OpenSSH's sshd rejects channels beyond MaxSessions. A
// channel counts from its opening, before any shell or exec request, so
// one connection cannot hold unbounded server memory with channels that
// never run anything. Limit's per-connection limit, which ends a session
// over it with a message and ExitCapacity, needs this cap above its own,
// for example at twice its value. max of 0 or less means no cap.
//
// It wraps the server's "session" channel handler, so install it after any
// option that sets one, such as FilterRequests. A nil logger discards.
func LimitSessionChannels(max int, logger *slog.Logger) ssh.Option {
	if logger == nil {
		logger = discardLogger
	}
	var mu sync.Mutex
	open := map[*gossh.ServerConn]int{}

	return func(srv *ssh.Server) error {
		if max <= 0 {
			return nil
		}
		next := sessionChannelHandler(srv)
		srv.ChannelHandlers["session"] = func(srv *ssh.Server, conn *gossh.ServerConn, newChan gossh.NewChannel, ctx ssh.Context) {
			mu.Lock()
			full := open[conn] >= max
			if !full {
				open[conn]++
			}
			mu.Unlock()
			if full {
				logger.Warn("session channel rejected", "reason", "too many open on the connection", "limit", max, "remote", conn.RemoteAddr().String())
				_ = newChan.Reject(gossh.Prohibited, fmt.Sprintf("throwawaysh: this connection already has %d open sessions", max))
				return
			}
			defer func() {
				mu.Lock()
				if open[conn]--; open[conn] <= 0 {
					delete(open, conn)
				}
				mu.Unlock()
			}()
			next(srv, conn, newChan, ctx)
		}
		return nil
	}
}
