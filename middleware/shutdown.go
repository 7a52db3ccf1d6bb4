package middleware

import (
	"context"
	"fmt"
	"sync"

	"charm.land/ssh"
	"charm.land/wish/v2"
)

// stopKey stores the message of a Tracker's Shutdown in the context of a
// session it stopped.
var stopKey = &contextKey{"throwawaysh-stop"}

// stopMessage returns the message of the Shutdown that stopped the
// session, and whether one did.
func stopMessage(ctx ssh.Context) (string, bool) {
	message, ok := ctx.Value(stopKey).(string)
	return message, ok
}

// Tracker records the live sessions of a server, so that a server that
// stops can end each session with a reason the client receives. Its
// Middleware records the sessions and Shutdown ends them. Create one with
// NewTracker, because the zero value has no session map.
//
// Shutdown ends a session by killing its VM. Route then ends the session
// with the message on stderr and exit status ExitShutdown, so the
// Middleware must run before VM, which must run before Route:
//
//	wish.WithMiddleware(
//		middleware.Route(),
//		middleware.VM(launcher, middleware.WithRootfs(dir)),
//		tracker.Middleware(),
//		middleware.Logging(logger),
//	)
//
// A session counts as live until VM has killed its VM and removed its
// files, so when Shutdown returns nil no VM of the server remains.
// Connections without a session are not tracked; ssh.Server's Shutdown and
// Close end those.
type Tracker struct {
	mu       sync.Mutex
	sessions map[*trackedSession]struct{}
	// stopping is set by the first Shutdown.
	stopping bool
	// message is the message of the latest Shutdown.
	message string
}

// trackedSession is one live session and the channel that is closed when
// its handlers have returned.
type trackedSession struct {
	session ssh.Session
	done    chan struct{}
}

// NewTracker returns a Tracker without sessions.
func NewTracker() *Tracker {
	return &Tracker{sessions: map[*trackedSession]struct{}{}}
}

// Middleware returns a middleware that records each session while the
// handlers after it run. After Shutdown has begun it ends new sessions at
// once with Shutdown's message and ExitShutdown, without calling the
// handlers after it, so no VM boots for them.
func (t *Tracker) Middleware() wish.Middleware {
	return func(next ssh.Handler) ssh.Handler {
		return func(s ssh.Session) {
			s = SessionContext(s)
			warnAfterVM(s, "Tracker.Middleware", "Shutdown can return before the VM is gone")
			entry := &trackedSession{session: s, done: make(chan struct{})}

			t.mu.Lock()
			if t.stopping {
				message := t.message
				t.mu.Unlock()
				Logger(s.Context()).Info("session rejected", "reason", "server shutting down")
				s.Context().SetValue(stopKey, message)
				finish(s, Result{})
				return
			}
			t.sessions[entry] = struct{}{}
			t.mu.Unlock()

			defer func() {
				t.mu.Lock()
				delete(t.sessions, entry)
				t.mu.Unlock()
				close(entry.done)
			}()
			next(s)
		}
	}
}

// Shutdown ends every live session and waits until their handlers have
// returned, or until ctx is done. Each session's VM is killed, and the
// client gets "throwawaysh: " and message as one line on stderr, then exit
// status ExitShutdown. Sessions that start after Shutdown has begun end
// the same way at once. Shutdown returns an error that wraps ctx.Err() and
// counts the sessions left when ctx ends first. It may be called again,
// for example to wait once more after the server has closed every
// connection.
//
// A session whose command ends on its own while Shutdown runs may still
// get ExitShutdown instead of its command's status.
func (t *Tracker) Shutdown(ctx context.Context, message string) error {
	t.mu.Lock()
	t.stopping = true
	t.message = message
	live := make([]*trackedSession, 0, len(t.sessions))
	for entry := range t.sessions {
		live = append(live, entry)
	}
	t.mu.Unlock()

	for _, entry := range live {
		stopSession(entry.session, message)
	}
	for _, entry := range live {
		select {
		case <-entry.done:
		case <-ctx.Done():
			return fmt.Errorf("%d sessions still running: %w", t.Len(), ctx.Err())
		}
	}
	return nil
}

// Len returns the number of live sessions.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sessions)
}

// stopSession marks s as stopped and kills its VM, if it has one yet.
//
// The mark goes into the session context before the VM is read from it,
// and VM stores the VM there before Route reads the mark. Both go through
// the context's lock, so either Route finds the mark and ends the session
// before it starts the workload, or this function finds the VM and kills
// it.
func stopSession(s ssh.Session, message string) {
	ctx := s.Context()
	ctx.SetValue(stopKey, message)
	logger := Logger(ctx)
	logger.Info("session stop", "reason", message)

	// NOTE: tests cover console and PTY sessions. SFTP sessions end
	// through the same Route failure paths but have no test of their own.
	guest, ok := GuestFrom(ctx)
	if !ok || guest.VM == nil {
		return
	}
	if err := guest.killVM(); err != nil {
		logger.Error("kill vm for shutdown", "err", err)
	}
}
