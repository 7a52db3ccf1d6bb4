package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"

	"charm.land/ssh"
	"charm.land/wish/v2"
	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/krun"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// newServer composes the SSH server from cfg: host key, authentication,
// limits on unauthenticated connections and the session middlewares, with
// launcher booting the VMs and sessions recording the live sessions for
// the shutdown. It records no metrics.
func newServer(cfg config, launcher krun.Launcher, sessions *middleware.Tracker, logger *slog.Logger) (*ssh.Server, error) {
	return newServerWithMetrics(cfg, launcher, sessions, nil, logger)
}

// newServerWithMetrics is newServer that also records into metrics, which
// may be nil.
func newServerWithMetrics(cfg config, launcher krun.Launcher, sessions *middleware.Tracker, metrics *middleware.Metrics, logger *slog.Logger) (*ssh.Server, error) {
	signer, created, err := middleware.LoadOrCreateHostKey(cfg.HostKeyPath)
	if err != nil {
		return nil, err
	}
	if created {
		logger.Info("host key created", "path", cfg.HostKeyPath, "fingerprint", fingerprint(signer))
	} else {
		logger.Info("host key loaded", "path", cfg.HostKeyPath, "fingerprint", fingerprint(signer))
	}

	vmOptions := []middleware.VMOption{
		middleware.WithRootfs(cfg.Rootfs),
		middleware.WithResources(cfg.VMCPUs, cfg.VMMemoryMiB),
		middleware.WithGuestNetwork(cfg.GuestNetwork == "tsi"),
		middleware.WithSessionDisk(cfg.SessionDiskMiB),
		middleware.WithRuntimeDir(cfg.RuntimeDir),
	}
	// The last middleware listed runs first: Limit rejects a session
	// before its VM boots, the tracker can end it from then on, and
	// Timeout watches the VM that VM booted.
	chain := []wish.Middleware{
		middleware.Route(),
		middleware.Timeout(
			middleware.WithSessionTimeout(cfg.SessionTimeout),
			middleware.WithIdleTimeout(cfg.IdleTimeout),
		),
		middleware.VM(launcher, vmOptions...),
		sessions.Middleware(),
		middleware.Limit(
			middleware.WithMaxSessions(cfg.MaxSessions),
			middleware.WithMaxSessionsPerIP(cfg.MaxSessionsPerIP),
			middleware.WithMaxSessionsPerConnection(cfg.MaxSessionsPerConnection),
		),
		metrics.Middleware(),
		middleware.Logging(logger),
	}
	options := []ssh.Option{
		wish.WithAddress(cfg.ListenAddr),
		// First, so that it wraps the TCP connection itself.
		middleware.QuickAck(),
		func(srv *ssh.Server) error {
			srv.AddHostKey(signer)
			srv.Version = serverVersion
			// The deadline covers key exchange and authentication,
			// so it also frees the places that LimitStartups counts.
			srv.HandshakeTimeout = cfg.HandshakeTimeout
			srv.ConnectionFailedCallback = func(conn net.Conn, err error) {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					logger.Info("handshake timed out", "remote", conn.RemoteAddr().String(), "timeout", cfg.HandshakeTimeout, "setting", "--handshake-timeout")
					return
				}
				logger.Info("connection failed", "remote", conn.RemoteAddr().String(), "err", err)
			}
			return nil
		},
		withCiphers(cfg.Ciphers),
		middleware.RawPTY(),
		middleware.FilterRequests(append(slices.Clone(middleware.DefaultAcceptEnv), cfg.AcceptEnv...), logger),
		// As sshd's MaxSessions: a session channel over the limit is
		// refused when it opens, so an OpenSSH client sharing the
		// connection (ControlMaster) opens a connection of its own for
		// it. Channels that wait for their shell or exec request count too.
		middleware.LimitSessionChannels(cfg.MaxSessionsPerConnection, logger),
		metrics.CountRejectedChannels(),
		wish.WithMiddleware(chain...),
		// Subsystem requests bypass the middleware chain, so SFTP gets
		// the same chain for its own handler; sharing the chain's values
		// makes SFTP sessions count towards the same session limits.
		middleware.SFTP(chain...),
	}
	auth, err := authOptions(cfg, logger)
	if err != nil {
		return nil, err
	}
	options = append(options, auth...)
	options = append(options, metrics.CountAuthFailures(), middleware.TimeConnections())
	// Last, so that they wrap the connection callbacks that the options
	// above set.
	options = append(options,
		middleware.Keepalive(cfg.KeepaliveInterval, cfg.KeepaliveCountMax, logger),
		middleware.LimitStartups(cfg.MaxStartups, cfg.PerSourceMaxStartups, logger),
		metrics.CountRejectedConnections(),
	)

	srv, err := wish.NewServer(options...)
	if err != nil {
		return nil, fmt.Errorf("configure ssh server: %w", err)
	}
	return srv, nil
}

// serverVersion is the software version in the server's SSH banner. OpenSSH
// clients use their own protocol extensions only with servers whose
// version starts with "OpenSSH". One of them is eow@openssh.com, sent when
// the client's output reader went away, as in `ssh host producer | head`,
// so that the command can end as under sshd. The rest names this server.
const serverVersion = "OpenSSH_compatible throwawaysh"

func fingerprint(signer ssh.Signer) string {
	return gossh.FingerprintSHA256(signer.PublicKey())
}

// authOptions returns the server options for the authentication methods
// cfg enables, and the tracking of failed attempts.
func authOptions(cfg config, logger *slog.Logger) ([]ssh.Option, error) {
	// With no method at all the SSH library would let every client in.
	if cfg.Password == "" && cfg.AuthorizedKeys == "" && !cfg.AllowPasswordless {
		return nil, errors.New("no authentication method configured: set --password, --authorized-keys or --allow-passwordless")
	}

	var options []ssh.Option
	if cfg.Password != "" {
		options = append(options, middleware.PasswordAuth(cfg.Username, cfg.Password, logger))
	}
	if cfg.AuthorizedKeys != "" {
		keys, err := middleware.LoadAuthorizedKeys(cfg.AuthorizedKeys)
		if err != nil {
			return nil, err
		}
		logger.Info("authorized keys loaded", "path", cfg.AuthorizedKeys, "keys", len(keys), "user", cfg.Username)
		options = append(options, middleware.PublicKeyAuth(cfg.Username, keys, logger))
	}
	if cfg.AllowPasswordless {
		options = append(options, middleware.AllowPasswordless(logger))
	}
	tracker := middleware.NewFailureTracker(cfg.authFailures)
	return append(options, middleware.TrackAuthFailures(tracker, logger)), nil
}
