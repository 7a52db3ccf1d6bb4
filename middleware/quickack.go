package middleware

import (
	"net"
	"syscall"

	"charm.land/ssh"
)

// quickAckBelow is the read size under which QuickAck acknowledges at
// once. Bulk data mostly arrives in reads of at least this size, which
// then need no extra system call.
const quickAckBelow = 4096

// QuickAck makes the server acknowledge small TCP reads at once instead
// of after the kernel's delayed-acknowledgement timer (up to 40 ms on
// Linux).
//
// OpenSSH clients leave Nagle's algorithm on for sessions without a
// terminal. When one sends two small packets in a row, such as its key
// exchange init and the key exchange message after it, the second waits
// until the first is acknowledged. The server sends nothing back for the
// first, so without QuickAck the second waits for the delayed
// acknowledgement: up to 40 ms, once or twice per connection.
//
// It wraps the server's ConnCallback and finds the TCP connection through
// wrappers that have a NetConn method, as this package's have. Apply it
// before options of other packages that wrap the connection without one,
// and after options that set ConnCallback without wrapping the previous
// one. On systems other than Linux it does nothing.
func QuickAck() ssh.Option {
	return func(srv *ssh.Server) error {
		previous := srv.ConnCallback
		srv.ConnCallback = func(ctx ssh.Context, conn net.Conn) net.Conn {
			if previous != nil {
				conn = previous(ctx, conn)
				if conn == nil {
					return nil
				}
			}
			raw, ok := underlyingSyscallConn(conn)
			if !ok {
				return conn
			}
			return &quickAckConn{Conn: conn, raw: raw}
		}
		return nil
	}
}

// underlyingSyscallConn returns the raw connection of conn's TCP
// connection, looking through wrappers that expose it with NetConn, as
// tls.Conn does.
func underlyingSyscallConn(conn net.Conn) (syscall.RawConn, bool) {
	for range 16 {
		switch c := conn.(type) {
		case *net.TCPConn:
			raw, err := c.SyscallConn()
			return raw, err == nil
		case interface{ NetConn() net.Conn }:
			conn = c.NetConn()
		default:
			return nil, false
		}
	}
	return nil, false
}

type quickAckConn struct {
	net.Conn
	raw syscall.RawConn
}

func (c *quickAckConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && n < quickAckBelow {
		// The kernel turns delayed acknowledgements back on by itself,
		// so the option is set after every small read. A failure only
		// costs the delay.
		_ = c.raw.Control(func(fd uintptr) { setQuickAck(int(fd)) })
	}
	return n, err
}

// NetConn returns the wrapped connection.
func (c *quickAckConn) NetConn() net.Conn { return c.Conn }
