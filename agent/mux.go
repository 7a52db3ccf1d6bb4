package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// Timeouts shared by both sides.
const (
	// handshakeTimeout bounds each side's wait for the peer's hello, and
	// the agent's wait for the control stream and for attach lines.
	handshakeTimeout = 10 * time.Second
	// controlWriteTimeout bounds one write to the control stream. The peer
	// reads that stream all the time, so a write that waits this long means
	// the peer is stuck, and the connection is given up.
	controlWriteTimeout = 10 * time.Second
)

// streamWindowSize is every stream's receive window, yamux's minimum. It is
// also the most data that a receiver buffers for one stream.
const streamWindowSize = 256 << 10

// newMuxConfig returns the yamux configuration of both sides. The protocol
// description in this package's doc comment gives the reasons.
func newMuxConfig(logger *slog.Logger, acceptBacklog int) *yamux.Config {
	return &yamux.Config{
		AcceptBacklog:   acceptBacklog,
		EnableKeepAlive: false,
		// yamux rejects a zero interval even with keepalive off.
		KeepAliveInterval: 30 * time.Second,
		// A stream write whose frame waits this long for the connection
		// fails. yamux v0.1.2 leaves the session open then, with its
		// sending goroutine blocked on the connection, so both sides also
		// wrap the connection in a writeTimeoutConn, which ends the
		// session sooner.
		ConnectionWriteTimeout: 30 * time.Second,
		// 256 KiB is yamux's minimum, which is plenty for terminal data.
		MaxStreamWindowSize: streamWindowSize,
		// An unanswered stream open closes the session after this long.
		StreamOpenTimeout: 30 * time.Second,
		// Zero keeps a half-closed stream readable for as long as the peer
		// writes. The default (5 minutes) would reset a data stream whose
		// input the host closed while the process still prints.
		StreamCloseTimeout: 0,
		Logger:             newMuxLogger(logger),
	}
}

// muxLogger passes yamux's log lines to slog. yamux marks the level with a
// "[ERR]" or "[WARN]" prefix. A peer can trigger many of these lines, so at
// most muxLogBurst lines are logged per minute and the rest are counted.
type muxLogger struct {
	logger  *slog.Logger
	limiter *logLimiter
}

const muxLogBurst = 20

func newMuxLogger(logger *slog.Logger) *muxLogger {
	return &muxLogger{logger: logger, limiter: newLogLimiter(muxLogBurst, time.Minute)}
}

func (l *muxLogger) Print(v ...any)                 { l.log(fmt.Sprint(v...)) }
func (l *muxLogger) Printf(format string, v ...any) { l.log(fmt.Sprintf(format, v...)) }
func (l *muxLogger) Println(v ...any)               { l.log(fmt.Sprintln(v...)) }

func (l *muxLogger) log(line string) {
	line = strings.TrimSpace(line)
	level := slog.LevelInfo
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelError
		line = strings.TrimSpace(strings.TrimPrefix(line, "[ERR]"))
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
		line = strings.TrimSpace(strings.TrimPrefix(line, "[WARN]"))
	}
	allowed, suppressed := l.limiter.allow()
	if !allowed {
		return
	}
	attrs := []any{"detail", line}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	l.logger.Log(context.Background(), level, "yamux", attrs...)
}

// logLimiter allows at most burst events per period and counts the rest.
type logLimiter struct {
	burst  int
	period time.Duration

	mu         sync.Mutex
	start      time.Time
	count      int
	suppressed int
}

func newLogLimiter(burst int, period time.Duration) *logLimiter {
	return &logLimiter{burst: burst, period: period}
}

// allow reports whether the event may be logged, and how many events were
// dropped since the last one allowed.
func (l *logLimiter) allow() (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.start) >= l.period {
		l.start = now
		l.count = 0
	}
	if l.count >= l.burst {
		l.suppressed++
		return false, 0
	}
	l.count++
	suppressed = l.suppressed
	l.suppressed = 0
	return true, suppressed
}

// discardLogger returns logger, or a logger that drops everything when
// logger is nil.
func discardLogger(logger *slog.Logger) *slog.Logger {
	if logger != nil {
		return logger
	}
	return slog.New(slog.DiscardHandler)
}

// writeTimeoutConn fails every write to the connection that takes longer
// than timeout. yamux writes the connection from one goroutine and ends
// the session when a write fails, so a peer that stops reading the
// connection loses it after timeout, instead of leaving every stream write
// to time out on its own while the session stays open.
type writeTimeoutConn struct {
	net.Conn
	timeout time.Duration

	mu       sync.Mutex
	timedOut error // the first write that timed out
}

func (c *writeTimeoutConn) Write(b []byte) (int, error) {
	// A connection without deadlines still works, only without the bound.
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	n, err := c.Conn.Write(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.mu.Lock()
		if c.timedOut == nil {
			c.timedOut = fmt.Errorf("the peer stopped reading the connection: a write waited %s: %w", c.timeout, err)
		}
		c.mu.Unlock()
	}
	return n, err
}

// timeoutErr returns the error of the first write that timed out, or nil.
func (c *writeTimeoutConn) timeoutErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.timedOut
}

// yamux frame layout, from const.go of github.com/hashicorp/yamux v0.1.2:
// a 12-byte header of version, type, flags (2 bytes), stream ID (4) and
// length (4), big-endian. Only data frames carry a payload, of length bytes.
const (
	muxHeaderSize = 12
	muxTypeData   = 0
	muxTypePing   = 2
)

// errPeerPing reports a yamux ping from the agent.
var errPeerPing = errors.New("the agent sent a yamux ping, which protocol version 1 forbids")

// pingGuard passes the agent's side of a connection through to yamux and
// fails the read when the agent sends a ping. yamux answers every ping from
// a new goroutine that can wait up to its write timeout, so a flood of
// pings could start goroutines without bound. Neither side sends pings,
// because keepalive is off, so the first one ends the connection.
type pingGuard struct {
	net.Conn

	mu      sync.Mutex
	header  [muxHeaderSize]byte
	have    int    // bytes of the current header read so far
	payload uint32 // bytes of the current data frame's payload still to come
	err     error  // set once a ping was seen
}

func (g *pingGuard) Read(b []byte) (int, error) {
	if err := g.pingErr(); err != nil {
		return 0, err
	}
	n, err := g.Conn.Read(b)
	// The frames before the ping still reach yamux. The next Read fails.
	if before, ping := g.inspect(b[:n]); ping {
		if before == 0 {
			return 0, g.pingErr()
		}
		return before, nil
	}
	return n, err
}

// inspect follows the frame boundaries through data. When a ping header
// starts in data, it records errPeerPing and returns the number of bytes
// before that header.
func (g *pingGuard) inspect(data []byte) (before int, ping bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	offset := 0
	for offset < len(data) {
		if g.payload > 0 {
			skip := min(uint32(len(data)-offset), g.payload)
			offset += int(skip)
			g.payload -= skip
			continue
		}
		headerStart := offset - g.have
		copied := copy(g.header[g.have:], data[offset:])
		g.have += copied
		offset += copied
		if g.have < muxHeaderSize {
			break
		}
		g.have = 0
		switch g.header[1] {
		case muxTypeData:
			g.payload = binary.BigEndian.Uint32(g.header[8:12])
		case muxTypePing:
			g.err = errPeerPing
			return max(headerStart, 0), true
		}
	}
	return len(data), false
}

// pingErr returns errPeerPing once a ping was seen, and nil before.
func (g *pingGuard) pingErr() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}
