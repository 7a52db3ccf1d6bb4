package middleware

import (
	"container/list"
	"context"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"charm.land/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// maxAuthTries is the maximum number of failed authentication attempts on
// one connection, sshd's default MaxAuthTries.
const maxAuthTries = 6

// Defaults of FailureTrackerConfig.
const (
	DefaultFreeFailures  = 3
	DefaultBaseDelay     = time.Second
	DefaultMaxDelay      = 8 * time.Second
	DefaultDecayInterval = 20 * time.Second
	DefaultMaxAddresses  = 10000
)

// FailureTrackerConfig configures a FailureTracker. A zero field takes its
// default.
type FailureTrackerConfig struct {
	// FreeFailures is the number of recent failures from one address that
	// are rejected without delay (DefaultFreeFailures).
	FreeFailures int
	// BaseDelay is the delay of the first failure beyond FreeFailures. Each
	// further failure doubles it (DefaultBaseDelay).
	BaseDelay time.Duration
	// MaxDelay caps the delay of one failure (DefaultMaxDelay).
	MaxDelay time.Duration
	// DecayInterval is the time in which one recorded failure of an address
	// is forgotten (DefaultDecayInterval).
	DecayInterval time.Duration
	// MaxAddresses caps the number of addresses tracked. When it is
	// reached, the address whose last failure is oldest is dropped
	// (DefaultMaxAddresses).
	MaxAddresses int
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Sleep waits for d, or until ctx is done. Nil means a timer. Tests
	// replace it to record delays without waiting.
	Sleep func(ctx context.Context, d time.Duration)
}

// FailureTracker counts recent failed authentication attempts per client
// address and computes how long to hold back the next rejection. Its
// memory is bounded by MaxAddresses. IPv4 addresses are tracked one by
// one, IPv6 addresses by their /64 prefix, the block one subscriber
// usually holds. It is safe for concurrent use.
type FailureTracker struct {
	config FailureTrackerConfig

	mu      sync.Mutex
	entries map[netip.Prefix]*list.Element
	// recent holds *failureEntry values, the most recently failed first.
	recent *list.List
}

// failureEntry is the failure record of one address.
type failureEntry struct {
	prefix netip.Prefix
	// count is the number of recent failures. It drops by one per
	// DecayInterval, so it can be fractional.
	count   float64
	updated time.Time
}

// NewFailureTracker returns a FailureTracker with config, its zero fields
// set to the defaults.
func NewFailureTracker(config FailureTrackerConfig) *FailureTracker {
	if config.FreeFailures <= 0 {
		config.FreeFailures = DefaultFreeFailures
	}
	if config.BaseDelay <= 0 {
		config.BaseDelay = DefaultBaseDelay
	}
	if config.MaxDelay <= 0 {
		config.MaxDelay = DefaultMaxDelay
	}
	if config.DecayInterval <= 0 {
		config.DecayInterval = DefaultDecayInterval
	}
	if config.MaxAddresses <= 0 {
		config.MaxAddresses = DefaultMaxAddresses
	}
	if config.Now == nil {
		config.Now = time.Now
	}
	if config.Sleep == nil {
		config.Sleep = sleepContext
	}
	return &FailureTracker{
		config:  config,
		entries: map[netip.Prefix]*list.Element{},
		recent:  list.New(),
	}
}

// Fail records a failed attempt from addr. It returns the number of recent
// failures from that address, this one included, and how long to wait
// before rejecting it.
func (t *FailureTracker) Fail(addr net.Addr) (failures int, delay time.Duration) {
	prefix := trackedPrefix(addr)
	now := t.config.Now()

	t.mu.Lock()
	defer t.mu.Unlock()

	element, ok := t.entries[prefix]
	if !ok {
		// NOTE: a client with more than MaxAddresses addresses (or IPv6
		// /64s) can push its own entries out and so reset its count.
		if t.recent.Len() >= t.config.MaxAddresses {
			oldest := t.recent.Back()
			t.recent.Remove(oldest)
			delete(t.entries, oldest.Value.(*failureEntry).prefix)
		}
		element = t.recent.PushFront(&failureEntry{prefix: prefix, updated: now})
		t.entries[prefix] = element
	}
	t.recent.MoveToFront(element)

	entry := element.Value.(*failureEntry)
	entry.count = t.decayed(entry, now) + 1
	entry.updated = now

	failures = int(math.Ceil(entry.count))
	return failures, t.delayFor(failures)
}

// Failures returns the number of recent failures from addr without
// recording one.
func (t *FailureTracker) Failures(addr net.Addr) int {
	prefix := trackedPrefix(addr)
	now := t.config.Now()

	t.mu.Lock()
	defer t.mu.Unlock()
	element, ok := t.entries[prefix]
	if !ok {
		return 0
	}
	return int(math.Ceil(t.decayed(element.Value.(*failureEntry), now)))
}

// Len returns the number of addresses tracked.
func (t *FailureTracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.recent.Len()
}

// decayed returns entry's count at now, less one failure per
// DecayInterval since its last update.
func (t *FailureTracker) decayed(entry *failureEntry, now time.Time) float64 {
	elapsed := now.Sub(entry.updated)
	if elapsed <= 0 {
		return entry.count
	}
	return max(0, entry.count-float64(elapsed)/float64(t.config.DecayInterval))
}

// delayFor returns BaseDelay doubled for each failure beyond the first
// delayed one, capped at MaxDelay.
func (t *FailureTracker) delayFor(failures int) time.Duration {
	over := failures - t.config.FreeFailures
	if over <= 0 {
		return 0
	}
	delay := t.config.BaseDelay
	for range over - 1 {
		if delay >= t.config.MaxDelay {
			break
		}
		delay *= 2
	}
	return min(delay, t.config.MaxDelay)
}

// trackedPrefix returns the prefix addr is tracked under: the IPv4 address
// itself or the IPv6 /64. Addresses that are not IP addresses share the
// zero prefix.
func trackedPrefix(addr net.Addr) netip.Prefix {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case nil:
	default:
		if addrPort, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = addrPort.Addr()
		}
	}
	ip = ip.Unmap()
	switch {
	case ip.Is4():
		return netip.PrefixFrom(ip, 32)
	case ip.Is6():
		prefix, _ := ip.WithZone("").Prefix(64)
		return prefix
	}
	return netip.Prefix{}
}

func sleepContext(ctx context.Context, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

// TrackAuthFailures returns a server option that logs every failed
// authentication attempt ("auth failed") with its method, user name,
// remote address and the address's count of recent failures, and slows
// down repeated failures from one address with tracker's delay. The delay
// holds back only the rejection of that attempt, on that connection's
// goroutine, so other connections go on. Successful attempts are never
// delayed.
//
// Two kinds of rejection are logged but not counted, because they guess
// no secret. Clients send the "none" method first to learn which methods
// the server offers. A client with several keys has its unauthorized keys
// rejected before it offers the right one.
//
// The option also sets the connection's MaxAuthTries to 6, sshd's
// default, when it is unset, unlimited or higher. A nil tracker gets the
// defaults and a nil logger discards.
func TrackAuthFailures(tracker *FailureTracker, logger *slog.Logger) ssh.Option {
	if tracker == nil {
		tracker = NewFailureTracker(FailureTrackerConfig{})
	}
	if logger == nil {
		logger = discardLogger
	}
	return func(srv *ssh.Server) error {
		previous := srv.ServerConfigCallback
		srv.ServerConfigCallback = func(ctx ssh.Context) *gossh.ServerConfig {
			config := &gossh.ServerConfig{}
			if previous != nil {
				config = previous(ctx)
			}
			if config.MaxAuthTries <= 0 || config.MaxAuthTries > maxAuthTries {
				config.MaxAuthTries = maxAuthTries
			}
			previousLog := config.AuthLogCallback
			config.AuthLogCallback = func(meta gossh.ConnMetadata, method string, err error) {
				if previousLog != nil {
					previousLog(meta, method, err)
				}
				if err != nil {
					tracker.rejected(ctx, meta, method, err, logger)
				}
			}
			return config
		}
		// A public key signature that does not verify ends the
		// connection inside the SSH library without an AuthLogCallback
		// call, yet it is a forged proof of a key and counts.
		previousFailed := srv.ConnectionFailedCallback
		srv.ConnectionFailedCallback = func(conn net.Conn, err error) {
			if previousFailed != nil {
				previousFailed(conn, err)
			}
			if err != nil && strings.Contains(err.Error(), "signature did not verify") {
				failures, _ := tracker.Fail(conn.RemoteAddr())
				logger.Warn("auth failed", "method", "publickey", "remote", conn.RemoteAddr().String(), "failures", failures, "err", err)
			}
		}
		return nil
	}
}

// rejected logs one failed attempt and, for a counted one, waits for the
// delay before the SSH library sends the rejection.
func (t *FailureTracker) rejected(ctx context.Context, meta gossh.ConnMetadata, method string, err error, logger *slog.Logger) {
	attrs := []any{
		"method", logSafe(method),
		"user", logSafe(meta.User()),
		"remote", meta.RemoteAddr().String(),
	}
	switch method {
	case "none":
		logger.Debug("auth failed", append(attrs, "failures", t.Failures(meta.RemoteAddr()), "err", err)...)
		return
	case "publickey":
		logger.Info("auth failed", append(attrs, "failures", t.Failures(meta.RemoteAddr()), "err", err)...)
		return
	}

	failures, delay := t.Fail(meta.RemoteAddr())
	logger.Warn("auth failed", append(attrs, "failures", failures, "delay", delay, "err", err)...)
	// NOTE: the delay holds back one connection. A client that opens many
	// connections from one address at once still gets one guess per
	// connection per delay, until connections per address are limited.
	if delay > 0 {
		t.config.Sleep(ctx, delay)
	}
}
