package main

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
)

// sshKey is a key pair made by ssh-keygen for one test.
type sshKey struct {
	privatePath string
	publicLine  string
	fingerprint string
}

func newSSHKey(t *testing.T) sshKey {
	t.Helper()
	path := filepath.Join(t.TempDir(), "id_ed25519")
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test@throwawaysh", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	public, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	key, _, _, _, err := gossh.ParseAuthorizedKey(public)
	if err != nil {
		t.Fatal(err)
	}
	return sshKey{privatePath: path, publicLine: strings.TrimSpace(string(public)), fingerprint: gossh.FingerprintSHA256(key)}
}

// signer returns the key's private half for the x/crypto/ssh client.
func (k sshKey) signer(t *testing.T) gossh.Signer {
	t.Helper()
	pem, err := os.ReadFile(k.privatePath)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := gossh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	return signer
}

// writeAuthorizedKeys writes an authorized_keys file with keys, mode 0600,
// and returns its path.
func writeAuthorizedKeys(t *testing.T, keys ...sshKey) string {
	t.Helper()
	var lines strings.Builder
	lines.WriteString("# test keys\n")
	for _, k := range keys {
		lines.WriteString(k.publicLine + "\n")
	}
	path := filepath.Join(t.TempDir(), "authorized_keys")
	if err := os.WriteFile(path, []byte(lines.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runSSHWithKey runs the OpenSSH client as user with key as its only
// identity and public key authentication as its only method.
func (srv *testServer) runSSHWithKey(t *testing.T, user string, key sshKey, command string) sshResult {
	t.Helper()
	args := []string{
		"-F", "/dev/null",
		"-p", srv.port,
		"-l", user,
		"-i", key.privatePath,
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityAgent=none",
		"-o", "PreferredAuthentications=publickey",
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=10",
		"-o", "ControlMaster=no",
		"-o", "ControlPath=none",
		"127.0.0.1", command,
	}
	cmd := exec.Command(requireOpenSSH(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	return runClient(t, cmd)
}

func TestAuthPublicKeyOnly(t *testing.T) {
	listed, unlisted := newSSHKey(t), newSSHKey(t)
	cfg := testConfig(t, krtest.Rootfs(t, false))
	cfg.Password = ""
	cfg.AuthorizedKeys = writeAuthorizedKeys(t, listed)
	srv := startServer(t, cfg, &krtest.Launcher{})

	got := srv.runSSHWithKey(t, "test", listed, "echo in")
	if string(got.stdout) != "in\n" || got.status != 0 {
		t.Fatalf("listed key: stdout %q status %d, want %q and 0 (stderr %q)", got.stdout, got.status, "in\n", got.stderr)
	}
	if !logHasLine(srv, "auth accepted", "method=publickey", "user=test", "key="+listed.fingerprint, "key_comment=test@throwawaysh") {
		t.Errorf("no auth accepted line with the key's fingerprint and comment:\n%s", srv.logs.String())
	}
	if !logHasLine(srv, "session start", "key="+listed.fingerprint) {
		t.Errorf("session start does not carry the key's fingerprint:\n%s", srv.logs.String())
	}

	got = srv.runSSHWithKey(t, "test", unlisted, "echo in")
	if got.status != 255 || strings.Contains(string(got.stdout), "in") {
		t.Errorf("unlisted key: stdout %q status %d, want nothing and 255", got.stdout, got.status)
	}

	got = srv.runSSHWithKey(t, "root", listed, "echo in")
	if got.status != 255 || strings.Contains(string(got.stdout), "in") {
		t.Errorf("listed key for another user: stdout %q status %d, want nothing and 255", got.stdout, got.status)
	}

	// Without --password, password authentication is off.
	got = srv.runSSH(t, sshCall{command: "echo in", password: testPassword})
	if got.status != 255 || !strings.Contains(string(got.stderr), "Permission denied (publickey)") {
		t.Errorf("password login with keys only: status %d stderr %q, want 255 and publickey as the only method", got.status, got.stderr)
	}
}

func TestAuthPublicKeyBesidePassword(t *testing.T) {
	key := newSSHKey(t)
	cfg := testConfig(t, krtest.Rootfs(t, false))
	cfg.AuthorizedKeys = writeAuthorizedKeys(t, key)
	srv := startServer(t, cfg, &krtest.Launcher{})

	got := srv.runSSHWithKey(t, "test", key, "echo key")
	if string(got.stdout) != "key\n" || got.status != 0 {
		t.Errorf("key login: stdout %q status %d (stderr %q)", got.stdout, got.status, got.stderr)
	}
	got = srv.runSSH(t, sshCall{command: "echo password"})
	if string(got.stdout) != "password\n" || got.status != 0 {
		t.Errorf("password login: stdout %q status %d (stderr %q)", got.stdout, got.status, got.stderr)
	}
	var withKey, withoutKey int
	for _, line := range strings.Split(srv.logs.String(), "\n") {
		switch {
		case !strings.Contains(line, "session start"):
		case strings.Contains(line, "key="+key.fingerprint):
			withKey++
		case !strings.Contains(line, "key="):
			withoutKey++
		}
	}
	if withKey != 1 || withoutKey != 1 {
		t.Errorf("session start lines: %d with the key, %d without, want one each:\n%s", withKey, withoutKey, srv.logs.String())
	}
}

// unprovenSigner offers a key but cannot sign, so the client sends a
// public key query for it without a signature and nothing more.
type unprovenSigner struct{ gossh.Signer }

func (unprovenSigner) Sign(io.Reader, []byte) (*gossh.Signature, error) {
	return nil, errors.New("this key is offered but never proven")
}

func TestAuthIdentityFromProvenKeyOnly(t *testing.T) {
	offered, proven := newSSHKey(t), newSSHKey(t)
	cfg := testConfig(t, krtest.Rootfs(t, false))
	cfg.AuthorizedKeys = writeAuthorizedKeys(t, offered, proven)
	srv := startServer(t, cfg, &krtest.Launcher{})

	// The client first offers one authorized key without proving it,
	// then logs in with the other.
	attempts := []gossh.AuthMethod{
		gossh.PublicKeys(unprovenSigner{offered.signer(t)}),
		gossh.PublicKeys(proven.signer(t)),
	}
	client, err := gossh.Dial("tcp", srv.addr, &gossh.ClientConfig{
		User:            "test",
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
		AuthCallback: func(ctx *gossh.ClientAuthContext) (gossh.AuthMethod, error) {
			tried := 0
			for _, method := range ctx.TriedMethods {
				if method == "publickey" {
					tried++
				}
			}
			if tried >= len(attempts) {
				return nil, errors.New("every key was tried")
			}
			return attempts[tried], nil
		},
	})
	if err != nil {
		t.Fatalf("login with the second key failed: %v", err)
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := session.Output("echo in"); string(out) != "in\n" || err != nil {
		t.Fatalf("session: output %q err %v", out, err)
	}

	// The server's debug log shows that the first key was queried and
	// accepted as a candidate, so the client really offered it.
	if !logHasLine(srv, "public key offered", "key="+offered.fingerprint, "authorized=true") {
		t.Fatalf("no query for the offered key in the server log, so the test proves nothing:\n%s", srv.logs.String())
	}
	if !logHasLine(srv, "auth accepted", "key="+proven.fingerprint) {
		t.Errorf("auth accepted does not name the proven key:\n%s", srv.logs.String())
	}
	if logHasLine(srv, "auth accepted", "key="+offered.fingerprint) {
		t.Errorf("auth accepted names the key that was only offered:\n%s", srv.logs.String())
	}
	waitForLog(t, srv, "session end")
	for _, message := range []string{"session start", "session end"} {
		if !logHasLine(srv, message, "key="+proven.fingerprint) {
			t.Errorf("%s does not carry the proven key:\n%s", message, srv.logs.String())
		}
		if logHasLine(srv, message, "key="+offered.fingerprint) {
			t.Errorf("%s carries the key that was only offered:\n%s", message, srv.logs.String())
		}
	}
}

// logHasLine reports whether one line of the server's log contains every
// part.
func logHasLine(srv *testServer, parts ...string) bool {
	return slices.ContainsFunc(strings.Split(srv.logs.String(), "\n"), func(line string) bool {
		for _, part := range parts {
			if !strings.Contains(line, part) {
				return false
			}
		}
		return true
	})
}

// waitForLog waits up to 10 seconds for a log line containing message.
func waitForLog(t *testing.T, srv *testServer, message string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(srv.logs.String(), message) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the server log:\n%s", message, srv.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
