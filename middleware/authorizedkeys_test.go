package middleware_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/middleware"
)

// newSigner returns a fresh ed25519 key.
func newSigner(t *testing.T) gossh.Signer {
	t.Helper()
	_, private, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := gossh.NewSignerFromKey(private)
	if err != nil {
		t.Fatal(err)
	}
	return signer
}

// authorizedLine returns key as an authorized_keys line without the
// trailing newline.
func authorizedLine(key gossh.PublicKey) string {
	return strings.TrimSuffix(string(gossh.MarshalAuthorizedKey(key)), "\n")
}

// writeKeysFile writes content to a new file with mode perm and returns
// its path.
func writeKeysFile(t *testing.T, content string, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "authorized_keys")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	// Chmod after writing, because the umask may clear bits of perm.
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadAuthorizedKeysParsesLines(t *testing.T) {
	first := newSigner(t).PublicKey()
	private, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	second, err := gossh.NewPublicKey(&private.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	content := "# keys of the demo\n" +
		"\n" +
		authorizedLine(first) + " alice@laptop\r\n" +
		"   \t\n" +
		"  " + authorizedLine(second) + "\n"
	path := writeKeysFile(t, content, 0o644)

	keys, err := middleware.LoadAuthorizedKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("loaded %d keys, want 2", len(keys))
	}
	if !bytes.Equal(keys[0].Key.Marshal(), first.Marshal()) {
		t.Error("first key differs from the one written")
	}
	if keys[0].Comment != "alice@laptop" || keys[0].Line != 3 {
		t.Errorf("first key comment %q line %d, want alice@laptop and 3", keys[0].Comment, keys[0].Line)
	}
	if !bytes.Equal(keys[1].Key.Marshal(), second.Marshal()) {
		t.Error("second key differs from the one written")
	}
	if keys[1].Comment != "" || keys[1].Line != 5 {
		t.Errorf("second key comment %q line %d, want none and 5", keys[1].Comment, keys[1].Line)
	}
}

func TestLoadAuthorizedKeysErrors(t *testing.T) {
	key := newSigner(t).PublicKey()
	good := authorizedLine(key)
	fields := strings.Fields(good)

	authority := newSigner(t)
	cert := &gossh.Certificate{Key: key, CertType: gossh.UserCert, ValidPrincipals: []string{"test"}, ValidBefore: gossh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, authority); err != nil {
		t.Fatal(err)
	}
	rsaTyped := "ssh-rsa " + fields[1]

	tests := []struct {
		name    string
		content string
		perm    os.FileMode
		want    []string
		notWant string
	}{
		{"bad base64", good + "\n\nssh-ed25519 AAAA!!notbase64\n", 0o600,
			[]string{":3:", "invalid key line", "base64", "TYPE BASE64"}, ""},
		{"truncated key", "ssh-ed25519 " + fields[1][:20] + "\n", 0o600,
			[]string{":1:", "invalid key line"}, ""},
		{"type does not match the key", rsaTyped + "\n", 0o600,
			[]string{":1:", "type mismatch"}, ""},
		{"a word only", "hello\n", 0o600,
			[]string{":1:", "invalid key line"}, ""},
		{"from option", good + "\nfrom=\"10.0.0.0/8\" " + good + "\n", 0o600,
			[]string{":2:", "from", "not supported"}, "10.0.0.0"},
		{"command option", `command="/bin/secret-script --token abc" ` + good + "\n", 0o600,
			[]string{":1:", "command", "not supported"}, "secret-script"},
		{"restrict option", "restrict,pty " + good + "\n", 0o600,
			[]string{":1:", "restrict,pty", "not supported"}, ""},
		{"certificate", authorizedLine(cert) + "\n", 0o600,
			[]string{":1:", "certificates are not supported"}, ""},
		{"no keys", "# nothing here\n\n", 0o600,
			[]string{"contains no key"}, ""},
		{"empty file", "", 0o600,
			[]string{"contains no key"}, ""},
		{"world-writable", good + "\n", 0o646,
			[]string{"writable by group or others", "0646", "chmod go-w"}, ""},
		{"group-writable", good + "\n", 0o660,
			[]string{"writable by group or others", "0660"}, ""},
		{"larger than the limit", strings.Repeat("#"+strings.Repeat("x", 1023)+"\n", 1025), 0o600,
			[]string{"larger than"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeKeysFile(t, tt.content, tt.perm)
			_, err := middleware.LoadAuthorizedKeys(path)
			if err == nil {
				t.Fatal("LoadAuthorizedKeys accepted the file")
			}
			msg := err.Error()
			if !strings.Contains(msg, path) {
				t.Errorf("error %q does not name the file", msg)
			}
			for _, want := range tt.want {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
			if tt.notWant != "" && strings.Contains(msg, tt.notWant) {
				t.Errorf("error %q repeats the option value %q", msg, tt.notWant)
			}
		})
	}
}

func TestLoadAuthorizedKeysFileProblems(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-file")
	_, err := middleware.LoadAuthorizedKeys(missing)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing file: err = %v, want one naming %s and saying not found", err, missing)
	}

	dir := t.TempDir()
	_, err = middleware.LoadAuthorizedKeys(dir)
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: err = %v, want one naming %s and saying not a regular file", err, dir)
	}

	if os.Geteuid() == 0 {
		t.Log("skipping the unreadable file case: root reads any file")
		return
	}
	unreadable := writeKeysFile(t, authorizedLine(newSigner(t).PublicKey())+"\n", 0o000)
	_, err = middleware.LoadAuthorizedKeys(unreadable)
	if err == nil || !strings.Contains(err.Error(), unreadable) || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("unreadable file: err = %v, want one naming %s and saying permission denied", err, unreadable)
	}
}
