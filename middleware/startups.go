package middleware

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"charm.land/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// startupSlotKey stores a connection's *startupSlot in its ssh.Context.
var startupSlotKey = &contextKey{"throwawaysh-startup-slot"}

// rejectLogInterval is the shortest time between two log lines about
// rejected connections, so a flood of connections cannot flood the log.
const rejectLogInterval = time.Second

// LimitStartups returns a server option that caps the connections that
// have not finished authentication yet, which OpenSSH calls startups
// (sshd_config's MaxStartups and PerSourceMaxStartups): at most maxTotal
// in all and at most maxPerSource from one client. A client is one IPv4
// address or one IPv6 /64 prefix, because a single host usually controls
// a whole /64. Connections whose remote address is not an IP address
// count as one client.
//
// A connection over either cap is closed before the SSH handshake starts
// and logged with its remote address, at most one line a second with a
// count of the lines left out. A connection stops counting when
// authentication succeeds or when it closes. Set the server's
// HandshakeTimeout too: it closes connections that do not finish
// authentication in time, so silent clients give their places back.
// Values below 1 mean 1.
//
// The option wraps the ConnCallback and ServerConfigCallback that earlier
// options set. Options applied after it must wrap those callbacks in turn
// rather than replace them. A nil logger discards.
func LimitStartups(maxTotal, maxPerSource int, logger *slog.Logger) ssh.Option {
	if logger == nil {
		logger = discardLogger
	}
	limiter := &startupLimiter{
		maxTotal:     max(maxTotal, 1),
		maxPerSource: max(maxPerSource, 1),
		perSource:    map[netip.Prefix]int{},
		logger:       logger,
	}
	return func(srv *ssh.Server) error {
		previousConn := srv.ConnCallback
		srv.ConnCallback = func(ctx ssh.Context, conn net.Conn) net.Conn {
			if previousConn != nil {
				conn = previousConn(ctx, conn)
				if conn == nil {
					return nil
				}
			}
			slot, ok := limiter.acquire(conn.RemoteAddr())
			if !ok {
				// The SSH library closes the connection.
				return nil
			}
			ctx.SetValue(startupSlotKey, slot)
			return &startupConn{Conn: conn, slot: slot}
		}

		previousConfig := srv.ServerConfigCallback
		srv.ServerConfigCallback = func(ctx ssh.Context) *gossh.ServerConfig {
			var config *gossh.ServerConfig
			if previousConfig != nil {
				config = previousConfig(ctx)
			}
			if config == nil {
				config = &gossh.ServerConfig{}
			}
			previousLog := config.AuthLogCallback
			// x/crypto/ssh calls AuthLogCallback with a nil error only
			// for the attempt that completes authentication, right
			// before it sends SSH_MSG_USERAUTH_SUCCESS. Partial
			// successes come with a non-nil error.
			config.AuthLogCallback = func(meta gossh.ConnMetadata, method string, err error) {
				if previousLog != nil {
					previousLog(meta, method, err)
				}
				if err != nil {
					return
				}
				if slot, ok := ctx.Value(startupSlotKey).(*startupSlot); ok {
					slot.release()
				}
			}
			return config
		}
		return nil
	}
}

// startupLimiter counts the connections that have not finished
// authentication, in all and per client.
type startupLimiter struct {
	maxTotal     int
	maxPerSource int
	logger       *slog.Logger

	mu        sync.Mutex
	total     int
	perSource map[netip.Prefix]int
	// lastRejectLog is when the last "connection rejected" line was
	// written, and rejectsNotLogged counts the rejections since then that
	// got no line.
	lastRejectLog    time.Time
	rejectsNotLogged int
}

// acquire takes a place for a new connection from remote, and returns
// false, after logging, when a cap is reached.
func (l *startupLimiter) acquire(remote net.Addr) (*startupSlot, bool) {
	source := sourcePrefix(remote)

	l.mu.Lock()
	defer l.mu.Unlock()
	var reason string
	var limit int
	switch {
	case l.perSource[source] >= l.maxPerSource:
		reason, limit = "too many unauthenticated connections from this client", l.maxPerSource
	case l.total >= l.maxTotal:
		reason, limit = "too many unauthenticated connections", l.maxTotal
	default:
		l.total++
		l.perSource[source]++
		return &startupSlot{limiter: l, source: source}, true
	}

	now := time.Now()
	if now.Sub(l.lastRejectLog) < rejectLogInterval {
		l.rejectsNotLogged++
		return nil, false
	}
	l.logger.Warn("connection rejected", "remote", addrString(remote), "reason", reason, "limit", limit,
		"rejected_unlogged", l.rejectsNotLogged)
	l.lastRejectLog = now
	l.rejectsNotLogged = 0
	return nil, false
}

// startupSlot is one connection's place in the count until release.
type startupSlot struct {
	limiter *startupLimiter
	source  netip.Prefix
	once    sync.Once
}

// release gives the place back. Calls after the first do nothing.
func (s *startupSlot) release() {
	s.once.Do(func() {
		l := s.limiter
		l.mu.Lock()
		defer l.mu.Unlock()
		l.total--
		l.perSource[s.source]--
		if l.perSource[s.source] <= 0 {
			delete(l.perSource, s.source)
		}
	})
}

// startupConn releases its connection's place when it is closed, which the
// SSH library does for every connection it accepted, also after a failed
// handshake.
type startupConn struct {
	net.Conn
	slot *startupSlot
}

// NetConn returns the wrapped connection, so QuickAck finds the TCP
// connection under it.
func (c *startupConn) NetConn() net.Conn { return c.Conn }

func (c *startupConn) Close() error {
	c.slot.release()
	return c.Conn.Close()
}

// sourcePrefix returns the client that remote belongs to: the IPv4 address
// as a /32, or the /64 prefix of the IPv6 address. Addresses that are not
// IP addresses all map to the zero prefix.
func sourcePrefix(remote net.Addr) netip.Prefix {
	var addrPort netip.AddrPort
	if tcp, ok := remote.(*net.TCPAddr); ok {
		addrPort = tcp.AddrPort()
	} else if remote != nil {
		parsed, err := netip.ParseAddrPort(remote.String())
		if err != nil {
			return netip.Prefix{}
		}
		addrPort = parsed
	}
	ip := addrPort.Addr().Unmap().WithZone("")
	if !ip.IsValid() {
		return netip.Prefix{}
	}
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	prefix, err := ip.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return prefix
}

func addrString(addr net.Addr) string {
	if addr == nil {
		return "unknown"
	}
	return addr.String()
}
