package main

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"

	"github.com/throwawaysh/throwawaysh/krun"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// config is the configuration of newServer, which main reads from the
// flags.
type config struct {
	// ListenAddr is the address to listen on, HOST:PORT.
	ListenAddr string
	// HostKeyPath is the SSH host key, created when missing.
	HostKeyPath string
	// RuntimeDir holds the per-session files, opened with
	// middleware.OpenRuntimeDir.
	RuntimeDir string
	// Images maps each user name that may log in to the rootfs its
	// sessions boot from.
	Images map[string]string
	// IdleTimeout ends a session without input or output for this long.
	IdleTimeout time.Duration
}

// newServer composes the throwawaysh middlewares with two pieces of this
// app: chooseImage, which picks each session's rootfs by user name, and
// banner, which greets interactive sessions. launcher boots the VMs and
// sessions records the live sessions for the shutdown.
func newServer(cfg config, launcher krun.Launcher, sessions *middleware.Tracker, logger *slog.Logger) (*ssh.Server, error) {
	signer, _, err := middleware.LoadOrCreateHostKey(cfg.HostKeyPath)
	if err != nil {
		return nil, err
	}
	if len(cfg.Images) == 0 {
		return nil, errors.New("no images configured: pass at least one -image USER=DIR")
	}

	// The last middleware listed runs first.
	chain := []wish.Middleware{
		middleware.Route(),
		banner(),
		middleware.Timeout(middleware.WithIdleTimeout(cfg.IdleTimeout)),
		middleware.VM(launcher,
			middleware.WithSettingsFunc(chooseImage(cfg.Images)),
			middleware.WithRuntimeDir(cfg.RuntimeDir),
		),
		sessions.Middleware(),
		middleware.Limit(middleware.WithMaxSessions(16), middleware.WithMaxSessionsPerIP(4)),
		middleware.Logging(logger),
	}
	return wish.NewServer(
		wish.WithAddress(cfg.ListenAddr),
		middleware.QuickAck(),
		func(srv *ssh.Server) error {
			srv.AddHostKey(signer)
			srv.HandshakeTimeout = 30 * time.Second
			return nil
		},
		// The user name only picks an image, so no password is asked.
		middleware.AllowPasswordless(logger),
		middleware.RawPTY(),
		middleware.FilterRequests(nil, logger),
		wish.WithMiddleware(chain...),
		middleware.SFTP(chain...),
		middleware.Keepalive(15*time.Second, 3, logger),
		middleware.LimitStartups(100, 10, logger),
	)
}

// chooseImage returns a settings function that boots each session from
// the image of its user name, and rejects other names with the list of
// valid ones.
func chooseImage(images map[string]string) func(ssh.Context, *middleware.VMSettings) error {
	names := strings.Join(slices.Sorted(maps.Keys(images)), ", ")
	return func(ctx ssh.Context, settings *middleware.VMSettings) error {
		dir, ok := images[ctx.User()]
		if !ok {
			return middleware.NewUserError(
				"no image for this user name; log in as one of: "+names,
				fmt.Errorf("no image for user %q", ctx.User()))
		}
		settings.Rootfs = dir
		return nil
	}
}

// banner returns a middleware that writes a greeting with the image name
// to the client's stderr in PTY sessions, before Route starts the shell.
// It runs between VM and Route, because it reads the session's VM.
// Commands without a PTY get no banner, so their output stays clean for
// scripts.
func banner() wish.Middleware {
	return func(next ssh.Handler) ssh.Handler {
		return func(s ssh.Session) {
			guest, ok := middleware.GuestFrom(s.Context())
			if ok && guest.Mode == middleware.ModePTY {
				// The VM middleware booted it, so the user name is one of
				// the configured images. The client's terminal is in raw
				// mode, so the line ends in "\r\n".
				fmt.Fprintf(s.Stderr(), "peruser: a fresh %s VM, gone when you log out\r\n", s.User())
			}
			next(s)
		}
	}
}
