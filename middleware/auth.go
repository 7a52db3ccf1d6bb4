package middleware

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"slices"
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
// PermitEmptyPasswords no. It logs "auth accepted" at info level and a
// rejection at debug level, with the user name and remote address and
// never the password. TrackAuthFailures logs failures with a count and
// slows down repeated ones. A nil logger discards.
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
				logger.Info("auth accepted", "method", "password", "user", logSafe(ctx.User()), "remote", remoteString(ctx))
				return true
			}
			logger.Debug("password rejected", "user", logSafe(ctx.User()), "remote", remoteString(ctx))
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

// PublicKeyAuth returns a server option that accepts the publickey method
// for the user name username and the keys in keys, as sshd does with that
// user's authorized_keys file. Keys are compared by their wire encodings;
// an empty username matches no one.
//
// The SSH library calls the key check for every key a client offers,
// including queries that carry no signature, so an offered key is logged
// at debug level only ("public key offered"). "auth accepted" is logged at info level
// with the key's SHA256 fingerprint once the client has proved it holds
// the key, and only that key becomes the session's identity (see
// KeyFingerprint). A nil logger discards.
func PublicKeyAuth(username string, keys []AuthorizedKey, logger *slog.Logger) ssh.Option {
	if logger == nil {
		logger = discardLogger
	}
	keys = slices.Clone(keys)
	wantUser := sha256.Sum256([]byte(username))

	// authorizedKey returns the entry of keys that matches key, or nil.
	// It compares with every entry, so the time taken does not depend
	// on where a match sits.
	authorizedKey := func(key gossh.PublicKey) *AuthorizedKey {
		var found *AuthorizedKey
		for i := range keys {
			if ssh.KeysEqual(keys[i].Key, key) && found == nil {
				found = &keys[i]
			}
		}
		return found
	}

	return func(srv *ssh.Server) error {
		srv.PublicKeyHandler = func(ctx ssh.Context, key ssh.PublicKey) bool {
			gotUser := sha256.Sum256([]byte(ctx.User()))
			userOK := subtle.ConstantTimeCompare(gotUser[:], wantUser[:]) == 1 && username != ""
			ok := authorizedKey(key) != nil && userOK
			logger.Debug("public key offered", "user", logSafe(ctx.User()), "remote", remoteString(ctx),
				"key", gossh.FingerprintSHA256(key), "authorized", ok)
			return ok
		}

		previous := srv.ServerConfigCallback
		srv.ServerConfigCallback = func(ctx ssh.Context) *gossh.ServerConfig {
			config := &gossh.ServerConfig{}
			if previous != nil {
				config = previous(ctx)
			}
			verified := config.VerifiedPublicKeyCallback
			// x/crypto calls this only after the signature made with
			// key has been verified, so key is the proven one.
			config.VerifiedPublicKeyCallback = func(meta gossh.ConnMetadata, key gossh.PublicKey, perms *gossh.Permissions, algorithm string) (*gossh.Permissions, error) {
				if verified != nil {
					var err error
					if perms, err = verified(meta, key, perms, algorithm); err != nil {
						return perms, err
					}
				}
				attrs := []any{
					"method", "publickey", "user", logSafe(meta.User()), "remote", meta.RemoteAddr().String(),
					"key", gossh.FingerprintSHA256(key), "algorithm", algorithm,
				}
				if entry := authorizedKey(key); entry != nil {
					attrs = append(attrs, "key_line", entry.Line)
					if entry.Comment != "" {
						attrs = append(attrs, "key_comment", logSafe(entry.Comment))
					}
				}
				logger.Info("auth accepted", attrs...)
				return perms, nil
			}
			return config
		}
		return nil
	}
}

// KeyFingerprint returns the SHA256 fingerprint ("SHA256:...") of the
// public key the client authenticated the connection with, or "" when it
// used another method. The key comes from the handshake's final
// Permissions: x/crypto/ssh returns the ones that the public key callback
// produced for the key whose signature it verified, and charm.land/ssh
// reads the key from them after the handshake. A key that was only
// offered never ends up there.
func KeyFingerprint(ctx ssh.Context) string {
	key, ok := ctx.Value(ssh.ContextKeyPublicKey).(ssh.PublicKey)
	if !ok || key == nil {
		return ""
	}
	return gossh.FingerprintSHA256(key)
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
