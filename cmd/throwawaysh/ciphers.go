package main

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"charm.land/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// defaultCiphers are the ciphers the server offers without --ciphers: those golang.org/x/crypto/ssh deems secure, except
// chacha20-poly1305@openssh.com.
//
// OpenSSH clients pick ChaCha20-Poly1305 first when the server offers it,
// and x/crypto has no ChaCha20 assembly for amd64: there it cut uploads by
// about a third in docs/benchmarks.md. Without it OpenSSH clients pick
// aes128-ctr, which Go runs on the CPU's AES instructions. Leaving it out
// also keeps clients without strict key exchange off one of the two
// cipher modes the Terrapin attack (CVE-2023-48795) works against.
var defaultCiphers = []string{
	gossh.CipherAES128GCM,
	gossh.CipherAES256GCM,
	gossh.CipherAES128CTR,
	gossh.CipherAES192CTR,
	gossh.CipherAES256CTR,
}

// supportedCiphers are the names --ciphers accepts.
func supportedCiphers() []string {
	return gossh.SupportedAlgorithms().Ciphers
}

// parseCiphers reads a --ciphers value as sshd_config's Ciphers does: a
// comma-separated list replaces the default, and a list after "+" or "-"
// adds its ciphers to the default or takes them out of it. An empty value
// means the default.
func parseCiphers(value string) ([]string, error) {
	invalid := func(reason string) error {
		return fmt.Errorf("invalid --ciphers (SSH_CIPHERS) %q: %s; supported: %s, or a list after + or - to add to or take from the default %s",
			value, reason, strings.Join(supportedCiphers(), ","), strings.Join(defaultCiphers, ","))
	}
	text := strings.TrimSpace(value)
	if text == "" {
		return slices.Clone(defaultCiphers), nil
	}
	if text[0] == '^' {
		return nil, invalid("^ is not supported: the client picks by its own order, so the order of the server's list has no effect")
	}
	op := text[0]
	if op == '+' || op == '-' {
		text = text[1:]
	}
	var names []string
	for name := range strings.SplitSeq(text, ",") {
		name = strings.TrimSpace(name)
		switch {
		case name == "":
			return nil, invalid("empty cipher name")
		case op == '-' && removable(name):
			// As with sshd, a list to take out may name ciphers that
			// are not offered and use the wildcards * and ?.
			names = append(names, name)
		case !slices.Contains(supportedCiphers(), name):
			return nil, invalid(fmt.Sprintf("unknown or insecure cipher %q", name))
		case !slices.Contains(names, name):
			names = append(names, name)
		}
	}
	switch op {
	case '+':
		ciphers := slices.Clone(defaultCiphers)
		for _, name := range names {
			if !slices.Contains(ciphers, name) {
				ciphers = append(ciphers, name)
			}
		}
		return ciphers, nil
	case '-':
		ciphers := slices.DeleteFunc(slices.Clone(defaultCiphers), func(name string) bool {
			return slices.ContainsFunc(names, func(pattern string) bool {
				matched, _ := path.Match(pattern, name)
				return matched
			})
		})
		if len(ciphers) == 0 {
			return nil, invalid("it takes out every cipher")
		}
		return ciphers, nil
	}
	return names, nil
}

// removable reports whether name is valid in a list after "-": a cipher
// that golang.org/x/crypto/ssh supports or lists as insecure, or a pattern
// with * or ? that matches one.
func removable(name string) bool {
	known := append(supportedCiphers(), gossh.InsecureAlgorithms().Ciphers...)
	return slices.ContainsFunc(known, func(cipher string) bool {
		matched, err := path.Match(name, cipher)
		return err == nil && matched
	})
}

// withCiphers makes the server offer only ciphers, or defaultCiphers when
// ciphers is empty. It wraps any ServerConfigCallback set before it.
func withCiphers(ciphers []string) ssh.Option {
	if len(ciphers) == 0 {
		ciphers = defaultCiphers
	}
	return func(srv *ssh.Server) error {
		previous := srv.ServerConfigCallback
		srv.ServerConfigCallback = func(ctx ssh.Context) *gossh.ServerConfig {
			var config *gossh.ServerConfig
			if previous != nil {
				config = previous(ctx)
			}
			if config == nil {
				config = &gossh.ServerConfig{}
			}
			config.Ciphers = slices.Clone(ciphers)
			return config
		}
		return nil
	}
}
