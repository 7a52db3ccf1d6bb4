package middleware_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"
	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/middleware"
)

// fakeClock is a FailureTrackerConfig.Now that moves only when the test
// calls Advance.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func tcpAddr(ip string) net.Addr {
	return &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}
}

func TestFailureTrackerDelayGrowsAndCaps(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_000_000, 0)}
	tracker := middleware.NewFailureTracker(middleware.FailureTrackerConfig{
		FreeFailures: 3, BaseDelay: time.Second, MaxDelay: 8 * time.Second, Now: clock.Now,
	})
	want := []time.Duration{0, 0, 0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second, 8 * time.Second}
	for i, wantDelay := range want {
		failures, delay := tracker.Fail(tcpAddr("127.0.0.1"))
		if failures != i+1 {
			t.Errorf("failure %d: count = %d", i+1, failures)
		}
		if delay != wantDelay {
			t.Errorf("failure %d: delay = %v, want %v", i+1, delay, wantDelay)
		}
	}
}

func TestFailureTrackerForgetsOverTime(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_000_000, 0)}
	tracker := middleware.NewFailureTracker(middleware.FailureTrackerConfig{
		FreeFailures: 3, DecayInterval: 10 * time.Second, Now: clock.Now,
	})
	addr := tcpAddr("127.0.0.1")
	for range 6 {
		tracker.Fail(addr)
	}

	clock.Advance(20 * time.Second)
	if got := tracker.Failures(addr); got != 4 {
		t.Errorf("after two decay intervals: %d failures, want 4", got)
	}
	clock.Advance(5 * time.Minute)
	if got := tracker.Failures(addr); got != 0 {
		t.Errorf("after five minutes: %d failures, want 0", got)
	}
	failures, delay := tracker.Fail(addr)
	if failures != 1 || delay != 0 {
		t.Errorf("next failure: count %d delay %v, want 1 and none", failures, delay)
	}
}

func TestFailureTrackerSeparatesAddresses(t *testing.T) {
	tracker := middleware.NewFailureTracker(middleware.FailureTrackerConfig{})
	for range 5 {
		tracker.Fail(tcpAddr("127.0.0.1"))
		tracker.Fail(tcpAddr("2001:db8:1:2::1"))
	}

	tests := []struct {
		addr string
		want int
	}{
		{"127.0.0.1", 5},
		{"::ffff:127.0.0.1", 5}, // IPv4-mapped IPv6 is the same host
		{"127.0.0.2", 0},
		{"2001:db8:1:2::ffff", 5}, // same /64
		{"2001:db8:1:3::1", 0},    // next /64
	}
	for _, tt := range tests {
		if got := tracker.Failures(tcpAddr(tt.addr)); got != tt.want {
			t.Errorf("%s: %d failures, want %d", tt.addr, got, tt.want)
		}
	}
}

func TestFailureTrackerTableCapped(t *testing.T) {
	const limit = 100
	tracker := middleware.NewFailureTracker(middleware.FailureTrackerConfig{MaxAddresses: limit})
	first := tcpAddr("10.0.0.1")
	tracker.Fail(first)
	tracker.Fail(first)
	var last net.Addr
	for i := range 10000 {
		last = tcpAddr(fmt.Sprintf("10.1.%d.%d", i/256, i%256))
		tracker.Fail(last)
		if n := tracker.Len(); n > limit {
			t.Fatalf("after %d addresses the table holds %d, want at most %d", i+2, n, limit)
		}
	}
	if tracker.Len() != limit {
		t.Errorf("table holds %d addresses, want %d", tracker.Len(), limit)
	}
	if got := tracker.Failures(last); got != 1 {
		t.Errorf("most recent address: %d failures, want 1", got)
	}
	if got := tracker.Failures(first); got != 0 {
		t.Errorf("oldest address: %d failures, want 0 after eviction", got)
	}
}

// recordingSleep is a FailureTrackerConfig.Sleep that records each delay
// and returns at once.
type recordingSleep struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (r *recordingSleep) Sleep(_ context.Context, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delays = append(r.delays, d)
}

func (r *recordingSleep) Delays() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.delays...)
}

func TestTrackAuthFailuresDelaysRepeatedFailures(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sleep := &recordingSleep{}
	tracker := middleware.NewFailureTracker(middleware.FailureTrackerConfig{
		FreeFailures: 2, BaseDelay: time.Second, Sleep: sleep.Sleep,
	})
	addr := serve(t,
		middleware.PasswordAuth("u", "p", logger),
		middleware.TrackAuthFailures(tracker, logger),
		wish.WithMiddleware(printIdentity))

	for range 4 {
		if _, err := sessionIdentity(t, addr, "u", gossh.Password("wrong")); err == nil {
			t.Fatal("a wrong password was accepted")
		}
	}
	wantDelays := []time.Duration{time.Second, 2 * time.Second}
	if got := sleep.Delays(); fmt.Sprint(got) != fmt.Sprint(wantDelays) {
		t.Errorf("delays applied = %v, want %v (none for the first two failures)", got, wantDelays)
	}
	for i := 1; i <= 4; i++ {
		if !hasLogLine(logs.String(), "auth failed", "method=password", "user=u", "remote=127.0.0.1:", fmt.Sprintf("failures=%d", i)) {
			t.Errorf("no auth failed line with failures=%d:\n%s", i, logs.String())
		}
	}
	if strings.Contains(logs.String(), "wrong") {
		t.Error("the log contains the password that was tried")
	}

	// The right password still gets in, and success is not delayed.
	if _, err := sessionIdentity(t, addr, "u", gossh.Password("p")); err != nil {
		t.Fatalf("the right password failed after failures from the same address: %v", err)
	}
	if got := len(sleep.Delays()); got != len(wantDelays) {
		t.Errorf("%d delays after a successful login, want %d", got, len(wantDelays))
	}
}

func TestTrackAuthFailuresCapsAttemptsPerConnection(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	sleep := &recordingSleep{}
	tracker := middleware.NewFailureTracker(middleware.FailureTrackerConfig{Sleep: sleep.Sleep})
	limitless := func(srv *ssh.Server) error {
		srv.ServerConfigCallback = func(ssh.Context) *gossh.ServerConfig {
			return &gossh.ServerConfig{MaxAuthTries: -1}
		}
		return nil
	}
	addr := serve(t,
		limitless,
		middleware.PasswordAuth("u", "p", logger),
		middleware.TrackAuthFailures(tracker, logger),
		wish.WithMiddleware(printIdentity))

	_, err := sessionIdentity(t, addr, "u", gossh.RetryableAuthMethod(gossh.Password("wrong"), 50))
	if err == nil {
		t.Fatal("a wrong password was accepted")
	}
	if got := strings.Count(logs.String(), "auth failed"); got != 6 {
		t.Errorf("one connection made %d failed attempts, want 6 (sshd's MaxAuthTries)", got)
	}
}

func TestTrackAuthFailuresIgnoresKeyRejections(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sleep := &recordingSleep{}
	tracker := middleware.NewFailureTracker(middleware.FailureTrackerConfig{FreeFailures: 1, Sleep: sleep.Sleep})
	listed := newSigner(t)
	keys := []middleware.AuthorizedKey{{Key: listed.PublicKey(), Line: 1}}
	addr := serve(t,
		middleware.PublicKeyAuth("u", keys, logger),
		middleware.TrackAuthFailures(tracker, logger),
		wish.WithMiddleware(printIdentity))

	// A client with several keys offers the unlisted ones first.
	signers := []gossh.Signer{newSigner(t), newSigner(t), newSigner(t), listed}
	if _, err := sessionIdentity(t, addr, "u", gossh.PublicKeys(signers...)); err != nil {
		t.Fatalf("login with the listed key after others failed: %v", err)
	}
	if !hasLogLine(logs.String(), "auth failed", "method=publickey", "failures=0") {
		t.Errorf("no auth failed line for the rejected keys:\n%s", logs.String())
	}
	if got := tracker.Failures(tcpAddr("127.0.0.1")); got != 0 {
		t.Errorf("rejected keys counted as %d failures, want 0", got)
	}
	if got := sleep.Delays(); len(got) != 0 {
		t.Errorf("rejected keys were delayed: %v", got)
	}
}

func TestAuthFailureLogKeepsUserOnOneLine(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	addr := serve(t,
		middleware.PasswordAuth("u", "p", logger),
		middleware.TrackAuthFailures(nil, logger),
		wish.WithMiddleware(func(ssh.Handler) ssh.Handler { return func(s ssh.Session) { _ = s.Exit(0) } }))

	user := "evil\n2026-01-01 INFO session end fake=1\x1b[31m" + strings.Repeat("x", 1000)
	_, err := gossh.Dial("tcp", addr, &gossh.ClientConfig{
		User:            user,
		Auth:            []gossh.AuthMethod{gossh.Password("wrong")},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	})
	if err == nil {
		t.Fatal("login succeeded")
	}
	out := logs.String()
	if strings.Count(out, "auth failed") != 1 {
		t.Fatalf("want one auth failed line, got:\n%s", out)
	}
	if strings.Count(out, "\n") != 1 {
		t.Errorf("a user name split the log into extra lines:\n%s", out)
	}
	if strings.Contains(out, "\x1b") || len(out) > 600 {
		t.Errorf("log line holds raw control bytes or the whole user name: %q", out)
	}
}

// forgedSigner claims one public key and signs with another key.
type forgedSigner struct {
	claimed gossh.PublicKey
	signer  gossh.Signer
}

func (s forgedSigner) PublicKey() gossh.PublicKey { return s.claimed }

func (s forgedSigner) Sign(rand io.Reader, data []byte) (*gossh.Signature, error) {
	return s.signer.Sign(rand, data)
}

// A signature that does not verify for the key it claims is a forged
// proof, and counts as a failed login though the SSH library ends the
// connection without reporting an authentication attempt.
func TestTrackAuthFailuresCountsForgedSignature(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tracker := middleware.NewFailureTracker(middleware.FailureTrackerConfig{})
	listed := newSigner(t)
	keys := []middleware.AuthorizedKey{{Key: listed.PublicKey(), Line: 1}}
	addr := serve(t,
		middleware.PublicKeyAuth("u", keys, logger),
		middleware.TrackAuthFailures(tracker, logger),
		wish.WithMiddleware(printIdentity))

	forged := forgedSigner{claimed: listed.PublicKey(), signer: newSigner(t)}
	if _, err := sessionIdentity(t, addr, "u", gossh.PublicKeys(forged)); err == nil {
		t.Fatal("login with a forged signature succeeded")
	}
	// The server logs the failure after it counts it.
	deadline := time.Now().Add(10 * time.Second)
	for !hasLogLine(logs.String(), "auth failed", "method=publickey", "failures=1") {
		if time.Now().After(deadline) {
			t.Fatalf("no counted auth failed line for the forged signature:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := tracker.Failures(tcpAddr("127.0.0.1")); got != 1 {
		t.Errorf("forged signature counted as %d failures, want 1", got)
	}
}
