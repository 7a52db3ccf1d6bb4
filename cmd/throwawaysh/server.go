package main

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"
	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/krun"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// handshakeTimeout bounds the SSH handshake and authentication, so a client
// that connects and stays silent does not hold a connection forever.
const handshakeTimeout = 30 * time.Second

// newServer composes the SSH server from cfg: host key, authentication and
// the session middlewares, with launcher booting the VMs.
func newServer(cfg config, launcher krun.Launcher, logger *slog.Logger) (*ssh.Server, error) {
	signer, created, err := middleware.LoadOrCreateHostKey(cfg.HostKeyPath)
	if err != nil {
		return nil, err
	}
	if created {
		logger.Info("host key created", "path", cfg.HostKeyPath, "fingerprint", fingerprint(signer))
	} else {
		logger.Info("host key loaded", "path", cfg.HostKeyPath, "fingerprint", fingerprint(signer))
	}

	// The last middleware listed runs first: Limit rejects a session
	// before its VM boots, and Timeout watches the VM that VM booted.
	chain := []wish.Middleware{
		middleware.Route(),
		middleware.Timeout(
			middleware.WithSessionTimeout(cfg.SessionTimeout),
			middleware.WithIdleTimeout(cfg.IdleTimeout),
		),
		middleware.VM(launcher, middleware.WithRootfs(cfg.Rootfs)),
		middleware.Limit(
			middleware.WithMaxSessions(cfg.MaxSessions),
			middleware.WithMaxSessionsPerIP(cfg.MaxSessionsPerIP),
			middleware.WithMaxSessionsPerConnection(cfg.MaxSessionsPerConnection),
		),
		middleware.Logging(logger),
	}
	options := []ssh.Option{
		wish.WithAddress(cfg.ListenAddr),
		func(srv *ssh.Server) error {
			srv.AddHostKey(signer)
			srv.HandshakeTimeout = handshakeTimeout
			srv.ConnectionFailedCallback = func(conn net.Conn, err error) {
				logger.Info("connection failed", "remote", conn.RemoteAddr().String(), "err", err)
			}
			return nil
		},
		middleware.PasswordAuth(cfg.Username, cfg.Password, logger),
		middleware.Keepalive(cfg.KeepaliveInterval, cfg.KeepaliveCountMax, logger),
		middleware.RawPTY(),
		middleware.FilterRequests(append(slices.Clone(middleware.DefaultAcceptEnv), cfg.AcceptEnv...), logger),
		wish.WithMiddleware(chain...),
		// Subsystem requests bypass the middleware chain, so SFTP gets
		// the same chain for its own handler; sharing the chain's values
		// makes SFTP sessions count towards the same session limits.
		middleware.SFTP(chain...),
	}
	if cfg.AllowPasswordless {
		options = append(options, middleware.AllowPasswordless(logger))
	}

	srv, err := wish.NewServer(options...)
	if err != nil {
		return nil, fmt.Errorf("configure ssh server: %w", err)
	}
	return srv, nil
}

func fingerprint(signer ssh.Signer) string {
	return gossh.FingerprintSHA256(signer.PublicKey())
}
