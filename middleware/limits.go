package middleware

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"charm.land/ssh"
	"charm.land/wish/v2"
)

// LimitOption configures the Limit middleware.
type LimitOption func(*limitConfig)

type limitConfig struct {
	maxSessions              int
	maxSessionsPerIP         int
	maxSessionsPerConnection int
}

// WithMaxSessions sets the maximum number of active sessions on the whole
// server. Zero or less means no limit, the default.
func WithMaxSessions(n int) LimitOption {
	return func(c *limitConfig) { c.maxSessions = max(n, 0) }
}

// WithMaxSessionsPerIP sets the maximum number of active sessions from one
// client IP address, over all its connections. Zero or less means no
// limit, the default.
//
// NOTE: an IPv6 client usually controls a whole /64 network, so a per
// address limit does not bind it the way it binds an IPv4 client.
func WithMaxSessionsPerIP(n int) LimitOption {
	return func(c *limitConfig) { c.maxSessionsPerIP = max(n, 0) }
}

// WithMaxSessionsPerConnection sets the maximum number of active sessions
// on one SSH connection, as OpenSSH's MaxSessions does (10 in OpenSSH). A
// client opens several with connection sharing (ControlMaster). Zero or
// less means no limit, the default.
func WithMaxSessionsPerConnection(n int) LimitOption {
	return func(c *limitConfig) { c.maxSessionsPerConnection = max(n, 0) }
}

// Limit returns a middleware that counts active sessions in all, per client
// IP address and per SSH connection, and rejects a session that would go
// over one of the limits set by opts. A rejected session ends at once,
// before the handlers after Limit run, with one line on stderr that names
// the limit and exit status ExitCapacity. Its connection stays open, so
// other sessions on it go on, and a later session on it is admitted once
// the count is below the limit again.
//
// A session counts from the moment its handler runs, which is when the
// shell, exec or subsystem request arrives, until the handlers after Limit
// return, also when one of them panics. With VM after Limit that includes
// killing and reaping the VM, which ends a moment after the client got its
// exit status, so a client that starts its next session at once can find
// the old one still counted.
//
// Limit must run after Logging and before VM, so that no VM boots for a
// rejected session. In wish.WithMiddleware, list it between VM and Logging.
//
// Each call to Limit has its own counts. Pass the same middleware value to
// wish.WithMiddleware and to SFTP, so that SFTP sessions count in the same
// totals as shell and exec sessions.
func Limit(opts ...LimitOption) wish.Middleware {
	var cfg limitConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	counts := &sessionCounts{
		cfg:          cfg,
		byIP:         map[netip.Addr]int{},
		byConnection: map[any]int{},
	}

	return func(next ssh.Handler) ssh.Handler {
		return func(s ssh.Session) {
			s = SessionContext(s)
			warnAfterVM(s, "Limit", "rejected sessions boot a VM first")
			ip := clientIP(s.RemoteAddr())
			connection := connectionKey(s)

			release, rejected := counts.acquire(ip, connection)
			if rejected != nil {
				observeRejected(s.Context(), rejected.scope)
				fail(s, ExitCapacity, rejected.err(), rejected.userMessage())
				return
			}
			defer release()

			next(s)
		}
	}
}

// sessionCounts is the number of active sessions of one Limit middleware.
type sessionCounts struct {
	cfg limitConfig

	mu           sync.Mutex
	total        int
	byIP         map[netip.Addr]int
	byConnection map[any]int
}

// limitReached names the limit that rejected a session.
type limitReached struct {
	scope string // "per connection", "per client address" or "on this server"
	limit int
}

func (l *limitReached) err() error {
	return fmt.Errorf("session rejected: limit of %s %s reached", countSessions(l.limit), l.scope)
}

func (l *limitReached) userMessage() string {
	switch l.scope {
	case scopeConnection:
		return fmt.Sprintf("session rejected: this connection has reached its limit of %s; end one of its sessions and try again", countSessions(l.limit))
	case scopeIP:
		return fmt.Sprintf("session rejected: your address has reached its limit of %s per client address; end one of your sessions and try again", countSessions(l.limit))
	default:
		return fmt.Sprintf("session rejected: the server has reached its limit of %s; try again later", countSessions(l.limit))
	}
}

// countSessions returns "1 session" or "n sessions".
func countSessions(n int) string {
	if n == 1 {
		return "1 session"
	}
	return fmt.Sprintf("%d sessions", n)
}

const (
	scopeConnection = "per connection"
	scopeIP         = "per client address"
	scopeServer     = "on this server"
)

// acquire counts a new session from ip on connection, or returns the limit
// it would go over, checking the narrowest scope first. Call release when
// the session ends; calls after the first do nothing.
func (c *sessionCounts) acquire(ip netip.Addr, connection any) (release func(), rejected *limitReached) {
	c.mu.Lock()
	defer c.mu.Unlock()

	switch {
	case c.cfg.maxSessionsPerConnection > 0 && c.byConnection[connection] >= c.cfg.maxSessionsPerConnection:
		return nil, &limitReached{scope: scopeConnection, limit: c.cfg.maxSessionsPerConnection}
	case c.cfg.maxSessionsPerIP > 0 && c.byIP[ip] >= c.cfg.maxSessionsPerIP:
		return nil, &limitReached{scope: scopeIP, limit: c.cfg.maxSessionsPerIP}
	case c.cfg.maxSessions > 0 && c.total >= c.cfg.maxSessions:
		return nil, &limitReached{scope: scopeServer, limit: c.cfg.maxSessions}
	}
	c.total++
	c.byIP[ip]++
	c.byConnection[connection]++

	var once sync.Once
	return func() { once.Do(func() { c.release(ip, connection) }) }, nil
}

// release uncounts a session and drops map entries that reach zero, so
// the maps hold only clients with active sessions.
func (c *sessionCounts) release(ip netip.Addr, connection any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.byIP[ip]--; c.byIP[ip] <= 0 {
		delete(c.byIP, ip)
	}
	if c.byConnection[connection]--; c.byConnection[connection] <= 0 {
		delete(c.byConnection, connection)
	}
}

// clientIP returns the IP address of addr, with IPv4-mapped IPv6 addresses
// turned into IPv4 so that both forms count as one client. It returns the
// zero Addr when addr has no IP, which then counts as one client.
func clientIP(addr net.Addr) netip.Addr {
	if tcp, ok := addr.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(tcp.IP); ok {
			return ip.Unmap()
		}
	}
	if addr == nil {
		return netip.Addr{}
	}
	if addrPort, err := netip.ParseAddrPort(addr.String()); err == nil {
		return addrPort.Addr().Unmap()
	}
	return netip.Addr{}
}

// connectionKey returns a comparable value that is the same for every
// session of one SSH connection: the *gossh.ServerConn the SSH library
// stores in the connection's context, or else that context itself.
func connectionKey(s ssh.Session) any {
	if conn := s.Context().Value(ssh.ContextKeyConn); conn != nil {
		return conn
	}
	return unwrapSession(s).Context()
}
