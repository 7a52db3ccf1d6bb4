package middleware

import (
	"fmt"
	"net"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"
	"github.com/prometheus/client_golang/prometheus"
	gossh "golang.org/x/crypto/ssh"
)

// Outcomes of a session, the "outcome" label of
// throwawaysh_sessions_ended_total.
const (
	// OutcomeExited: the command (or shell) ended and its status or
	// signal went to the client, whatever the status.
	OutcomeExited = "exited"
	// OutcomeClientGone: the client's connection ended first.
	OutcomeClientGone = "client_gone"
	// OutcomeRejected: a session limit rejected the session
	// (ExitCapacity).
	OutcomeRejected = "rejected"
	// OutcomeTimeout: the session or idle timeout ended it (ExitTimeout).
	OutcomeTimeout = "timeout"
	// OutcomeShutdown: the server's shutdown ended it (ExitShutdown).
	OutcomeShutdown = "shutdown"
	// OutcomeFailed: the VM or the guest agent failed (ExitVMFailed,
	// ExitAgentLost), or the session ended with an error for another
	// reason: a settings function's error, NewUserError included, or an
	// app's EndSession.
	OutcomeFailed = "failed"
)

// Values of the "limit" label of throwawaysh_sessions_rejected_total, one
// per option of Limit, and openChannelsLabel for LimitSessionChannels.
var limitLabels = map[string]string{
	scopeConnection: "per_connection",
	scopeIP:         "per_client_address",
	scopeServer:     "server",
}

// openChannelsLabel is the "limit" label of session channels that
// LimitSessionChannels rejected, counted by CountRejectedChannels.
const openChannelsLabel = "open_channels"

// Metrics counts sessions, VM boots and failed logins for Prometheus. A
// nil *Metrics is valid and records nothing, so code can call its methods
// unconditionally. Create one with NewMetrics. Its Middleware records the
// sessions and hands the Metrics to VM, Limit and Route; CountAuthFailures
// counts the failed logins.
type Metrics struct {
	sessionsStarted *prometheus.CounterVec
	sessionsEnded   *prometheus.CounterVec
	sessionsActive  prometheus.Gauge
	vmBoot          prometheus.Histogram
	timeToShell     prometheus.Histogram
	authFailures    *prometheus.CounterVec
	sessionsLimited *prometheus.CounterVec
	connsRejected   prometheus.Counter
	vmProcesses     prometheus.Gauge
}

// bootBuckets are the histogram buckets, in seconds, of VM boot and
// time-to-shell: 10 ms doubling to about 41 s, which spans a test
// launcher's few milliseconds and a VM that nearly hit the 30 s boot
// timeout.
var bootBuckets = prometheus.ExponentialBuckets(0.01, 2, 13)

// NewMetrics creates the metrics and registers them with registerer. Pass
// a registry of your own (prometheus.NewRegistry) rather than the global
// default, so that two servers in one process do not collide. It returns
// the registration error, such as a name registered twice.
//
// The metrics, all prefixed throwawaysh_:
//
//   - sessions_started_total{mode}: sessions whose request arrived; mode
//     is console, pty or subsystem.
//   - sessions_ended_total{mode,outcome}: sessions that ended; outcome is
//     one of the Outcome constants.
//   - sessions_active: sessions started and not yet ended.
//   - vm_boot_seconds: from the launcher starting a VM to its guest being
//     ready (agent connected or first console byte).
//   - time_to_shell_seconds: from the session's request to its guest being
//     ready.
//   - auth_failures_total{method}: rejected authentication attempts, except
//     the "none" probe that clients send first.
//   - sessions_rejected_total{limit}: sessions a Limit rejected; limit is
//     per_connection, per_client_address or server, or open_channels for
//     session channels that LimitSessionChannels rejected (counted by
//     CountRejectedChannels).
//   - connections_rejected_total: connections that an earlier connection
//     callback, such as LimitStartups, closed before the SSH handshake
//     (counted by CountRejectedConnections).
//   - vm_processes: VM host processes started and not yet reaped.
func NewMetrics(registerer prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		sessionsStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throwawaysh_sessions_started_total",
			Help: "Sessions whose shell, exec or subsystem request arrived, by mode.",
		}, []string{"mode"}),
		sessionsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throwawaysh_sessions_ended_total",
			Help: "Sessions that ended, by mode and outcome (exited, client_gone, rejected, timeout, shutdown, failed).",
		}, []string{"mode", "outcome"}),
		sessionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "throwawaysh_sessions_active",
			Help: "Sessions started and not yet ended.",
		}),
		vmBoot: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "throwawaysh_vm_boot_seconds",
			Help:    "Time from starting a VM to its guest being ready (agent connected or first console byte).",
			Buckets: bootBuckets,
		}),
		timeToShell: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "throwawaysh_time_to_shell_seconds",
			Help:    "Time from a session's shell, exec or subsystem request to its guest being ready.",
			Buckets: bootBuckets,
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throwawaysh_auth_failures_total",
			Help: "Rejected authentication attempts by method, not counting the none method clients probe with.",
		}, []string{"method"}),
		sessionsLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throwawaysh_sessions_rejected_total",
			Help: "Sessions rejected by a session limit, by limit (per_connection, per_client_address, server, open_channels).",
		}, []string{"limit"}),
		connsRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "throwawaysh_connections_rejected_total",
			Help: "Connections closed before the SSH handshake, such as those over the unauthenticated connection caps.",
		}),
		vmProcesses: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "throwawaysh_vm_processes",
			Help: "VM host processes started and not yet reaped.",
		}),
	}
	for _, c := range []prometheus.Collector{
		m.sessionsStarted, m.sessionsEnded, m.sessionsActive, m.vmBoot,
		m.timeToShell, m.authFailures, m.sessionsLimited, m.connsRejected, m.vmProcesses,
	} {
		if err := registerer.Register(c); err != nil {
			return nil, fmt.Errorf("register throwawaysh metrics: %w", err)
		}
	}
	// Series that start at zero show up before the first event, so a
	// rate() over them works from the start.
	for _, label := range limitLabels {
		m.sessionsLimited.WithLabelValues(label)
	}
	m.sessionsLimited.WithLabelValues(openChannelsLabel)
	for _, method := range []string{"password", "publickey"} {
		m.authFailures.WithLabelValues(method)
	}
	return m, nil
}

// Middleware returns a middleware that counts sessions by mode and
// outcome and lets VM, Limit and Route record into m. It must run after
// Logging and before Limit: in wish.WithMiddleware, list it between Limit
// and Logging. After VM it logs an error, because the VMs booted before it
// runs go uncounted. A nil m returns a middleware that only calls the next
// handler.
func (m *Metrics) Middleware() wish.Middleware {
	return func(next ssh.Handler) ssh.Handler {
		if m == nil {
			return next
		}
		return func(s ssh.Session) {
			s = SessionContext(s)
			warnAfterVM(s, "Metrics.Middleware", "its VM counts are incomplete")
			phases := sessionPhasesOf(s)
			phases.mu.Lock()
			phases.metrics = m
			phases.mu.Unlock()

			mode := ModeOf(s).String()
			m.sessionsStarted.WithLabelValues(mode).Inc()
			m.sessionsActive.Inc()
			defer func() {
				m.sessionsActive.Dec()
				m.sessionsEnded.WithLabelValues(mode, outcomeOf(s.Context())).Inc()
			}()
			next(s)
		}
	}
}

// outcomeOf returns the Outcome constant for the result that the session's
// handlers stored in ctx.
func outcomeOf(ctx ssh.Context) string {
	r, ok := SessionResult(ctx)
	switch {
	case !ok:
		// The handlers ended without sending a status, which only a
		// panic or a misconfigured chain does.
		return OutcomeFailed
	case r.ClientGone:
		return OutcomeClientGone
	case r.Err == nil:
		return OutcomeExited
	case r.Status == ExitCapacity:
		return OutcomeRejected
	case r.Status == ExitTimeout:
		return OutcomeTimeout
	case r.Status == ExitShutdown:
		return OutcomeShutdown
	default:
		return OutcomeFailed
	}
}

// CountAuthFailures returns a server option that counts rejected
// authentication attempts by method. Clients send the "none" method first
// to learn which methods the server offers, so its rejections are not
// counted. Publickey rejections are counted, including keys a client
// offers before the one that is authorized. The option wraps the
// ServerConfigCallback that earlier options set. A nil m returns an option
// that does nothing.
func (m *Metrics) CountAuthFailures() ssh.Option {
	return func(srv *ssh.Server) error {
		if m == nil {
			return nil
		}
		previous := srv.ServerConfigCallback
		srv.ServerConfigCallback = func(ctx ssh.Context) *gossh.ServerConfig {
			config := &gossh.ServerConfig{}
			if previous != nil {
				config = previous(ctx)
			}
			previousLog := config.AuthLogCallback
			config.AuthLogCallback = func(meta gossh.ConnMetadata, method string, err error) {
				if previousLog != nil {
					previousLog(meta, method, err)
				}
				if err != nil && method != "none" {
					m.authFailures.WithLabelValues(metricLabel(method)).Inc()
				}
			}
			return config
		}
		return nil
	}
}

// CountRejectedConnections returns a server option that counts the
// connections that the ConnCallback set by earlier options closes before
// the SSH handshake, as LimitStartups does over its caps. Apply it after
// those options. A nil m returns an option that does nothing.
func (m *Metrics) CountRejectedConnections() ssh.Option {
	return func(srv *ssh.Server) error {
		previous := srv.ConnCallback
		if m == nil || previous == nil {
			return nil
		}
		srv.ConnCallback = func(ctx ssh.Context, conn net.Conn) net.Conn {
			wrapped := previous(ctx, conn)
			if wrapped == nil {
				m.connsRejected.Inc()
			}
			return wrapped
		}
		return nil
	}
}

// CountRejectedChannels returns a server option that counts the session
// channels that the handler set by earlier options rejects as
// administratively prohibited, as LimitSessionChannels does over its cap,
// under sessions_rejected_total{limit="open_channels"}. Apply it after
// LimitSessionChannels. A nil m returns an option that does nothing.
func (m *Metrics) CountRejectedChannels() ssh.Option {
	return func(srv *ssh.Server) error {
		if m == nil {
			return nil
		}
		next := sessionChannelHandler(srv)
		srv.ChannelHandlers["session"] = func(srv *ssh.Server, conn *gossh.ServerConn, newChan gossh.NewChannel, ctx ssh.Context) {
			next(srv, conn, &countedChannel{NewChannel: newChan, metrics: m}, ctx)
		}
		return nil
	}
}

// countedChannel counts its rejection as administratively prohibited.
type countedChannel struct {
	gossh.NewChannel
	metrics *Metrics
}

func (c *countedChannel) Reject(reason gossh.RejectionReason, message string) error {
	if reason == gossh.Prohibited {
		c.metrics.sessionsLimited.WithLabelValues(openChannelsLabel).Inc()
	}
	return c.NewChannel.Reject(reason, message)
}

// metricLabel maps a method name from the client to a label value, so a
// client cannot create series with names of its own choosing.
func metricLabel(method string) string {
	switch method {
	case "password", "publickey", "keyboard-interactive", "hostbased":
		return method
	default:
		return "other"
	}
}

func (m *Metrics) vmStarted() {
	if m != nil {
		m.vmProcesses.Inc()
	}
}

func (m *Metrics) vmStopped() {
	if m != nil {
		m.vmProcesses.Dec()
	}
}

func (m *Metrics) observeBoot(d time.Duration) {
	if m != nil {
		m.vmBoot.Observe(d.Seconds())
	}
}

func (m *Metrics) observeTimeToShell(d time.Duration) {
	if m != nil {
		m.timeToShell.Observe(d.Seconds())
	}
}

func (m *Metrics) rejected(scope string) {
	if m != nil {
		m.sessionsLimited.WithLabelValues(limitLabels[scope]).Inc()
	}
}
