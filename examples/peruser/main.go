// Command peruser is a small Wish app that embeds the throwawaysh
// middlewares. The SSH user name picks the image (the rootfs) that the
// session's VM boots from, and interactive sessions get a banner:
//
//	peruser -image alpine=/srv/images/alpine -image debian=/srv/images/debian
//	ssh -p 2222 alpine@localhost
//
// Anyone who can reach the port gets a VM without a password, so it
// listens on 127.0.0.1 by default. It needs libkrun and KVM, as the
// throwawaysh service does; its test runs it with a test launcher instead.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/throwawaysh/throwawaysh/krun"
	"github.com/throwawaysh/throwawaysh/middleware"
	"github.com/throwawaysh/throwawaysh/rootfs"
)

// shutdownGrace bounds the wait for sessions and clients at shutdown.
const shutdownGrace = 5 * time.Second

func main() {
	// Each VM's host process is this binary started again, and it never
	// returns from here when it is one.
	krun.RunChildIfRequested()
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var reported *reportedError
	if err != nil && !errors.As(err, &reported) {
		fmt.Fprintf(stderr, "peruser: %v\n", err)
	}
	if err != nil {
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))

	lib, err := krun.Load()
	if err == nil {
		err = krun.CheckKVM()
	}
	if err != nil {
		fmt.Fprintf(stderr, "peruser: %v\n", err)
		return 1
	}
	launcher, err := krun.NewLauncher(lib, logger)
	if err != nil {
		fmt.Fprintf(stderr, "peruser: %v\n", err)
		return 1
	}
	runtimeDir, err := middleware.OpenRuntimeDir(cfg.RuntimeDir, logger)
	if err != nil {
		fmt.Fprintf(stderr, "peruser: %v\n", err)
		return 1
	}
	defer runtimeDir.Close()
	cfg.RuntimeDir = runtimeDir.Path()

	sessions := middleware.NewTracker()
	srv, err := newServer(cfg, launcher, sessions, logger)
	if err != nil {
		fmt.Fprintf(stderr, "peruser: %v\n", err)
		return 1
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		fmt.Fprintf(stderr, "peruser: listen on %s: %v\n", cfg.ListenAddr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("server start", "addr", ln.Addr().String(), "images", len(cfg.Images))
	select {
	case err := <-served:
		logger.Error("server stopped accepting connections", "err", err)
		return 1
	case <-ctx.Done():
	}

	logger.Info("server stop", "sessions", sessions.Len())
	graceCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := sessions.Shutdown(graceCtx, "server shutting down"); err != nil {
		logger.Warn("sessions did not end within the grace period", "err", err)
	}
	// Close ends the connections left, and with them their VMs.
	if err := srv.Close(); err != nil {
		logger.Error("close server", "err", err)
	}
	<-served
	return 0
}

// parseFlags reads the configuration from args. Its errors name the flag,
// the value and the fix.
func parseFlags(args []string, output io.Writer) (config, error) {
	cfg := config{Images: map[string]string{}}
	flags := flag.NewFlagSet("peruser", flag.ContinueOnError)
	flags.SetOutput(output)
	flags.StringVar(&cfg.ListenAddr, "listen", "127.0.0.1:2222", "address to listen on, `HOST:PORT`")
	flags.StringVar(&cfg.HostKeyPath, "host-key", "peruser_host_key", "SSH host key `file`, created when missing")
	flags.StringVar(&cfg.RuntimeDir, "runtime-dir", filepath.Join(os.TempDir(), fmt.Sprintf("peruser-%d", os.Getuid())), "`directory` for per-session sockets and mountpoints")
	flags.DurationVar(&cfg.IdleTimeout, "idle-timeout", 15*time.Minute, "end a session after this `duration` without input or output; 0 turns it off")
	flags.Func("image", "sessions of USER boot from the rootfs DIR, given as `USER=DIR`; repeat for more users", func(value string) error {
		return addImage(cfg.Images, value)
	})
	if err := flags.Parse(args); err != nil {
		// The flag package has written the error and the usage already.
		return config{}, &reportedError{err}
	}
	if flags.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q; pass images with -image USER=DIR", flags.Arg(0))
	}
	if len(cfg.Images) == 0 {
		return config{}, errors.New("no image given; pass at least one -image USER=DIR")
	}
	if cfg.IdleTimeout < 0 {
		return config{}, fmt.Errorf("-idle-timeout %s is negative; use 0 to turn it off", cfg.IdleTimeout)
	}
	return cfg, nil
}

// reportedError is an error that the flag package has written already.
type reportedError struct{ err error }

func (e *reportedError) Error() string { return e.err.Error() }
func (e *reportedError) Unwrap() error { return e.err }

// addImage adds one -image USER=DIR value to images, with DIR made
// absolute and checked as a rootfs.
func addImage(images map[string]string, value string) error {
	user, dir, ok := strings.Cut(value, "=")
	if !ok || user == "" || dir == "" {
		return fmt.Errorf("%q is not of the form USER=DIR", value)
	}
	if _, dup := images[user]; dup {
		return fmt.Errorf("user %q has two images; give each user one", user)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("image of %q: %w", user, err)
	}
	if err := rootfs.Check(dir); err != nil {
		return fmt.Errorf("image of %q: %w", user, err)
	}
	images[user] = dir
	return nil
}
