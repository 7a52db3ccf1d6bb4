package main

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestParseCiphers(t *testing.T) {
	tests := []struct {
		value string
		want  []string
	}{
		{"", defaultCiphers},
		{"  ", defaultCiphers},
		{"aes256-gcm@openssh.com", []string{"aes256-gcm@openssh.com"}},
		{"aes256-ctr, aes128-gcm@openssh.com,aes256-ctr", []string{"aes256-ctr", "aes128-gcm@openssh.com"}},
		{"+chacha20-poly1305@openssh.com", append(slices.Clone(defaultCiphers), "chacha20-poly1305@openssh.com")},
		{"+aes128-ctr", defaultCiphers},
		{"-aes128-ctr,aes192-ctr", []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes256-ctr"}},
		// As with sshd: a list to take out may name ciphers that are not
		// offered, and use wildcards.
		{"-aes128-cbc,3des-cbc,chacha20-poly1305@openssh.com", defaultCiphers},
		{"-*-ctr", []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com"}},
		{"-aes???-gcm@openssh.com", []string{"aes128-ctr", "aes192-ctr", "aes256-ctr"}},
	}
	for _, tt := range tests {
		got, err := parseCiphers(tt.value)
		if err != nil {
			t.Errorf("parseCiphers(%q): %v", tt.value, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("parseCiphers(%q) = %v, want %v", tt.value, got, tt.want)
		}
	}
	if slices.Contains(defaultCiphers, "chacha20-poly1305@openssh.com") {
		t.Errorf("defaultCiphers = %v, which offers chacha20-poly1305@openssh.com", defaultCiphers)
	}
}

func TestParseCiphersRejects(t *testing.T) {
	tests := []struct {
		value  string
		reason string
	}{
		{"aes128-cbc", `unknown or insecure cipher "aes128-cbc"`},
		{"3des-cbc,aes128-ctr", `unknown or insecure cipher "3des-cbc"`},
		{"aes128-ctr,,aes256-ctr", "empty cipher name"},
		{"+", "empty cipher name"},
		{"^aes128-ctr", "^ is not supported"},
		{"-" + strings.Join(defaultCiphers, ","), "takes out every cipher"},
		{"-aes*", "takes out every cipher"},
		{"-aes128-ctr,bogus", `unknown or insecure cipher "bogus"`},
		{"-*bogus*", `unknown or insecure cipher "*bogus*"`},
		{"+aes*", `unknown or insecure cipher "aes*"`},
	}
	for _, tt := range tests {
		_, err := parseCiphers(tt.value)
		if err == nil {
			t.Errorf("parseCiphers(%q) succeeded", tt.value)
			continue
		}
		for _, want := range []string{"--ciphers", "SSH_CIPHERS", `"` + tt.value + `"`, tt.reason, "supported: aes128-gcm@openssh.com,", "chacha20-poly1305@openssh.com"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("parseCiphers(%q) error %q lacks %q", tt.value, err, want)
			}
		}
	}
}

// negotiatedCipher runs the OpenSSH client with -v against srv and returns
// the cipher it reports for the server-to-client direction, with its
// output when it failed.
func negotiatedCipher(t *testing.T, srv *testServer, options ...string) (cipher string, result sshResult) {
	t.Helper()
	result = srv.runSSH(t, sshCall{options: append([]string{"-v"}, options...), command: "true"})
	match := regexp.MustCompile(`kex: server->client cipher: (\S+)`).FindSubmatch(result.stderr)
	if match == nil {
		return "", result
	}
	return string(match[1]), result
}

func TestCiphersOfferedToOpenSSH(t *testing.T) {
	requireOpenSSH(t)
	rootDir := krtestRootfs(t)

	t.Run("default", func(t *testing.T) {
		srv := startServer(t, testConfig(t, rootDir), testLauncher())
		cipher, result := negotiatedCipher(t, srv)
		if result.status != 0 || cipher != "aes128-ctr" {
			t.Errorf("default client got cipher %q, status %d, want aes128-ctr and 0; stderr:\n%s", cipher, result.status, result.stderr)
		}
		cipher, result = negotiatedCipher(t, srv, "-c", "aes256-gcm@openssh.com")
		if result.status != 0 || cipher != "aes256-gcm@openssh.com" {
			t.Errorf("-c aes256-gcm@openssh.com got cipher %q, status %d; stderr:\n%s", cipher, result.status, result.stderr)
		}
		_, result = negotiatedCipher(t, srv, "-c", "chacha20-poly1305@openssh.com")
		if result.status != 255 || !strings.Contains(string(result.stderr), "no matching cipher found") {
			t.Errorf("-c chacha20-poly1305@openssh.com: status %d, want 255 with \"no matching cipher found\"; stderr:\n%s", result.status, result.stderr)
		}
	})

	t.Run("chacha20 added", func(t *testing.T) {
		cfg := testConfig(t, rootDir)
		var err error
		if cfg.Ciphers, err = parseCiphers("+chacha20-poly1305@openssh.com"); err != nil {
			t.Fatal(err)
		}
		srv := startServer(t, cfg, testLauncher())
		cipher, result := negotiatedCipher(t, srv)
		if result.status != 0 || cipher != "chacha20-poly1305@openssh.com" {
			t.Errorf("default client got cipher %q, status %d, want chacha20-poly1305@openssh.com and 0; stderr:\n%s", cipher, result.status, result.stderr)
		}
	})
}
