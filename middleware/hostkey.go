package middleware

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	gossh "golang.org/x/crypto/ssh"
)

// LoadOrCreateHostKey reads the SSH host key at path, or creates an
// ed25519 key there (OpenSSH format, mode 0600) when no file exists. It
// reports whether it created the key. A file that exists but cannot be read
// or parsed is an error: replacing it would change the server's identity
// and make every client warn about a possible attack.
//
// Like sshd, it rejects a key file that group or others may read, because
// anyone who reads it can impersonate the server.
func LoadOrCreateHostKey(path string) (gossh.Signer, bool, error) {
	if info, err := os.Stat(path); err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("host key %q is readable by others (mode %04o); run chmod 600 %s", path, info.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		signer, perr := gossh.ParsePrivateKey(data)
		if perr != nil {
			return nil, false, fmt.Errorf("parse host key %q: %w (fix or remove the file; a new key is created only when none exists)", path, perr)
		}
		return signer, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("read host key %q: %w", path, err)
	}

	signer, err := createHostKey(path)
	if err != nil {
		return nil, false, err
	}
	return signer, true, nil
}

func createHostKey(path string) (gossh.Signer, error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("create host key %q: the path is a symbolic link to a missing file; remove it or point it at a key", path)
	}
	dir := filepath.Dir(path)
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		return nil, fmt.Errorf("create host key %q: directory %q does not exist; create it or choose another --host-key-path", path, dir)
	}
	_, private, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate host key: %w", err)
	}
	block, err := gossh.MarshalPrivateKey(private, "throwawaysh host key")
	if err != nil {
		return nil, fmt.Errorf("encode host key: %w", err)
	}
	signer, err := gossh.NewSignerFromKey(private)
	if err != nil {
		return nil, fmt.Errorf("use host key: %w", err)
	}

	// Write to a temporary file and link it into place, so a crash never
	// leaves a truncated key, and two servers starting at once cannot
	// overwrite each other's key: os.Link fails if path exists.
	tmp, err := os.CreateTemp(dir, ".host-key-*")
	if err != nil {
		return nil, fmt.Errorf("create host key %q: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return nil, fmt.Errorf("create host key %q: %w", path, err)
	}
	if _, err := tmp.Write(pem.EncodeToMemory(block)); err != nil {
		_ = tmp.Close()
		return nil, fmt.Errorf("write host key %q: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return nil, fmt.Errorf("write host key %q: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write host key %q: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("create host key %q: %w", path, err)
	}
	return signer, nil
}
