package middleware

import (
	"errors"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"charm.land/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// DefaultAcceptEnv lists the environment variables that FilterRequests
// passes to the guest by default, as OpenSSH's sshd_config AcceptEnv
// usually does: locale and time zone, and COLORTERM for terminal colours.
// Treat it as read-only and extend a copy, as in
// append(slices.Clone(DefaultAcceptEnv), "EDITOR"). FilterRequests copies
// its list when it is called, so a later change reaches no running server.
var DefaultAcceptEnv = []string{"LANG", "LC_*", "TZ", "COLORTERM"}

// Limits on the env requests of one session, so a client cannot make the
// server hold or the guest receive unbounded data through them.
const (
	maxEnvVars      = 64
	maxEnvNameBytes = 256
	// maxEnvEntryBytes matches the guest agent's limit on one "NAME=value".
	maxEnvEntryBytes = 4 << 10
)

// FilterRequests returns a server option that checks each session
// channel's requests before the SSH library handles them, because the
// library accepts every env request and agent forwarding request itself.
//
//   - env: accepted only for names that match one of acceptEnv, which
//     holds shell patterns such as "LC_*" (nil means DefaultAcceptEnv).
//     Names starting with "LD_" and values over the size limits are
//     never accepted. Others get a
//     failure reply and are not set, as with OpenSSH's AcceptEnv.
//   - auth-agent-req@openssh.com and x11-req: rejected, because the guest
//     has no way to reach the client's agent or X server.
//   - exec and subsystem: rejected when the payload is not one SSH string,
//     which the SSH library would read as an empty command.
//   - signal: dropped before a shell, command or subsystem has started,
//     as sshd drops it, with a failure reply when the client wants one.
//     Later ones go on to the session, and one that wants a reply gets
//     success here, because the SSH library sends no reply and a client
//     that waits for one would hang.
//
// It replaces the server's "session" channel handler, so install it after
// any option that sets its own. A nil logger discards.
func FilterRequests(acceptEnv []string, logger *slog.Logger) ssh.Option {
	if acceptEnv == nil {
		acceptEnv = DefaultAcceptEnv
	}
	acceptEnv = slices.Clone(acceptEnv)
	if logger == nil {
		logger = discardLogger
	}
	filter := &requestFilter{acceptEnv: acceptEnv, logger: logger}
	return func(srv *ssh.Server) error {
		next := sessionChannelHandler(srv)
		srv.ChannelHandlers["session"] = func(srv *ssh.Server, conn *gossh.ServerConn, newChan gossh.NewChannel, ctx ssh.Context) {
			next(srv, conn, &filteredChannel{NewChannel: newChan, filter: filter, remote: conn.RemoteAddr().String()}, ctx)
		}
		return nil
	}
}

type requestFilter struct {
	acceptEnv []string
	logger    *slog.Logger
}

// filteredChannel is a session channel whose requests pass through a
// requestFilter on their way to the SSH library.
type filteredChannel struct {
	gossh.NewChannel
	filter *requestFilter
	remote string
}

// ErrEndOfWrite is the error of a write to a session channel after the
// client sent eow@openssh.com: it reads no more output, for example
// because its stdout went to `head`, which has exited. Route then closes
// the command's stdout, so its next write fails as under sshd.
var ErrEndOfWrite = errors.New("middleware: the client reads no more output (eow@openssh.com)")

// eowChannel is a session channel whose Write fails with ErrEndOfWrite once
// the client has sent eow@openssh.com.
type eowChannel struct {
	gossh.Channel
	once sync.Once
	eow  chan struct{}
}

func (c *eowChannel) endOfWrite() { c.once.Do(func() { close(c.eow) }) }

func (c *eowChannel) Write(p []byte) (int, error) {
	select {
	case <-c.eow:
		return 0, ErrEndOfWrite
	default:
		return c.Channel.Write(p)
	}
}

func (c *filteredChannel) Accept() (gossh.Channel, <-chan *gossh.Request, error) {
	accepted, requests, err := c.NewChannel.Accept()
	if err != nil {
		return accepted, requests, err
	}
	channel := &eowChannel{Channel: accepted, eow: make(chan struct{})}
	passed := make(chan *gossh.Request)
	go func() {
		defer close(passed)
		envCount := 0
		started := false
		for req := range requests {
			if req.Type == "eow@openssh.com" {
				// OpenSSH's client sends it without want reply when
				// writing its output failed.
				channel.endOfWrite()
				if req.WantReply {
					_ = req.Reply(true, nil)
				}
				continue
			}
			if reason := c.filter.reject(req, &envCount, started); reason != "" {
				// Debug, because a client can send requests without limit.
				c.filter.logger.Debug("session request rejected", "type", req.Type, "reason", reason, "remote", c.remote)
				if req.WantReply {
					_ = req.Reply(false, nil)
				}
				continue
			}
			if req.Type == "signal" && req.WantReply {
				_ = req.Reply(true, nil)
				// The library must not reply to it a second time.
				copied := *req
				copied.WantReply = false
				req = &copied
			}
			if req.Type == "shell" || req.Type == "exec" || req.Type == "subsystem" {
				started = true
			}
			passed <- req
		}
	}()
	return channel, passed, nil
}

// reject returns why req must be refused, or "" to pass it on. started
// reports whether a shell, exec or subsystem request has passed already.
func (f *requestFilter) reject(req *gossh.Request, envCount *int, started bool) string {
	switch req.Type {
	case "signal":
		if !started {
			// As sshd does: no process exists to signal yet.
			return "no command started yet"
		}
	case "auth-agent-req@openssh.com":
		return "agent forwarding is not supported"
	case "x11-req":
		return "X11 forwarding is not supported"
	case "exec", "subsystem":
		// The SSH library reads a malformed payload as an empty command,
		// which would start a shell; sshd treats it as an error.
		var text struct{ Value string }
		if err := gossh.Unmarshal(req.Payload, &text); err != nil {
			return "malformed " + req.Type + " request"
		}
	case "env":
		var kv struct{ Name, Value string }
		if err := gossh.Unmarshal(req.Payload, &kv); err != nil {
			return "malformed env request"
		}
		if reason := f.rejectEnv(kv.Name, kv.Value); reason != "" {
			return reason
		}
		*envCount++
		if *envCount > maxEnvVars {
			return "too many env requests"
		}
	}
	return ""
}

func (f *requestFilter) rejectEnv(name, value string) string {
	switch {
	case name == "" || len(name) > maxEnvNameBytes:
		return "env name empty or too long"
	case strings.ContainsAny(name, "=\x00") || strings.Contains(value, "\x00"):
		return "env name or value with '=' or NUL"
	case !utf8.ValidString(name) || !utf8.ValidString(value):
		// The guest agent protocol carries text as JSON, which holds only
		// valid UTF-8.
		return "env name or value not valid UTF-8"
	case len(name)+1+len(value) > maxEnvEntryBytes:
		return "env value too long"
	case strings.HasPrefix(name, "LD_"):
		return "env " + name + " is never accepted"
	}
	for _, pattern := range f.acceptEnv {
		if ok, _ := path.Match(pattern, name); ok {
			return ""
		}
	}
	return "env " + name + " is not accepted"
}

// sessionChannelHandler returns the server's current "session" channel
// handler, for an option that wraps it, after filling srv.ChannelHandlers
// with the SSH library's defaults if no option has set it yet.
func sessionChannelHandler(srv *ssh.Server) ssh.ChannelHandler {
	if srv.ChannelHandlers == nil {
		srv.ChannelHandlers = map[string]ssh.ChannelHandler{}
		for name, handler := range ssh.DefaultChannelHandlers {
			srv.ChannelHandlers[name] = handler
		}
	}
	if next := srv.ChannelHandlers["session"]; next != nil {
		return next
	}
	return ssh.DefaultSessionHandler
}
