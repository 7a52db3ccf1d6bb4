package middleware

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"charm.land/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// PasswordAuth returns a server option that accepts the password method
// for exactly one user name and password. Both are compared in constant
// time, so response timing reveals nothing about how much of a guess was
// right. An empty password is never accepted, as with OpenSSH's default
// PermitEmptyPasswords no. Failures are logged with the user name and
// remote address, never with the password. A nil logger discards.
func PasswordAuth(username, password string, logger *slog.Logger) ssh.Option {
	if logger == nil {
		logger = discardLogger
	}
	// Hashing first gives both sides the same length, which
	// subtle.ConstantTimeCompare needs to run in constant time.
	wantUser := sha256.Sum256([]byte(username))
	wantPassword := sha256.Sum256([]byte(password))

	return func(srv *ssh.Server) error {
		srv.PasswordHandler = func(ctx ssh.Context, given string) bool {
			gotUser := sha256.Sum256([]byte(ctx.User()))
			gotPassword := sha256.Sum256([]byte(given))
			userOK := subtle.ConstantTimeCompare(gotUser[:], wantUser[:])
			passwordOK := subtle.ConstantTimeCompare(gotPassword[:], wantPassword[:])
			if userOK&passwordOK == 1 && password != "" {
				return true
			}
			logger.Warn("auth failed", "method", "password", "user", logSafe(ctx.User()), "remote", remoteString(ctx))
			return false
		}
		return nil
	}
}

// AllowPasswordless returns a server option that accepts SSH's "none"
// authentication method for any user name, so anyone who can reach the
// port gets a session. Other configured methods keep working; clients
// try "none" first and so never reach them. A nil logger discards.
func AllowPasswordless(logger *slog.Logger) ssh.Option {
	if logger == nil {
		logger = discardLogger
	}
	return func(srv *ssh.Server) error {
		previous := srv.ServerConfigCallback
		srv.ServerConfigCallback = func(ctx ssh.Context) *gossh.ServerConfig {
			config := &gossh.ServerConfig{}
			if previous != nil {
				config = previous(ctx)
			}
			config.NoClientAuth = true
			config.NoClientAuthCallback = func(meta gossh.ConnMetadata) (*gossh.Permissions, error) {
				logger.Debug("auth accepted", "method", "none", "user", logSafe(meta.User()), "remote", meta.RemoteAddr().String())
				return nil, nil
			}
			return config
		}
		return nil
	}
}

func remoteString(ctx ssh.Context) string {
	if addr := ctx.RemoteAddr(); addr != nil {
		return addr.String()
	}
	return "unknown"
}

// maxLoggedBytes bounds a client-chosen string in a log line.
const maxLoggedBytes = 128

// logSafe returns s fit for a log line: quoted with escapes when it holds
// control characters or invalid UTF-8, so a crafted user name cannot start
// a fake log line, and cut to maxLoggedBytes.
func logSafe(s string) string {
	cut := false
	if len(s) > maxLoggedBytes {
		s, cut = s[:maxLoggedBytes], true
	}
	if !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl) {
		s = strconv.Quote(s)
	}
	if cut {
		s += "..."
	}
	return s
}
