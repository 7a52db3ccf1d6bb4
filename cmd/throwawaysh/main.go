// Command throwawaysh is an SSH server that runs every session in its own
// throwaway libkrun microVM. It reads its configuration and composes the
// middlewares of package middleware; see the README for the flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"charm.land/log/v2"
	"charm.land/ssh"

	"github.com/throwawaysh/throwawaysh/krun"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit statuses of the service process.
const (
	exitOK      = 0
	exitFailure = 1
	// exitUsage is for invalid flags or variables, as with most Unix tools.
	exitUsage = 2
)

// shutdownGrace is how long a stopping server waits for its sessions to
// end and their clients to disconnect, and then again for the sessions to
// end after it has closed every connection.
const shutdownGrace = 5 * time.Second

// shutdownMessage is the reason each client receives on stderr, after
// "throwawaysh: ", when the server stops its session.
const shutdownMessage = "server shutting down"

func main() {
	// A VM's host process is this binary started again; it never returns
	// from here when it is one.
	krun.RunChildIfRequested()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, done, err := parseConfig(args, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "throwawaysh: %s\n", err)
		var usage *usageError
		if errors.As(err, &usage) {
			return exitUsage
		}
		return exitFailure
	}
	if done {
		return exitOK
	}

	logger := newLogger(cfg, stderr)
	// The SSH library logs its own errors (panics it recovered, channels it
	// could not accept) through slog's default logger.
	slog.SetDefault(logger)
	// Errors before the server runs go to stderr as one plain line each,
	// which is what a person starting the service reads.
	lib, err := krun.Load()
	if err != nil {
		fmt.Fprintf(stderr, "throwawaysh: %s\n", err)
		return exitFailure
	}
	if err := krun.CheckKVM(); err != nil {
		fmt.Fprintf(stderr, "throwawaysh: %s\n", err)
		return exitFailure
	}
	launcher, err := krun.NewLauncher(lib, logger)
	if err != nil {
		fmt.Fprintf(stderr, "throwawaysh: %s\n", err)
		return exitFailure
	}

	runtimeDir, err := middleware.OpenRuntimeDir(cfg.RuntimeDir, logger)
	if err != nil {
		fmt.Fprintf(stderr, "throwawaysh: %s\n", err)
		return exitFailure
	}
	defer runtimeDir.Close()

	metrics, stopMetrics, err := startMetrics(cfg.MetricsAddr, logger)
	if err != nil {
		fmt.Fprintf(stderr, "throwawaysh: %s\n", err)
		return exitFailure
	}
	defer stopMetrics()

	sessions := middleware.NewTracker()
	srv, err := newServerWithMetrics(cfg, launcher, sessions, metrics, logger)
	if err != nil {
		fmt.Fprintf(stderr, "throwawaysh: %s\n", err)
		return exitFailure
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		fmt.Fprintf(stderr, "throwawaysh: listen on %s: %s\n", cfg.ListenAddr, err)
		return exitFailure
	}
	if cfg.Password == defaultPassword && !cfg.AllowPasswordless {
		logger.Warn("using the default password; set SSH_PASSWORD before exposing this server")
	}
	if cfg.GuestNetwork == "tsi" {
		logger.Warn("guest network on: every guest reaches what the host reaches, host loopback included")
	}
	for _, warning := range cfg.warnings() {
		logger.Warn(warning)
	}
	logger.Info("server start", "addr", ln.Addr().String(), "version", version, "libkrun", lib.Path(), "rootfs", cfg.Rootfs, "runtime_dir", cfg.RuntimeDir)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, srv, ln, sessions, logger)
}

// serve runs srv on ln until ctx is done or serving fails, then shuts
// down. It stops accepting connections, ends every session through
// sessions so that each client gets shutdownMessage and exit status
// middleware.ExitShutdown, waits up to shutdownGrace for the clients to
// disconnect and closes the connections left. It returns exitOK after a
// shutdown that ctx started and that left no session behind.
func serve(ctx context.Context, srv *ssh.Server, ln net.Listener, sessions *middleware.Tracker, logger *slog.Logger) int {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	status := exitOK
	var serveErr error
	select {
	case serveErr = <-served:
		logger.Error("server stopped accepting connections", "err", serveErr)
		status = exitFailure
	case <-ctx.Done():
		logger.Info("server stop", "reason", context.Cause(ctx), "sessions", sessions.Len())
	}

	graceCtx, cancelGrace := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancelGrace()
	// Shutdown closes the listener at once and then waits for the clients
	// to close their connections, which they do once their sessions end.
	disconnected := make(chan error, 1)
	go func() { disconnected <- srv.Shutdown(graceCtx) }()
	if err := sessions.Shutdown(graceCtx, shutdownMessage); err != nil {
		logger.Warn("sessions did not end within the grace period", "grace", shutdownGrace, "err", err)
	}
	if err := <-disconnected; errors.Is(err, context.DeadlineExceeded) {
		logger.Warn("clients did not disconnect within the grace period, closing their connections", "grace", shutdownGrace)
	} else if err != nil {
		logger.Error("shut down server", "err", err)
	}
	// Close ends what is left: connections of clients that did not
	// disconnect, and connections without a session. A session whose
	// connection ends kills its VM.
	if err := srv.Close(); err != nil {
		logger.Error("close server", "err", err)
	}
	waitCtx, cancelWait := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancelWait()
	if err := sessions.Shutdown(waitCtx, shutdownMessage); err != nil {
		logger.Error("sessions outlived the shutdown", "err", err)
		status = exitFailure
	}
	if serveErr == nil {
		<-served
	}
	logger.Info("server stopped", "status", status)
	return status
}

// newLogger returns the service's logger: charm log's handler behind
// log/slog, in the configured level and format.
func newLogger(cfg config, w io.Writer) *slog.Logger {
	level, err := log.ParseLevel(cfg.LogLevel)
	if err != nil {
		level = log.InfoLevel // validate has checked the value already.
	}
	formatter := log.TextFormatter
	if cfg.LogFormat == "json" {
		formatter = log.JSONFormatter
	}
	handler := log.NewWithOptions(w, log.Options{
		Level:           level,
		Formatter:       formatter,
		ReportTimestamp: true,
		TimeFormat:      time.RFC3339Nano,
	})
	return slog.New(handler)
}
