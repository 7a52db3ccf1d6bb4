package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// hostKeyOf connects to srv and returns the host key it presented.
func hostKeyOf(t *testing.T, srv *testServer) []byte {
	t.Helper()
	var key []byte
	client, err := gossh.Dial("tcp", srv.addr, &gossh.ClientConfig{
		User: "test",
		Auth: []gossh.AuthMethod{gossh.Password(testPassword)},
		HostKeyCallback: func(_ string, _ net.Addr, k gossh.PublicKey) error {
			key = k.Marshal()
			return nil
		},
		Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = client.Close()
	return key
}

func TestHostKeyStableAcrossRestarts(t *testing.T) {
	cfg := testConfig(t, krtest.Rootfs(t, false))

	first := startServer(t, cfg, &krtest.Launcher{})
	key1 := hostKeyOf(t, first)

	info, err := os.Stat(cfg.HostKeyPath)
	if err != nil {
		t.Fatalf("host key file was not created: %v", err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("host key mode = %o, want 600", mode)
	}
	data, err := os.ReadFile(cfg.HostKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := gossh.ParsePrivateKey(data)
	if err != nil {
		t.Fatalf("host key file does not parse: %v", err)
	}
	if signer.PublicKey().Type() != gossh.KeyAlgoED25519 {
		t.Errorf("host key type = %s, want ed25519", signer.PublicKey().Type())
	}

	second := startServer(t, cfg, &krtest.Launcher{})
	key2 := hostKeyOf(t, second)
	if string(key1) != string(key2) {
		t.Error("the host key changed across a restart")
	}
}

func TestHostKeyCorruptFileStopsServer(t *testing.T) {
	cfg := testConfig(t, krtest.Rootfs(t, false))
	garbage := []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n")
	if err := os.WriteFile(cfg.HostKeyPath, garbage, 0o600); err != nil {
		t.Fatal(err)
	}

	_, err := newServer(cfg, &krtest.Launcher{}, middleware.NewTracker(), newLogger(cfg, &syncBuffer{}))
	if err == nil {
		t.Fatal("newServer accepted a corrupt host key")
	}
	if !strings.Contains(err.Error(), cfg.HostKeyPath) {
		t.Errorf("error %q does not name the key file", err)
	}
	after, _ := os.ReadFile(cfg.HostKeyPath)
	if string(after) != string(garbage) {
		t.Error("the corrupt host key file was replaced")
	}
}

func TestHostKeyUnreadableFileStopsServer(t *testing.T) {
	if os.Geteuid() == 0 {
		// Root reads files whatever their mode; a directory in the key's
		// place is unreadable for everyone.
		cfg := testConfig(t, krtest.Rootfs(t, false))
		if err := os.Mkdir(cfg.HostKeyPath, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := newServer(cfg, &krtest.Launcher{}, middleware.NewTracker(), newLogger(cfg, &syncBuffer{})); err == nil {
			t.Fatal("newServer accepted a directory as the host key")
		}
		return
	}
	cfg := testConfig(t, krtest.Rootfs(t, false))
	if err := os.WriteFile(cfg.HostKeyPath, []byte("x"), 0o000); err != nil {
		t.Fatal(err)
	}
	if _, err := newServer(cfg, &krtest.Launcher{}, middleware.NewTracker(), newLogger(cfg, &syncBuffer{})); err == nil {
		t.Fatal("newServer accepted an unreadable host key")
	}
}

func TestHostKeyCreatedInMissingDirectoryFails(t *testing.T) {
	cfg := testConfig(t, krtest.Rootfs(t, false))
	cfg.HostKeyPath = filepath.Join(t.TempDir(), "no-such-dir", "key")
	_, err := newServer(cfg, &krtest.Launcher{}, middleware.NewTracker(), newLogger(cfg, &syncBuffer{}))
	if err == nil || !strings.Contains(err.Error(), "no-such-dir") {
		t.Fatalf("err = %v, want an error naming the missing directory", err)
	}
}

func TestHostKeyReadableByOthersRejected(t *testing.T) {
	cfg := testConfig(t, krtest.Rootfs(t, false))
	if _, _, err := middleware.LoadOrCreateHostKey(cfg.HostKeyPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg.HostKeyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := newServer(cfg, &krtest.Launcher{}, middleware.NewTracker(), newLogger(cfg, &syncBuffer{}))
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("err = %v, want a refusal that says to chmod 600", err)
	}
}

func TestHostKeyDanglingLinkFails(t *testing.T) {
	cfg := testConfig(t, krtest.Rootfs(t, false))
	if err := os.Symlink(filepath.Join(t.TempDir(), "gone"), cfg.HostKeyPath); err != nil {
		t.Fatal(err)
	}
	_, err := newServer(cfg, &krtest.Launcher{}, middleware.NewTracker(), newLogger(cfg, &syncBuffer{}))
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("err = %v, want an error about the dangling link", err)
	}
}
