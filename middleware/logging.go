package middleware

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"
)

// Logging returns a middleware that gives each session an id and a logger
// carrying session, user and remote, and key (see KeyFingerprint) when the
// client authenticated with a public key. It logs "session start",
// "session end" and "session phases", which has the duration of each
// phase the session went through (see PhaseAuthenticated and the
// constants after it). Each phase also gets a "session phase" line at
// debug level. Other middlewares find the logger with Logger. List it
// last in wish.WithMiddleware so it runs first and wraps everything else.
// A nil logger discards.
func Logging(logger *slog.Logger) wish.Middleware {
	if logger == nil {
		logger = discardLogger
	}
	return func(next ssh.Handler) ssh.Handler {
		return func(s ssh.Session) {
			s = SessionContext(s)
			ctx := s.Context()
			if _, ok := GuestFrom(ctx); ok {
				logger.Error("misconfigured chain: Logging runs after VM, so the VM's log lines are lost; list Logging after VM in the chain, since the last one listed runs first")
			}
			phases := sessionPhasesOf(s)

			id := newSessionID()
			fields := []any{
				"session", id,
				"user", logSafe(s.User()),
				"remote", s.RemoteAddr().String(),
			}
			if fingerprint := KeyFingerprint(ctx); fingerprint != "" {
				fields = append(fields, "key", fingerprint)
			}
			sessionLogger := logger.With(fields...)
			ctx.SetValue(sessionIDKey, id)
			ctx.SetValue(loggerKey, sessionLogger)

			start := time.Now()
			attrs := []any{
				"mode", ModeOf(s).String(),
				"command_bytes", len(s.RawCommand()),
				"client", ctx.ClientVersion(),
			}
			if req, ok := PTYRequest(s); ok {
				attrs = append(attrs, "term", logSafe(req.Term), "cols", req.Window.Width, "rows", req.Window.Height)
			}
			sessionLogger.Info("session start", attrs...)
			phases.logAuthenticated()

			next(s)

			end := []any{"duration", time.Since(start)}
			if r, ok := SessionResult(ctx); ok {
				end = append(end, "status", r.Status)
				if r.Signal != "" {
					end = append(end, "signal", r.Signal)
				}
				if r.Err != nil {
					end = append(end, "err", r.Err)
				}
				if r.ClientGone {
					end = append(end, "client_gone", true)
				}
			}
			sessionLogger.Info("session end", end...)
			sessionLogger.Info("session phases", phases.summary()...)
		}
	}
}

// newSessionID returns 8 random bytes in hex: short enough to read in logs,
// long enough not to collide among a server's sessions.
func newSessionID() string {
	var b [8]byte
	// crypto/rand.Read panics rather than return an error since Go 1.24.
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
