package middleware

import (
	"context"
	"net"
	"sync"
	"time"

	"charm.land/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// Phases of a session, in the order they end. Each phase's duration runs
// from the end of the phase before it that took place, so a session that
// never booted a VM has only "command exited" after "authenticated".
const (
	// PhaseAuthenticated ends when authentication succeeds. It starts
	// when the server accepted the TCP connection and is known only with
	// the TimeConnections server option.
	PhaseAuthenticated = "authenticated"
	// PhaseVMStarted ends when the VM's host process has started. It
	// starts with the session's shell, exec or subsystem request.
	PhaseVMStarted = "vm started"
	// PhaseGuestReady ends when the guest agent connected or, for a
	// console session, the first console byte arrived, whichever is first.
	PhaseGuestReady = "guest ready"
	// PhaseCommandExited ends when the exit status went to the client.
	PhaseCommandExited = "command exited"
	// PhaseTornDown ends when the VM has been killed and reaped and the
	// session's files are removed.
	PhaseTornDown = "torn down"
)

// phaseOrder lists the phases in the order they end, with the key each
// has in the "session phases" log line.
var phaseOrder = []struct{ name, key string }{
	{PhaseAuthenticated, "authenticated"},
	{PhaseVMStarted, "vm_started"},
	{PhaseGuestReady, "guest_ready"},
	{PhaseCommandExited, "command_exited"},
	{PhaseTornDown, "torn_down"},
}

var (
	phasesKey          = &contextKey{"throwawaysh-phases"}
	connectionTimesKey = &contextKey{"throwawaysh-connection-times"}
)

// connectionTimes are the accept and authentication times of one
// connection, set by TimeConnections.
type connectionTimes struct {
	accepted time.Time

	mu            sync.Mutex
	authenticated time.Time
}

func (c *connectionTimes) authenticatedAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.authenticated
}

// TimeConnections returns a server option that records when each
// connection was accepted and when its authentication succeeded, so that
// Logging can log the "authenticated" phase of its sessions. It wraps the
// ConnCallback and ServerConfigCallback that earlier options set; list it
// before LimitStartups.
func TimeConnections() ssh.Option {
	return func(srv *ssh.Server) error {
		previousConn := srv.ConnCallback
		srv.ConnCallback = func(ctx ssh.Context, conn net.Conn) net.Conn {
			ctx.SetValue(connectionTimesKey, &connectionTimes{accepted: time.Now()})
			if previousConn != nil {
				return previousConn(ctx, conn)
			}
			return conn
		}

		previousConfig := srv.ServerConfigCallback
		srv.ServerConfigCallback = func(ctx ssh.Context) *gossh.ServerConfig {
			config := &gossh.ServerConfig{}
			if previousConfig != nil {
				config = previousConfig(ctx)
			}
			previousLog := config.AuthLogCallback
			// x/crypto/ssh passes a nil error only for the attempt that
			// completes authentication.
			config.AuthLogCallback = func(meta gossh.ConnMetadata, method string, err error) {
				if previousLog != nil {
					previousLog(meta, method, err)
				}
				if err != nil {
					return
				}
				if times, ok := ctx.Value(connectionTimesKey).(*connectionTimes); ok {
					times.mu.Lock()
					times.authenticated = time.Now()
					times.mu.Unlock()
				}
			}
			return config
		}
		return nil
	}
}

// sessionPhases records when each phase of one session ended, and passes
// the events on to the session's Metrics. Logging or Metrics creates it,
// and VM, Route and the exit path mark the phases through the observe
// functions below.
type sessionPhases struct {
	// ctx is the session's context, where the current logger is found.
	ctx     ssh.Context
	metrics *Metrics
	mode    Mode
	// start is when the session's request arrived.
	start time.Time

	mu sync.Mutex
	// ended maps a phase name to the time it ended.
	ended map[string]time.Time
	// launched is when the launcher began to start the VM.
	launched time.Time
	// vmAlive is true from the VM's start until it has been reaped.
	vmAlive bool
	// vmCounted is the Metrics that counted the VM's start. It is nil when
	// a Metrics middleware that runs after VM set metrics later.
	vmCounted *Metrics
}

// sessionPhasesOf returns the phase record of session s, and creates it,
// starting now, when s has none yet. Logging and Metrics call it first,
// so each works without the other. s must be scoped (see SessionContext).
func sessionPhasesOf(s ssh.Session) *sessionPhases {
	ctx := s.Context()
	if p := phasesFrom(ctx); p != nil {
		return p
	}
	p := &sessionPhases{ctx: ctx, mode: ModeOf(s), start: time.Now(), ended: map[string]time.Time{}}
	if times, ok := ctx.Value(connectionTimesKey).(*connectionTimes); ok {
		if at := times.authenticatedAt(); !at.IsZero() {
			p.ended[acceptedEvent] = times.accepted
			p.ended[PhaseAuthenticated] = at
		}
	}
	ctx.SetValue(phasesKey, p)
	return p
}

// acceptedEvent is the key in sessionPhases.ended of the time the
// connection was accepted, which starts PhaseAuthenticated.
const acceptedEvent = "accepted"

// logAuthenticated logs the duration of PhaseAuthenticated at debug level,
// when it is known. Logging calls it once it has set the session logger.
func (p *sessionPhases) logAuthenticated() {
	p.mu.Lock()
	accepted, authenticated := p.ended[acceptedEvent], p.ended[PhaseAuthenticated]
	p.mu.Unlock()
	if !authenticated.IsZero() {
		Logger(p.ctx).Debug("session phase", "phase", PhaseAuthenticated, "duration", authenticated.Sub(accepted))
	}
}

// phasesFrom returns the session's phase record, or nil when neither
// Logging nor Metrics runs.
// ctx may be the session's context or one derived from it.
func phasesFrom(ctx context.Context) *sessionPhases {
	p, _ := ctx.Value(phasesKey).(*sessionPhases)
	return p
}

// mark records that phase ended now, once, logs its duration at debug
// level and returns the duration and whether this call was the first.
func (p *sessionPhases) mark(phase string) (time.Duration, bool) {
	now := time.Now()
	p.mu.Lock()
	if _, done := p.ended[phase]; done {
		p.mu.Unlock()
		return 0, false
	}
	previous := p.start
	for _, ph := range phaseOrder {
		if ph.name == phase {
			break
		}
		if at, ok := p.ended[ph.name]; ok && ph.name != PhaseAuthenticated {
			previous = at
		}
	}
	p.ended[phase] = now
	p.mu.Unlock()

	duration := now.Sub(previous)
	Logger(p.ctx).Debug("session phase", "phase", phase, "duration", duration)
	return duration, true
}

// summary returns the attributes of the "session phases" line: the
// duration of each phase that took place, and the total from the
// session's request to the end of its last phase. The total leaves out
// authentication, because a shared connection authenticates only once.
func (p *sessionPhases) summary() []any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var attrs []any
	previous := p.start
	last := p.start
	for _, ph := range phaseOrder {
		at, ok := p.ended[ph.name]
		if !ok {
			continue
		}
		if ph.name == PhaseAuthenticated {
			attrs = append(attrs, ph.key, at.Sub(p.ended[acceptedEvent]))
			continue
		}
		attrs = append(attrs, ph.key, at.Sub(previous))
		previous, last = at, at
	}
	return append(attrs, "total", last.Sub(p.start))
}

// observeVMStarted records that the session's VM process started after
// the launcher took launch to start it.
func observeVMStarted(ctx ssh.Context, launch time.Duration) {
	p := phasesFrom(ctx)
	if p == nil {
		return
	}
	if _, first := p.mark(PhaseVMStarted); !first {
		return
	}
	p.mu.Lock()
	p.launched = p.ended[PhaseVMStarted].Add(-launch)
	p.vmAlive = true
	metrics := p.metrics
	p.vmCounted = metrics
	p.mu.Unlock()
	metrics.vmStarted()
}

// observeGuestReady records that the session's guest is ready. Only the
// first call per session counts.
func observeGuestReady(ctx context.Context) {
	p := phasesFrom(ctx)
	if p == nil {
		return
	}
	if _, first := p.mark(PhaseGuestReady); !first {
		return
	}
	p.mu.Lock()
	ready := p.ended[PhaseGuestReady]
	launched := p.launched
	metrics := p.metrics
	p.mu.Unlock()
	if !launched.IsZero() {
		metrics.observeBoot(ready.Sub(launched))
	}
	metrics.observeTimeToShell(ready.Sub(p.start))
}

// observeCommandExited records that the session's exit status was sent.
func observeCommandExited(ctx ssh.Context) {
	if p := phasesFrom(ctx); p != nil {
		p.mark(PhaseCommandExited)
	}
}

// observeTornDown records that the session's VM is gone and its files are
// removed.
func observeTornDown(ctx ssh.Context) {
	p := phasesFrom(ctx)
	if p == nil {
		return
	}
	p.mark(PhaseTornDown)
	p.mu.Lock()
	wasAlive := p.vmAlive
	p.vmAlive = false
	metrics := p.vmCounted
	p.mu.Unlock()
	if wasAlive {
		metrics.vmStopped()
	}
}

// observeRejected records that a session limit of scope rejected the
// session.
func observeRejected(ctx ssh.Context, scope string) {
	p := phasesFrom(ctx)
	if p == nil {
		return
	}
	p.mu.Lock()
	metrics := p.metrics
	p.mu.Unlock()
	metrics.rejected(scope)
}
