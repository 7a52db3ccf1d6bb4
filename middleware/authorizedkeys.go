package middleware

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	gossh "golang.org/x/crypto/ssh"
)

// AuthorizedKey is one key line of an OpenSSH authorized_keys file.
type AuthorizedKey struct {
	// Key is the public key. PublicKeyAuth compares it with the client's
	// key by their wire encodings.
	Key gossh.PublicKey
	// Comment is the text after the key on its line, often user@host.
	Comment string
	// Line is the key's 1-based line number in its file.
	Line int
}

// maxAuthorizedKeysBytes bounds the authorized_keys file read into memory.
// A thousand RSA 4096-bit keys take about 750 KiB.
const maxAuthorizedKeysBytes = 1 << 20

// LoadAuthorizedKeys reads an OpenSSH authorized_keys file: one public key
// per line as "TYPE BASE64 [COMMENT]", the format of ssh-keygen's .pub
// files, with blank lines and lines starting with # ignored.
//
// The error names the file, and the line number where a line is at fault.
// The file is rejected when it is missing, unreadable, not a regular file,
// larger than 1 MiB, writable by its group or by others (as OpenSSH's
// StrictModes rejects it), or contains no key. A line is rejected when it
// cannot be parsed, contains a certificate, or starts with key options such
// as from=, command= or restrict. Options are not supported, and skipping
// one would drop the restriction it requests.
func LoadAuthorizedKeys(path string) ([]AuthorizedKey, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("authorized keys file %s not found", path)
		}
		return nil, fmt.Errorf("open authorized keys file: %w", err)
	}
	defer f.Close()

	// The checks use the opened file, so a file swapped after the check
	// is not the one read.
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat authorized keys file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("authorized keys file %s is not a regular file (mode %s)", path, info.Mode())
	}
	if perm := info.Mode().Perm(); perm&0o022 != 0 {
		return nil, fmt.Errorf("authorized keys file %s is writable by group or others (mode %04o), so others could add keys; run chmod go-w %s", path, perm, path)
	}
	// NOTE: unlike OpenSSH's StrictModes, the owner of the file and the
	// modes of its parent directories are not checked.

	data, err := io.ReadAll(io.LimitReader(f, maxAuthorizedKeysBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read authorized keys file: %w", err)
	}
	if len(data) > maxAuthorizedKeysBytes {
		return nil, fmt.Errorf("authorized keys file %s is larger than %d bytes", path, maxAuthorizedKeysBytes)
	}

	keys, err := parseAuthorizedKeys(data, path)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("authorized keys file %s contains no key; add a line such as the content of ~/.ssh/id_ed25519.pub", path)
	}
	return keys, nil
}

// parseAuthorizedKeys parses data line by line; name is the file name for
// error messages. ssh.ParseAuthorizedKey alone skips lines it cannot parse,
// so each line goes to it separately.
func parseAuthorizedKeys(data []byte, name string) ([]AuthorizedKey, error) {
	var keys []AuthorizedKey
	for i, line := range bytes.Split(data, []byte("\n")) {
		number := i + 1
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}

		key, comment, options, _, err := gossh.ParseAuthorizedKey(line)
		if err != nil {
			// ParseAuthorizedKey wraps the cause for a line it skipped.
			if cause := errors.Unwrap(err); cause != nil {
				err = cause
			}
			return nil, fmt.Errorf("%s:%d: invalid key line (%v); want \"TYPE BASE64 [COMMENT]\" as in a .pub file", name, number, err)
		}
		if len(options) > 0 {
			return nil, fmt.Errorf("%s:%d: key options (%s) are not supported; remove them, or remove the line if the key must stay restricted", name, number, optionNames(options))
		}
		if _, ok := key.(*gossh.Certificate); ok {
			return nil, fmt.Errorf("%s:%d: certificates are not supported; list the plain public key instead", name, number)
		}
		keys = append(keys, AuthorizedKey{Key: key, Comment: comment, Line: number})
	}
	return keys, nil
}

// optionNames returns the names of authorized_keys options, without their
// values, joined by commas.
func optionNames(options []string) string {
	names := make([]string, len(options))
	for i, option := range options {
		names[i], _, _ = strings.Cut(option, "=")
	}
	return logSafe(strings.Join(names, ","))
}
