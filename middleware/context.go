package middleware

import (
	"log/slog"
	"sync"

	"charm.land/ssh"
)

// sessionContext is an ssh.Context scoped to one session. It reads through
// to the connection's context but keeps its own values, so two sessions on
// one connection (OpenSSH connection sharing) do not overwrite each other's
// state.
type sessionContext struct {
	ssh.Context

	mu     sync.Mutex
	values map[any]any
}

func (c *sessionContext) Value(key any) any {
	c.mu.Lock()
	v, ok := c.values[key]
	c.mu.Unlock()
	if ok {
		return v
	}
	return c.Context.Value(key)
}

func (c *sessionContext) SetValue(key, value any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.values[key] = value
}

// scopedSession is an ssh.Session whose Context is a sessionContext.
type scopedSession struct {
	ssh.Session
	ctx *sessionContext
}

func (s *scopedSession) Context() ssh.Context { return s.ctx }

// Unwrap returns the session this one wraps.
func (s *scopedSession) Unwrap() ssh.Session { return s.Session }

// SessionContext returns s with a context of its own, wrapping s only if no
// middleware of this package has done so yet. Every middleware here calls it
// first, so each can be used alone. Custom middlewares that store
// per-session state should call it too and pass the result on. A wrapper
// around the returned session that keeps its Context counts as scoped too.
func SessionContext(s ssh.Session) ssh.Session {
	if _, ok := s.Context().(*sessionContext); ok {
		return s
	}
	return &scopedSession{
		Session: s,
		ctx:     &sessionContext{Context: s.Context(), values: map[any]any{}},
	}
}

// unwrapSession returns the innermost session under wrappers that have an
// Unwrap method, which is the session the SSH library created.
func unwrapSession(s ssh.Session) ssh.Session {
	for {
		u, ok := s.(interface{ Unwrap() ssh.Session })
		if !ok {
			return s
		}
		s = u.Unwrap()
	}
}

type contextKey struct{ name string }

var (
	sessionIDKey = &contextKey{"throwawaysh-session-id"}
	loggerKey    = &contextKey{"throwawaysh-logger"}
	guestKey     = &contextKey{"throwawaysh-guest"}
	resultKey    = &contextKey{"throwawaysh-result"}
)

// SessionID returns the id that Logging gave the session, or "" when
// Logging is not in the chain.
func SessionID(ctx ssh.Context) string {
	id, _ := ctx.Value(sessionIDKey).(string)
	return id
}

// Logger returns the session's logger, set by Logging with the session id,
// user and remote address attached. Without Logging it returns a logger
// that discards everything.
func Logger(ctx ssh.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey).(*slog.Logger); ok {
		return l
	}
	return discardLogger
}

var discardLogger = slog.New(slog.DiscardHandler)

// warnAfterVM logs an error when the middleware named name runs after VM,
// with consequence, the part of its job that the order breaks.
func warnAfterVM(s ssh.Session, name, consequence string) {
	if _, ok := GuestFrom(s.Context()); ok {
		Logger(s.Context()).Error("misconfigured chain: "+name+" runs after VM, so "+consequence+"; list it after VM in the chain, since the last one listed runs first", "middleware", name)
	}
}
