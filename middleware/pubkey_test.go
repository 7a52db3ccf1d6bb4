package middleware_test

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"
	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/middleware"
)

// printIdentity is a middleware that writes the session's key fingerprint,
// "none" when it has none, and ends the session.
func printIdentity(ssh.Handler) ssh.Handler {
	return func(s ssh.Session) {
		fingerprint := middleware.KeyFingerprint(s.Context())
		if fingerprint == "" {
			fingerprint = "none"
		}
		_, _ = io.WriteString(s, fingerprint)
		_ = s.Exit(0)
	}
}

// sessionIdentity dials addr with auth and returns what printIdentity
// wrote, or the dial error.
func sessionIdentity(t *testing.T, addr, user string, auth ...gossh.AuthMethod) (string, error) {
	t.Helper()
	client, err := gossh.Dial("tcp", addr, &gossh.ClientConfig{
		User:            user,
		Auth:            auth,
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		return "", err
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := session.Output("")
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	return string(out), nil
}

func TestPublicKeyAuthChecksUserAndKey(t *testing.T) {
	listed, other := newSigner(t), newSigner(t)
	keys := []middleware.AuthorizedKey{{Key: listed.PublicKey(), Line: 1}}
	addr := serve(t, middleware.PublicKeyAuth("alice", keys, nil), wish.WithMiddleware(printIdentity))

	got, err := sessionIdentity(t, addr, "alice", gossh.PublicKeys(listed))
	if err != nil {
		t.Fatalf("listed key for alice rejected: %v", err)
	}
	if want := gossh.FingerprintSHA256(listed.PublicKey()); got != want {
		t.Errorf("session identity = %q, want %q", got, want)
	}

	if _, err := sessionIdentity(t, addr, "alice", gossh.PublicKeys(other)); err == nil {
		t.Error("a key that is not listed was accepted")
	}
	if _, err := sessionIdentity(t, addr, "bob", gossh.PublicKeys(listed)); err == nil {
		t.Error("the listed key was accepted for another user name")
	}
}

func TestPublicKeyAuthEmptyUserMatchesNoOne(t *testing.T) {
	signer := newSigner(t)
	keys := []middleware.AuthorizedKey{{Key: signer.PublicKey(), Line: 1}}
	addr := serve(t, middleware.PublicKeyAuth("", keys, nil), wish.WithMiddleware(printIdentity))

	if _, err := sessionIdentity(t, addr, "", gossh.PublicKeys(signer)); err == nil {
		t.Error("the listed key was accepted for the empty user name")
	}
}

// unprovenSigner offers a key but cannot sign, so a client that uses it
// sends a public key query without a signature and nothing more.
type unprovenSigner struct{ gossh.Signer }

func (unprovenSigner) Sign(io.Reader, []byte) (*gossh.Signature, error) {
	return nil, errors.New("this key is offered but never proven")
}

func TestKeyFingerprintIgnoresOfferedKey(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	offered := newSigner(t)
	keys := []middleware.AuthorizedKey{{Key: offered.PublicKey(), Line: 1}}
	addr := serve(t,
		middleware.PublicKeyAuth("u", keys, logger),
		middleware.PasswordAuth("u", "p", logger),
		wish.WithMiddleware(printIdentity))

	// The client offers the authorized key, which the server accepts,
	// fails to sign with it and logs in with the password.
	got, err := sessionIdentity(t, addr, "u",
		gossh.PublicKeys(unprovenSigner{offered}),
		gossh.Password("p"))
	if err != nil {
		t.Fatalf("password login after an unproven key failed: %v", err)
	}

	fingerprint := gossh.FingerprintSHA256(offered.PublicKey())
	if !hasLogLine(logs.String(), "public key offered", "key="+fingerprint, "authorized=true") {
		t.Fatalf("server log shows no query for the offered key, so the test proves nothing:\n%s", logs.String())
	}
	if got != "none" {
		t.Errorf("session identity = %q after password login, want none: an offered key became the identity", got)
	}
}

// hasLogLine reports whether one line of logs contains every part.
func hasLogLine(logs string, parts ...string) bool {
	for _, line := range strings.Split(logs, "\n") {
		found := true
		for _, part := range parts {
			found = found && strings.Contains(line, part)
		}
		if found {
			return true
		}
	}
	return false
}
