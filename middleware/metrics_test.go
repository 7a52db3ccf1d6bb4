package middleware_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// A nil *Metrics must serve sessions as if it were absent: its middleware
// calls the next handler and its server option changes nothing.
func TestMetricsNilPassesThrough(t *testing.T) {
	var metrics *middleware.Metrics
	handler := func(next ssh.Handler) ssh.Handler {
		return func(s ssh.Session) { _, _ = io.WriteString(s, "served\n") }
	}
	addr := serve(t,
		middleware.PasswordAuth("u", "p", nil),
		metrics.CountAuthFailures(),
		wish.WithMiddleware(handler, metrics.Middleware(), middleware.Logging(nil)),
	)
	session, err := dial(t, addr, "u", "p").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := session.Output("true")
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	if string(out) != "served\n" {
		t.Errorf("output %q, want served", out)
	}
}

// Metrics without Logging still counts sessions, and a registry that has
// the metrics already rejects a second set with an error.
func TestMetricsWithoutLogging(t *testing.T) {
	registry := prometheus.NewRegistry()
	metrics, err := middleware.NewMetrics(registry)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := middleware.NewMetrics(registry); err == nil || !strings.Contains(err.Error(), "register") {
		t.Errorf("second NewMetrics on one registry: err = %v, want a registration error", err)
	}

	handler := func(next ssh.Handler) ssh.Handler {
		return func(s ssh.Session) { _ = s.Exit(0) }
	}
	addr := serve(t,
		middleware.PasswordAuth("u", "p", nil),
		metrics.CountAuthFailures(),
		wish.WithMiddleware(handler, metrics.Middleware()),
	)
	session, err := dial(t, addr, "u", "p").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	_ = session.Run("true")

	// The handler sent no result through this package, which counts as a
	// failure of the chain.
	want := `
# HELP throwawaysh_sessions_ended_total Sessions that ended, by mode and outcome (exited, client_gone, rejected, timeout, shutdown, failed).
# TYPE throwawaysh_sessions_ended_total counter
throwawaysh_sessions_ended_total{mode="console",outcome="failed"} 1
`
	// The count goes up when the handler returns, a moment after the
	// client got its exit status.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := testutil.GatherAndCompare(registry, strings.NewReader(want), "throwawaysh_sessions_ended_total")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Metrics listed before VM in the chain, so that it runs after VM, works
// but logs the misconfiguration, and its VM process gauge never goes
// below zero.
func TestMetricsAfterVMIsLogged(t *testing.T) {
	registry := prometheus.NewRegistry()
	metrics, err := middleware.NewMetrics(registry)
	if err != nil {
		t.Fatal(err)
	}
	status, _, logs := runChain(t, "echo ran",
		middleware.Route(),
		metrics.Middleware(),
		middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(krtest.Rootfs(t, false))),
	)
	if status != 0 {
		t.Errorf("status %d, want 0: the order is wrong but works", status)
	}
	if !strings.Contains(logs, "misconfigured chain: Metrics.Middleware runs after VM") {
		t.Errorf("log does not report Metrics after VM:\n%s", logs)
	}
	want := `
# HELP throwawaysh_vm_processes VM host processes started and not yet reaped.
# TYPE throwawaysh_vm_processes gauge
throwawaysh_vm_processes 0
`
	if err := testutil.GatherAndCompare(registry, strings.NewReader(want), "throwawaysh_vm_processes"); err != nil {
		t.Error(err)
	}
}
