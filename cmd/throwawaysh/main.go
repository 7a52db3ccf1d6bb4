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

// shutdownGrace is how long a stopping server waits for sessions to end
// after it has closed their connections.
const shutdownGrace = 5 * time.Second

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

	srv, err := newServer(cfg, launcher, logger)
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
	logger.Info("server start", "addr", ln.Addr().String(), "version", version, "libkrun", lib.Path(), "rootfs", cfg.Rootfs)
	return serve(srv, ln, logger)
}

// serve runs srv on ln until SIGINT or SIGTERM, then closes every
// connection, which ends every session and kills its VM.
func serve(srv *ssh.Server, ln net.Listener, logger *slog.Logger) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		logger.Error("server stopped", "err", err)
		return exitFailure
	case <-ctx.Done():
	}

	logger.Info("server stop", "reason", "signal")
	// TODO: tell connected clients why their session ends before closing.
	if err := srv.Close(); err != nil {
		logger.Error("close server", "err", err)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		logger.Error("shut down server", "err", err)
	}
	return exitOK
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
