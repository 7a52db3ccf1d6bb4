package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// tryArgsEnv, when set, makes TestTryServer run the service with these
// flags (split at spaces) and the test launcher, until SIGINT or SIGTERM.
// It lets a developer without libkrun try the service with a real SSH
// client:
//
//	THROWAWAYSH_TRY_ARGS='--listen-addr 127.0.0.1:2222' \
//	    go test -v -run TestTryServer -timeout 0 ./cmd/throwawaysh
//
// Without --rootfs it uses a busybox root built like the tests', and
// without --host-key-path a host key in a temporary directory.
const tryArgsEnv = "THROWAWAYSH_TRY_ARGS"

func TestTryServer(t *testing.T) {
	value, ok := os.LookupEnv(tryArgsEnv)
	if !ok {
		t.Skip(tryArgsEnv + " not set; this test only serves for manual trials")
	}
	args := strings.Fields(value)
	if !strings.Contains(value, "--rootfs") && os.Getenv("SSH_ROOTFS") == "" {
		args = append(args, "--rootfs", krtest.Rootfs(t, true))
	}
	if !strings.Contains(value, "--host-key-path") && os.Getenv("SSH_HOST_KEY_PATH") == "" {
		args = append(args, "--host-key-path", filepath.Join(t.TempDir(), "host_key"))
	}
	cfg, done, err := parseConfig(args, os.Stdout)
	if err != nil || done {
		t.Fatalf("parse %s: done=%v err=%v", tryArgsEnv, done, err)
	}
	logger := newLogger(cfg, os.Stderr)
	runtimeDir, err := middleware.OpenRuntimeDir(cfg.RuntimeDir, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer runtimeDir.Close()
	metrics, stopMetrics, err := startMetrics(cfg.MetricsAddr, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer stopMetrics()
	sessions := middleware.NewTracker()
	srv, err := newServerWithMetrics(cfg, &krtest.Launcher{}, sessions, metrics, logger)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "serving on %s with the test launcher (rootfs %s); stop with Ctrl-C\n", ln.Addr(), cfg.Rootfs)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if status := serve(ctx, srv, ln, sessions, logger); status != exitOK {
		t.Errorf("serve returned %d", status)
	}
}
