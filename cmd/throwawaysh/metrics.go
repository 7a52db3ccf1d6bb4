package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/throwawaysh/throwawaysh/middleware"
)

// metricsShutdownTimeout bounds how long a stopping service waits for
// metrics requests in progress.
const metricsShutdownTimeout = 2 * time.Second

// validateMetricsAddr checks --metrics-addr: empty (off), or HOST:PORT or
// :PORT other than the SSH listen address.
func validateMetricsAddr(addr, listenAddr string) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid --metrics-addr (SSH_METRICS_ADDR) %q: must be HOST:PORT or :PORT, for example 127.0.0.1:9100", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return fmt.Errorf("invalid --metrics-addr (SSH_METRICS_ADDR) %q: port %q must be a number from 0 to 65535", addr, port)
	}
	if strings.ContainsAny(host, " /\\") {
		return fmt.Errorf("invalid --metrics-addr (SSH_METRICS_ADDR) %q: host %q must be an IP address or a host name", addr, host)
	}
	if addr == listenAddr && port != "0" {
		return fmt.Errorf("invalid --metrics-addr (SSH_METRICS_ADDR) %q: it is also the SSH --listen-addr; give metrics a port of their own", addr)
	}
	return nil
}

// startMetrics creates the service's metrics and, when addr is not empty,
// serves them with the Go runtime and process metrics at /metrics on addr.
// It returns nil metrics and a no-op stop when addr is empty. Call stop
// when the service ends.
func startMetrics(addr string, logger *slog.Logger) (metrics *middleware.Metrics, stop func(), err error) {
	if addr == "" {
		return nil, func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	metrics, server, err := newMetricsServer(logger)
	if err != nil {
		_ = ln.Close()
		return nil, nil, err
	}
	return metrics, serveMetrics(server, ln, logger), nil
}

// newMetricsServer returns the service's metrics in a registry of their
// own, with the Go runtime and process collectors, and an HTTP server for
// them at /metrics.
func newMetricsServer(logger *slog.Logger) (*middleware.Metrics, *http.Server, error) {
	registry := prometheus.NewRegistry()
	if err := registry.Register(collectors.NewGoCollector()); err != nil {
		return nil, nil, fmt.Errorf("register go metrics: %w", err)
	}
	if err := registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, nil, fmt.Errorf("register process metrics: %w", err)
	}
	metrics, err := middleware.NewMetrics(registry)
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(logger.Handler(), slog.LevelError),
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	server := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelInfo),
	}
	return metrics, server, nil
}

// serveMetrics serves server on ln in the background, logging its start
// and stop, and returns the function that shuts it down.
func serveMetrics(server *http.Server, ln net.Listener, logger *slog.Logger) (stop func()) {
	addr := ln.Addr().String()
	logger.Info("metrics start", "addr", addr, "path", "/metrics")
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server stopped", "addr", addr, "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
		defer cancel()
		if err := server.Shutdown(ctx); err != nil {
			logger.Warn("metrics requests cut off at shutdown", "addr", addr, "err", err)
			_ = server.Close()
		}
		<-served
		logger.Info("metrics stop", "addr", addr)
	}
}
