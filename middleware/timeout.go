package middleware

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"
	gossh "golang.org/x/crypto/ssh"
)

// defaultTimeoutGrace is how long a session whose VM a timeout killed may
// take to send its status itself. After it, the Timeout middleware sends
// ExitTimeout and closes the channel, which ends writes that wait for a
// client that stopped reading.
const defaultTimeoutGrace = 5 * time.Second

// TimeoutOption configures the Timeout middleware.
type TimeoutOption func(*timeoutConfig)

type timeoutConfig struct {
	session time.Duration
	idle    time.Duration
	// grace is defaultTimeoutGrace unless a test shortens it.
	grace time.Duration
}

// WithSessionTimeout sets the maximum wall-clock time a session may run,
// counted from the moment its VM has started. Zero or less means no limit,
// the default.
func WithSessionTimeout(d time.Duration) TimeoutOption {
	return func(c *timeoutConfig) { c.session = max(d, 0) }
}

// WithIdleTimeout sets how long a session may go without input from the
// client and without output to the client before it is ended. Channel data
// and extended data (stderr) count as input and output; window changes,
// signals and keepalives do not. Zero or less means no limit, the default.
func WithIdleTimeout(d time.Duration) TimeoutOption {
	return func(c *timeoutConfig) { c.idle = max(d, 0) }
}

// Timeout returns a middleware that ends a session that runs longer than
// the session timeout or is idle longer than the idle timeout. It kills the
// session's VM, and the client gets one line on stderr that starts with
// "throwawaysh:" and names the timeout, and exit status ExitTimeout in
// place of the killed VM's status. This works in console, PTY and SFTP
// sessions.
//
// Timeout must run after VM and before Route. In wish.WithMiddleware, list
// it between Route and VM. Route sends the session's status
// and finds the timeout in the session context. With neither timeout set,
// Timeout only calls the next handler.
func Timeout(opts ...TimeoutOption) wish.Middleware {
	cfg := timeoutConfig{grace: defaultTimeoutGrace}
	for _, opt := range opts {
		opt(&cfg)
	}

	return func(next ssh.Handler) ssh.Handler {
		if cfg.session == 0 && cfg.idle == 0 {
			return next
		}
		return func(s ssh.Session) {
			s = SessionContext(s)
			ctx := s.Context()
			guest, ok := GuestFrom(ctx)
			if !ok {
				fail(s, ExitVMFailed, errors.New("timeout: no VM in the session context; put the VM middleware before Timeout"),
					"the server is misconfigured; tell the operator")
				return
			}

			watch := &timeoutWatch{cfg: cfg, start: time.Now()}
			ctx.SetValue(timeoutKey, watch)
			done := make(chan struct{})
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				watch.run(s, guest, done)
			}()
			defer func() {
				close(done)
				<-stopped
			}()

			next(&activitySession{Session: s, watch: watch})
		}
	}
}

var timeoutKey = &contextKey{"throwawaysh-timeout"}

// timeoutExpiry is a timeout that ended a session.
type timeoutExpiry struct {
	err     error
	message string // for the client, after "throwawaysh: "
}

// timeoutWatch tracks one session's age and activity and ends the session
// when a timeout passes.
type timeoutWatch struct {
	cfg   timeoutConfig
	start time.Time
	// lastActivity is the time of the last input or output, as the
	// monotonic duration since start in nanoseconds.
	lastActivity atomic.Int64

	mu      sync.Mutex
	expired *timeoutExpiry
	// ended is set once the session's status is being sent, by finish or
	// fail in Route or by the watch itself after cfg.grace.
	ended bool
}

// noteActivity records input or output now.
func (w *timeoutWatch) noteActivity() {
	w.lastActivity.Store(int64(time.Since(w.start)))
}

// idleFor returns the time since the last input or output, or since the
// start when there was none.
func (w *timeoutWatch) idleFor() time.Duration {
	return time.Since(w.start) - time.Duration(w.lastActivity.Load())
}

// claimEnd marks the session's status as being sent, and returns the
// expiry of a timeout that fired before. ok is false when the status was
// sent already.
func (w *timeoutWatch) claimEnd() (expired *timeoutExpiry, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return nil, false
	}
	w.ended = true
	return w.expired, true
}

// expire records e unless the session's status is being sent already, and
// reports whether it did.
func (w *timeoutWatch) expire(e *timeoutExpiry) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return false
	}
	w.expired = e
	return true
}

// run waits for a timeout, until done is closed or the client goes away.
// When one fires it kills the VM, which makes Route end the session, and
// ends the session itself if Route has not done so within w.cfg.grace.
func (w *timeoutWatch) run(s ssh.Session, guest *Guest, done <-chan struct{}) {
	ctx := s.Context()
	logger := Logger(ctx)

	var sessionExpired <-chan time.Time
	if w.cfg.session > 0 {
		timer := time.NewTimer(w.cfg.session)
		defer timer.Stop()
		sessionExpired = timer.C
	}
	var idleTimer *time.Timer
	var idleCheck <-chan time.Time
	if w.cfg.idle > 0 {
		idleTimer = time.NewTimer(w.cfg.idle)
		defer idleTimer.Stop()
		idleCheck = idleTimer.C
	}

	var expiry *timeoutExpiry
	for expiry == nil {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-sessionExpired:
			expiry = &timeoutExpiry{
				err:     fmt.Errorf("session timeout: the session ran for %s", w.cfg.session),
				message: fmt.Sprintf("the session reached its time limit of %s and was ended", formatDuration(w.cfg.session)),
			}
		case <-idleCheck:
			// Activity moves the deadline without touching the timer,
			// so the timer fires at the old deadline and is set again
			// for the rest of the new one.
			if idle := w.idleFor(); idle < w.cfg.idle {
				idleTimer.Reset(w.cfg.idle - idle)
				continue
			}
			expiry = &timeoutExpiry{
				err:     fmt.Errorf("idle timeout: no input or output for %s", w.cfg.idle),
				message: fmt.Sprintf("the session had no input or output for %s and was ended", formatDuration(w.cfg.idle)),
			}
		}
	}

	if !w.expire(expiry) {
		return
	}
	logger.Info("session timed out; killing vm", "err", expiry.err)
	if err := guest.killVM(); err != nil {
		logger.Error("kill vm after timeout", "err", err)
	}

	grace := time.NewTimer(w.cfg.grace)
	defer grace.Stop()
	select {
	case <-done:
	case <-ctx.Done():
	case <-grace.C:
		if _, ok := w.claimEnd(); !ok {
			return
		}
		// NOTE: the client gets no message on this path. The write
		// that holds Route up most likely waits for a client that
		// stopped reading, and a message would wait behind it. The
		// exit status is a request, which needs no channel window.
		logger.Info("session did not end after its vm was killed; closing the channel", "grace", w.cfg.grace)
		sendResult(s, Result{Status: ExitTimeout, Err: expiry.err})
	}

	// A client that reads nothing, not even the close, keeps Route's
	// write, and so the session and its limit counts, forever unless
	// keepalives catch it. Closing its connection ends that write.
	grace.Reset(w.cfg.grace)
	select {
	case <-done:
	case <-ctx.Done():
	case <-grace.C:
		if conn, ok := ctx.Value(ssh.ContextKeyConn).(gossh.Conn); ok {
			logger.Warn("client reads nothing after its session was closed; closing its connection", "grace", w.cfg.grace)
			_ = conn.Close()
		}
	}
}

// formatDuration writes d without zero minutes and seconds after a whole
// hour or minute: "1h", "15m", "1m30s", "1.5s".
func formatDuration(d time.Duration) string {
	text := d.String()
	if strings.HasSuffix(text, "m0s") {
		text = strings.TrimSuffix(text, "0s")
	}
	if strings.HasSuffix(text, "h0m") {
		text = strings.TrimSuffix(text, "0m")
	}
	return text
}

// activitySession is a session whose input and output reset its idle
// timer. It keeps the wrapped session's context.
type activitySession struct {
	ssh.Session
	watch *timeoutWatch
}

// Unwrap returns the session this one wraps.
func (s *activitySession) Unwrap() ssh.Session { return s.Session }

func (s *activitySession) Read(p []byte) (int, error) {
	n, err := s.Session.Read(p)
	if n > 0 {
		s.watch.noteActivity()
	}
	return n, err
}

func (s *activitySession) Write(p []byte) (int, error) {
	n, err := s.Session.Write(p)
	if n > 0 {
		s.watch.noteActivity()
	}
	return n, err
}

func (s *activitySession) Stderr() io.ReadWriter {
	return &activityStream{ReadWriter: s.Session.Stderr(), watch: s.watch}
}

// activityStream is a session's stderr whose writes reset its idle timer.
type activityStream struct {
	io.ReadWriter
	watch *timeoutWatch
}

func (s *activityStream) Write(p []byte) (int, error) {
	n, err := s.ReadWriter.Write(p)
	if n > 0 {
		s.watch.noteActivity()
	}
	return n, err
}
