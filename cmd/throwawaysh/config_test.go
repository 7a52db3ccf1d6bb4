package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// configVariables are every variable the service reads; each test starts
// with all of them unset.
var configVariables = []string{
	"SSH_ADDR", "SSH_HOST_KEY_PATH", "SSH_ROOTFS", "SSH_USERNAME", "SSH_PASSWORD",
	"SSH_ALLOW_PASSWORDLESS", "SSH_LOG_LEVEL", "SSH_LOG_FORMAT", "SSH_ACCEPT_ENV",
	"SSH_SESSION_DISK_MIB", "SSH_RUNTIME_DIR",
	"SSH_GUEST_NETWORK", "SSH_VM_CPUS", "SSH_VM_MEMORY_MIB", "SSH_HANDSHAKE_TIMEOUT",
	"SSH_MAX_STARTUPS", "SSH_PER_SOURCE_MAX_STARTUPS",
	"SSH_AUTHORIZED_KEYS",
	"SSH_MAX_SESSIONS", "SSH_MAX_SESSIONS_PER_IP", "SSH_MAX_SESSIONS_PER_CONNECTION",
	"SSH_SESSION_TIMEOUT", "SSH_IDLE_TIMEOUT", "SSH_KEEPALIVE_INTERVAL", "SSH_KEEPALIVE_COUNT_MAX",
	"SSH_METRICS_ADDR", "SSH_CIPHERS",
}

func clearConfigEnv(t *testing.T) {
	t.Helper()
	for _, name := range configVariables {
		t.Setenv(name, "")
		_ = os.Unsetenv(name)
	}
}

func TestConfigDefaults(t *testing.T) {
	clearConfigEnv(t)
	root := krtest.Rootfs(t, false)

	cfg, done, err := parseConfig([]string{"--rootfs", root}, &bytes.Buffer{})
	if err != nil || done {
		t.Fatalf("parseConfig: done=%v err=%v", done, err)
	}
	want := config{
		ListenAddr:  ":2222",
		HostKeyPath: "server_key",
		Rootfs:      root,
		Username:    "test",
		Password:    "test",
		LogLevel:    "info",
		LogFormat:   "text",

		SessionDiskMiB:           256,
		RuntimeDir:               defaultRuntimeDir(),
		GuestNetwork:             "off",
		VMCPUs:                   1,
		VMMemoryMiB:              256,
		HandshakeTimeout:         30 * time.Second,
		MaxStartups:              100,
		PerSourceMaxStartups:     10,
		MaxSessions:              32,
		MaxSessionsPerIP:         8,
		MaxSessionsPerConnection: 10,
		SessionTimeout:           time.Hour,
		IdleTimeout:              15 * time.Minute,
		KeepaliveInterval:        15 * time.Second,
		KeepaliveCountMax:        3,
		Ciphers:                  defaultCiphers,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("defaults = %+v, want %+v", cfg, want)
	}
}

func TestConfigFromEnvironment(t *testing.T) {
	clearConfigEnv(t)
	root := krtest.Rootfs(t, false)
	t.Setenv("SSH_ADDR", "127.0.0.1:2200")
	t.Setenv("SSH_HOST_KEY_PATH", "/tmp/k")
	t.Setenv("SSH_ROOTFS", root)
	t.Setenv("SSH_USERNAME", "alice")
	t.Setenv("SSH_PASSWORD", "s3cret")
	t.Setenv("SSH_ALLOW_PASSWORDLESS", "true")
	t.Setenv("SSH_LOG_LEVEL", "debug")
	t.Setenv("SSH_LOG_FORMAT", "json")
	t.Setenv("SSH_ACCEPT_ENV", "FOO,APP_*")
	t.Setenv("SSH_SESSION_DISK_MIB", "128")
	t.Setenv("SSH_RUNTIME_DIR", "/run/tw-test")
	t.Setenv("SSH_GUEST_NETWORK", "tsi")
	t.Setenv("SSH_VM_CPUS", "4")
	t.Setenv("SSH_VM_MEMORY_MIB", "1024")
	t.Setenv("SSH_HANDSHAKE_TIMEOUT", "1m30s")
	t.Setenv("SSH_MAX_STARTUPS", "50")
	t.Setenv("SSH_PER_SOURCE_MAX_STARTUPS", "5")
	t.Setenv("SSH_MAX_SESSIONS", "0")
	t.Setenv("SSH_MAX_SESSIONS_PER_IP", "2")
	t.Setenv("SSH_MAX_SESSIONS_PER_CONNECTION", "1")
	t.Setenv("SSH_SESSION_TIMEOUT", "0")
	t.Setenv("SSH_IDLE_TIMEOUT", "90s")
	t.Setenv("SSH_KEEPALIVE_INTERVAL", "1m")
	t.Setenv("SSH_KEEPALIVE_COUNT_MAX", "5")
	t.Setenv("SSH_CIPHERS", "+chacha20-poly1305@openssh.com")

	cfg, _, err := parseConfig(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		ListenAddr:        "127.0.0.1:2200",
		HostKeyPath:       "/tmp/k",
		Rootfs:            root,
		Username:          "alice",
		Password:          "s3cret",
		AllowPasswordless: true,
		LogLevel:          "debug",
		LogFormat:         "json",
		AcceptEnv:         []string{"FOO", "APP_*"},
		SessionDiskMiB:    128,
		RuntimeDir:        "/run/tw-test",

		GuestNetwork:         "tsi",
		VMCPUs:               4,
		VMMemoryMiB:          1024,
		HandshakeTimeout:     90 * time.Second,
		MaxStartups:          50,
		PerSourceMaxStartups: 5,

		MaxSessions:              0,
		MaxSessionsPerIP:         2,
		MaxSessionsPerConnection: 1,
		SessionTimeout:           0,
		IdleTimeout:              90 * time.Second,
		KeepaliveInterval:        time.Minute,
		KeepaliveCountMax:        5,
		Ciphers:                  append(slices.Clone(defaultCiphers), "chacha20-poly1305@openssh.com"),
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("config = %+v, want %+v", cfg, want)
	}
}

func TestConfigFlagWinsOverEnvironment(t *testing.T) {
	clearConfigEnv(t)
	root := krtest.Rootfs(t, false)
	t.Setenv("SSH_ADDR", "127.0.0.1:1111")
	t.Setenv("SSH_USERNAME", "from-env")
	t.Setenv("SSH_LOG_LEVEL", "error")
	t.Setenv("SSH_ALLOW_PASSWORDLESS", "true")
	t.Setenv("SSH_ROOTFS", "/does/not/exist")
	t.Setenv("SSH_VM_CPUS", "many")
	t.Setenv("SSH_HANDSHAKE_TIMEOUT", "forever")
	t.Setenv("SSH_CIPHERS", "rot13")

	cfg, _, err := parseConfig([]string{
		"--ciphers", "aes256-gcm@openssh.com",
		"--vm-cpus", "2",
		"--handshake-timeout", "10s",
		"--listen-addr", "127.0.0.1:2222",
		"--username=from-flag",
		"--log-level", "warn",
		"--allow-passwordless=false",
		"--rootfs", root,
	}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ListenAddr != "127.0.0.1:2222" {
		t.Errorf("listen addr = %q, want the flag's", cfg.ListenAddr)
	}
	if cfg.Username != "from-flag" {
		t.Errorf("username = %q, want the flag's", cfg.Username)
	}
	if cfg.LogLevel != "warn" {
		t.Errorf("log level = %q, want the flag's", cfg.LogLevel)
	}
	if cfg.AllowPasswordless {
		t.Error("allow-passwordless = true, want the flag's false")
	}
	if cfg.Rootfs != root {
		t.Errorf("rootfs = %q, want the flag's", cfg.Rootfs)
	}
	if !slices.Equal(cfg.Ciphers, []string{"aes256-gcm@openssh.com"}) {
		t.Errorf("ciphers = %v, want the flag's", cfg.Ciphers)
	}
	if cfg.VMCPUs != 2 {
		t.Errorf("vm cpus = %d, want the flag's 2", cfg.VMCPUs)
	}
	if cfg.HandshakeTimeout != 10*time.Second {
		t.Errorf("handshake timeout = %s, want the flag's 10s", cfg.HandshakeTimeout)
	}
}

func TestConfigInvalidValues(t *testing.T) {
	root := krtest.Rootfs(t, false)
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	emptyRoot := t.TempDir()

	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string // substrings of the one-line error
	}{
		{"unknown log level", []string{"--rootfs", root, "--log-level", "verbose"}, nil,
			[]string{"--log-level", "verbose", "debug, info, warn, error"}},
		{"unknown log level from env", []string{"--rootfs", root}, map[string]string{"SSH_LOG_LEVEL": "loud"},
			[]string{"SSH_LOG_LEVEL", "loud", "debug, info, warn, error"}},
		{"unknown log format", []string{"--rootfs", root, "--log-format", "xml"}, nil,
			[]string{"--log-format", "xml", "text, json"}},
		{"missing rootfs", nil, nil,
			[]string{"--rootfs", "SSH_ROOTFS", "make rootfs"}},
		{"rootfs does not exist", []string{"--rootfs", "/no/such/dir"}, nil,
			[]string{"--rootfs", "/no/such/dir"}},
		{"rootfs is a file", []string{"--rootfs", notDir}, nil,
			[]string{"--rootfs", notDir, "directory"}},
		{"rootfs without a shell", []string{"--rootfs", emptyRoot}, nil,
			[]string{"--rootfs", emptyRoot, "bin/sh"}},
		{"unparsable boolean from env", []string{"--rootfs", root}, map[string]string{"SSH_ALLOW_PASSWORDLESS": "maybe"},
			[]string{"SSH_ALLOW_PASSWORDLESS", "maybe", "true", "false"}},
		{"unparsable boolean flag", []string{"--rootfs", root, "--allow-passwordless=maybe"}, nil,
			[]string{"allow-passwordless", "maybe"}},
		{"address without port", []string{"--rootfs", root, "--listen-addr", "localhost"}, nil,
			[]string{"--listen-addr", "localhost", "HOST:PORT"}},
		{"address with bad port", []string{"--rootfs", root, "--listen-addr", ":99999"}, nil,
			[]string{"--listen-addr", "99999", "0 to 65535"}},
		{"address with named port", []string{"--rootfs", root, "--listen-addr", ":ssh"}, nil,
			[]string{"--listen-addr", "ssh", "number"}},
		{"empty password", []string{"--rootfs", root, "--password", ""}, nil,
			[]string{"--password", "--allow-passwordless"}},
		{"unknown flag", []string{"--rootfs", root, "--colour"}, nil,
			[]string{"--colour"}},
		{"session disk zero", []string{"--rootfs", root, "--session-disk-mib", "0"}, nil,
			[]string{"--session-disk-mib", "SSH_SESSION_DISK_MIB", `"0"`, "from 1 to 1048576"}},
		{"session disk not a number", []string{"--rootfs", root}, map[string]string{"SSH_SESSION_DISK_MIB": "lots"},
			[]string{"session-disk-mib", "lots"}},
		{"runtime dir relative", []string{"--rootfs", root, "--runtime-dir", "run/tw"}, nil,
			[]string{"--runtime-dir", "SSH_RUNTIME_DIR", `"run/tw"`, "absolute"}},
		{"runtime dir too long", []string{"--rootfs", root, "--runtime-dir", "/" + strings.Repeat("d", 70)}, nil,
			[]string{"--runtime-dir", "71 bytes", "unix socket"}},
		{"unknown cipher", []string{"--rootfs", root, "--ciphers", "aes128-cbc"}, nil,
			[]string{"--ciphers", "SSH_CIPHERS", `"aes128-cbc"`, "supported:"}},
		{"unknown cipher from env", []string{"--rootfs", root}, map[string]string{"SSH_CIPHERS": "-blowfish"},
			[]string{"SSH_CIPHERS", `"-blowfish"`, "supported:"}},
		{"accept-env LD_", []string{"--rootfs", root, "--accept-env", "FOO,LD_PRELOAD"}, nil,
			[]string{"--accept-env", "LD_PRELOAD", "never accepted"}},
		{"accept-env bad pattern", []string{"--rootfs", root}, map[string]string{"SSH_ACCEPT_ENV": "LC_["},
			[]string{"SSH_ACCEPT_ENV", "LC_[", "pattern"}},
		{"accept-env empty entry", []string{"--rootfs", root, "--accept-env", "FOO,,BAR"}, nil,
			[]string{"--accept-env", "empty"}},
		{"guest network unknown", []string{"--rootfs", root, "--guest-network", "on"}, nil,
			[]string{"--guest-network", "SSH_GUEST_NETWORK", `"on"`, "off, tsi"}},
		{"guest network unknown from env", []string{"--rootfs", root}, map[string]string{"SSH_GUEST_NETWORK": "bridge"},
			[]string{"--guest-network", "SSH_GUEST_NETWORK", `"bridge"`, "off, tsi"}},
		{"vm cpus zero", []string{"--rootfs", root, "--vm-cpus", "0"}, nil,
			[]string{"--vm-cpus", "SSH_VM_CPUS", `"0"`, "from 1 to 255"}},
		{"vm cpus over the maximum", []string{"--rootfs", root, "--vm-cpus", "256"}, nil,
			[]string{"--vm-cpus", "SSH_VM_CPUS", `"256"`, "from 1 to 255"}},
		{"vm cpus not a number", []string{"--rootfs", root}, map[string]string{"SSH_VM_CPUS": "two"},
			[]string{"--vm-cpus", "SSH_VM_CPUS", `"two"`, "from 1 to 255"}},
		{"vm memory under the minimum", []string{"--rootfs", root, "--vm-memory-mib", "16"}, nil,
			[]string{"--vm-memory-mib", "SSH_VM_MEMORY_MIB", `"16"`, "from 32 to 65536"}},
		{"vm memory over the maximum", []string{"--rootfs", root, "--vm-memory-mib", "1048576"}, nil,
			[]string{"--vm-memory-mib", "SSH_VM_MEMORY_MIB", `"1048576"`, "from 32 to 65536"}},
		{"vm memory with a unit", []string{"--rootfs", root}, map[string]string{"SSH_VM_MEMORY_MIB": "1G"},
			[]string{"--vm-memory-mib", "SSH_VM_MEMORY_MIB", `"1G"`, "from 32 to 65536"}},
		{"max sessions beyond 32 bits", []string{"--rootfs", root, "--max-sessions", "99999999999"}, nil,
			[]string{"--max-sessions", "SSH_MAX_SESSIONS", `"99999999999"`, "up to 2147483647"}},
		{"handshake timeout not a duration", []string{"--rootfs", root, "--handshake-timeout", "30"}, nil,
			[]string{"--handshake-timeout", "SSH_HANDSHAKE_TIMEOUT", `"30"`, "from 1s to 10m0s"}},
		{"handshake timeout too short", []string{"--rootfs", root}, map[string]string{"SSH_HANDSHAKE_TIMEOUT": "500ms"},
			[]string{"--handshake-timeout", "SSH_HANDSHAKE_TIMEOUT", `"500ms"`, "from 1s to 10m0s"}},
		{"handshake timeout too long", []string{"--rootfs", root, "--handshake-timeout", "1h"}, nil,
			[]string{"--handshake-timeout", "SSH_HANDSHAKE_TIMEOUT", `"1h"`, "from 1s to 10m0s"}},
		{"max startups zero", []string{"--rootfs", root, "--max-startups", "0"}, nil,
			[]string{"--max-startups", "SSH_MAX_STARTUPS", `"0"`, "at least 1"}},
		{"per-source max startups negative", []string{"--rootfs", root}, map[string]string{"SSH_PER_SOURCE_MAX_STARTUPS": "-3"},
			[]string{"--per-source-max-startups", "SSH_PER_SOURCE_MAX_STARTUPS", `"-3"`, "at least 1"}},
		{"per-source max startups empty", []string{"--rootfs", root, "--per-source-max-startups="}, nil,
			[]string{"--per-source-max-startups", "SSH_PER_SOURCE_MAX_STARTUPS", `""`, "at least 1"}},
		{"negative max sessions", []string{"--rootfs", root, "--max-sessions=-1"}, nil,
			[]string{"--max-sessions", "SSH_MAX_SESSIONS", `"-1"`, "whole number"}},
		{"max sessions per ip not a number from env", []string{"--rootfs", root}, map[string]string{"SSH_MAX_SESSIONS_PER_IP": "many"},
			[]string{"--max-sessions-per-ip", "SSH_MAX_SESSIONS_PER_IP", `"many"`, "whole number"}},
		{"max sessions per connection too large", []string{"--rootfs", root, "--max-sessions-per-connection", "99999999999"}, nil,
			[]string{"--max-sessions-per-connection", "SSH_MAX_SESSIONS_PER_CONNECTION", "99999999999"}},
		{"session timeout without unit", []string{"--rootfs", root, "--session-timeout", "60"}, nil,
			[]string{"--session-timeout", "SSH_SESSION_TIMEOUT", `"60"`, "duration", "30m"}},
		{"negative idle timeout from env", []string{"--rootfs", root}, map[string]string{"SSH_IDLE_TIMEOUT": "-5m"},
			[]string{"--idle-timeout", "SSH_IDLE_TIMEOUT", `"-5m"`, "0 to turn it off"}},
		{"session timeout below a second", []string{"--rootfs", root, "--session-timeout", "1ns"}, nil,
			[]string{"--session-timeout", "SSH_SESSION_TIMEOUT", `"1ns"`, "1s or more"}},
		{"idle timeout below a second", []string{"--rootfs", root, "--idle-timeout", "500ms"}, nil,
			[]string{"--idle-timeout", "SSH_IDLE_TIMEOUT", `"500ms"`, "1s or more"}},
		{"keepalive interval below a second", []string{"--rootfs", root, "--keepalive-interval", "10ms"}, nil,
			[]string{"--keepalive-interval", "SSH_KEEPALIVE_INTERVAL", `"10ms"`, "1s or more"}},
		{"keepalive count max zero", []string{"--rootfs", root, "--keepalive-count-max", "0"}, nil,
			[]string{"--keepalive-count-max", "SSH_KEEPALIVE_COUNT_MAX", `"0"`, "from 1 to 2147483647"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearConfigEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, _, err := parseConfig(tt.args, &bytes.Buffer{})
			if err == nil {
				t.Fatal("parseConfig accepted an invalid value")
			}
			var usage *usageError
			if !errors.As(err, &usage) {
				t.Errorf("error %q is not a usage error (exit status 2)", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans several lines: %q", msg)
			}
			for _, want := range tt.want {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
		})
	}
}

func TestConfigVersionAndHelp(t *testing.T) {
	clearConfigEnv(t)
	var out bytes.Buffer
	_, done, err := parseConfig([]string{"--version"}, &out)
	if err != nil || !done {
		t.Fatalf("--version: done=%v err=%v", done, err)
	}
	if !strings.HasPrefix(out.String(), "throwawaysh ") {
		t.Errorf("--version printed %q", out.String())
	}

	out.Reset()
	_, done, err = parseConfig([]string{"--help"}, &out)
	if err != nil || !done {
		t.Fatalf("--help: done=%v err=%v", done, err)
	}
	for _, flag := range []string{"--listen-addr", "--host-key-path", "--rootfs", "--username", "--password", "--authorized-keys", "--allow-passwordless", "--log-level", "--log-format", "SSH_ADDR", "SSH_AUTHORIZED_KEYS",
		"--vm-cpus", "--vm-memory-mib", "--session-disk-mib", "--guest-network", "--runtime-dir", "--handshake-timeout", "--max-startups", "--per-source-max-startups",
		"--max-sessions", "--max-sessions-per-ip", "--max-sessions-per-connection", "--session-timeout", "--idle-timeout",
		"--keepalive-interval", "--keepalive-count-max", "SSH_KEEPALIVE_COUNT_MAX"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("--help does not mention %s", flag)
		}
	}
}

var serviceBuild struct {
	once sync.Once
	path string
	err  error
}

// serviceBinary builds cmd/throwawaysh once per test run; TestMain
// removes it.
func serviceBinary(t *testing.T) string {
	t.Helper()
	serviceBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "throwawaysh-bin-")
		if err != nil {
			serviceBuild.err = err
			return
		}
		serviceBuild.path = filepath.Join(dir, "throwawaysh")
		out, err := exec.Command("go", "build", "-o", serviceBuild.path, ".").CombinedOutput()
		if err != nil {
			serviceBuild.err = errors.New("build service: " + err.Error() + "\n" + string(out))
		}
	})
	if serviceBuild.err != nil {
		t.Fatal(serviceBuild.err)
	}
	return serviceBuild.path
}

func runService(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(serviceBinary(t), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatal(err)
	}
	return stderr.String(), cmd.ProcessState.ExitCode()
}

func TestServiceBadFlagExitsTwo(t *testing.T) {
	root := krtest.Rootfs(t, false)
	stderr, status := runService(t, nil, "--rootfs", root, "--log-format", "yaml")
	if status != 2 {
		t.Errorf("exit status = %d, want 2", status)
	}
	if strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "--log-format") || !strings.Contains(stderr, "yaml") {
		t.Errorf("stderr = %q, want one line naming --log-format and yaml", stderr)
	}

	stderr, status = runService(t, []string{"SSH_ROOTFS=/no/such/rootfs"})
	if status != 2 || !strings.Contains(stderr, "/no/such/rootfs") {
		t.Errorf("missing rootfs from the environment: status %d stderr %q", status, stderr)
	}
}

func TestServiceWithoutLibkrunRefusesToStart(t *testing.T) {
	root := krtest.Rootfs(t, false)
	missing := filepath.Join(t.TempDir(), "libkrun.so.1")
	stderr, status := runService(t,
		[]string{"THROWAWAYSH_LIBKRUN=" + missing, "SSH_PASSWORD=x"},
		"--rootfs", root, "--listen-addr", "127.0.0.1:0", "--host-key-path", filepath.Join(t.TempDir(), "key"))
	if status == 0 {
		t.Fatalf("the service started without libkrun; stderr %q", stderr)
	}
	for _, want := range []string{missing, "install"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q does not contain %q", stderr, want)
		}
	}
}

func TestServiceVersion(t *testing.T) {
	cmd := exec.Command(serviceBinary(t), "--version")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "throwawaysh ") {
		t.Errorf("--version printed %q", out)
	}
}

func TestConfigPasswordlessFlagWinsOverInvalidVariable(t *testing.T) {
	clearConfigEnv(t)
	root := krtest.Rootfs(t, false)
	t.Setenv("SSH_ALLOW_PASSWORDLESS", "maybe")
	cfg, _, err := parseConfig([]string{"--rootfs", root, "--allow-passwordless=false"}, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("the flag did not replace the invalid variable: %v", err)
	}
	if cfg.AllowPasswordless {
		t.Error("allow-passwordless = true, want the flag's false")
	}

	t.Setenv("SSH_ALLOW_PASSWORDLESS", "")
	cfg, _, err = parseConfig([]string{"--rootfs", root}, &bytes.Buffer{})
	if err != nil || cfg.AllowPasswordless {
		t.Errorf("empty variable: allow-passwordless = %v, err = %v, want false and no error", cfg.AllowPasswordless, err)
	}

	t.Setenv("SSH_ALLOW_PASSWORDLESS", "yes")
	cfg, _, err = parseConfig([]string{"--rootfs", root}, &bytes.Buffer{})
	if err != nil || !cfg.AllowPasswordless {
		t.Errorf("SSH_ALLOW_PASSWORDLESS=yes: allow-passwordless = %v, err = %v, want true", cfg.AllowPasswordless, err)
	}
}

func TestConfigAuthorizedKeysPasswordDefault(t *testing.T) {
	root := krtest.Rootfs(t, false)
	keys := writeAuthorizedKeys(t, newSSHKey(t))

	tests := []struct {
		name         string
		args         []string
		env          map[string]string
		wantPassword string
	}{
		{"neither: the default password", nil, nil, "test"},
		{"keys only: no password", []string{"--authorized-keys", keys}, nil, ""},
		{"keys from the variable: no password", nil, map[string]string{"SSH_AUTHORIZED_KEYS": keys}, ""},
		{"keys and password flag", []string{"--authorized-keys", keys, "--password", "pw"}, nil, "pw"},
		{"keys and password variable", []string{"--authorized-keys", keys}, map[string]string{"SSH_PASSWORD": "pw"}, "pw"},
		{"keys and an empty password: keys only", []string{"--authorized-keys", keys, "--password="}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearConfigEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cfg, _, err := parseConfig(append([]string{"--rootfs", root}, tt.args...), &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Password != tt.wantPassword {
				t.Errorf("password = %q, want %q", cfg.Password, tt.wantPassword)
			}
			if cfg.PasswordFlag != nil {
				t.Error("PasswordFlag is left set after parsing")
			}
		})
	}
}

func TestConfigInvalidAuthorizedKeys(t *testing.T) {
	root := krtest.Rootfs(t, false)
	key := newSSHKey(t)
	good := writeAuthorizedKeys(t, key)
	missing := filepath.Join(t.TempDir(), "authorized_keys")
	badLine := filepath.Join(t.TempDir(), "authorized_keys")
	if err := os.WriteFile(badLine, []byte(key.publicLine+"\nfrom=\"10.0.0.0/8\" "+key.publicLine+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	writable := writeAuthorizedKeys(t, key)
	if err := os.Chmod(writable, 0o666); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"missing file", []string{"--authorized-keys", missing}, nil,
			[]string{"--authorized-keys", "SSH_AUTHORIZED_KEYS", missing, "not found"}},
		{"key options from the variable", nil, map[string]string{"SSH_AUTHORIZED_KEYS": badLine},
			[]string{"SSH_AUTHORIZED_KEYS", badLine + ":2:", "not supported"}},
		{"world-writable file", []string{"--authorized-keys", writable}, nil,
			[]string{"--authorized-keys", writable, "writable", "chmod go-w"}},
		{"keys without a user name", []string{"--authorized-keys", good, "--username", ""}, nil,
			[]string{"--username", "--authorized-keys"}},
		{"keys and passwordless without a user name", []string{"--authorized-keys", good, "--username=", "--allow-passwordless"}, nil,
			[]string{"--username", "--authorized-keys"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearConfigEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, _, err := parseConfig(append([]string{"--rootfs", root}, tt.args...), &bytes.Buffer{})
			if err == nil {
				t.Fatal("parseConfig accepted an invalid value")
			}
			var usage *usageError
			if !errors.As(err, &usage) {
				t.Errorf("error %q is not a usage error (exit status 2)", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans several lines: %q", msg)
			}
			for _, want := range tt.want {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
		})
	}
}

func TestServerRefusesConfigWithoutAuthMethod(t *testing.T) {
	cfg := testConfig(t, krtest.Rootfs(t, false))
	cfg.Password = ""
	if _, err := newServer(cfg, &krtest.Launcher{}, middleware.NewTracker(), newLogger(cfg, &bytes.Buffer{})); err == nil {
		t.Fatal("newServer built a server without any authentication method")
	}
}

// A limit variable that is invalid or empty must not stop the service when
// a flag replaces it or when the default applies.
func TestConfigLimitFlagWinsOverInvalidVariable(t *testing.T) {
	clearConfigEnv(t)
	root := krtest.Rootfs(t, false)
	t.Setenv("SSH_MAX_SESSIONS", "lots")
	t.Setenv("SSH_IDLE_TIMEOUT", "soon")
	t.Setenv("SSH_KEEPALIVE_COUNT_MAX", "")

	cfg, _, err := parseConfig([]string{"--rootfs", root, "--max-sessions", "4", "--idle-timeout=0"}, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("the flags did not replace the invalid variables: %v", err)
	}
	if cfg.MaxSessions != 4 {
		t.Errorf("max sessions = %d, want the flag's 4", cfg.MaxSessions)
	}
	if cfg.IdleTimeout != 0 {
		t.Errorf("idle timeout = %s, want the flag's 0", cfg.IdleTimeout)
	}
	if cfg.KeepaliveCountMax != 3 {
		t.Errorf("keepalive count max = %d, want the default 3 for an empty variable", cfg.KeepaliveCountMax)
	}
}

func TestConfigWarnsAboutIneffectiveLimits(t *testing.T) {
	clearConfigEnv(t)
	root := krtest.Rootfs(t, false)
	cfg, _, err := parseConfig([]string{"--rootfs", root}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.warnings(); len(got) != 0 {
		t.Errorf("defaults give warnings %q, want none", got)
	}

	cfg, _, err = parseConfig([]string{"--rootfs", root, "--max-startups", "5", "--max-sessions", "4"}, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("limits stricter than their per-source or per-address ones must be accepted: %v", err)
	}
	got := strings.Join(cfg.warnings(), "\n")
	for _, want := range []string{"--per-source-max-startups 10 is above --max-startups 5", "--max-sessions-per-ip 8 is above --max-sessions 4", "--max-sessions-per-connection 10 is above --max-sessions 4"} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings %q lack %q", got, want)
		}
	}
}

// Spaces around a number or duration are ignored in every setting, as
// they are in --vm-cpus.
func TestConfigTrimsSpacesInLimits(t *testing.T) {
	clearConfigEnv(t)
	cfg, _, err := parseConfig([]string{"--rootfs", krtest.Rootfs(t, false), "--max-sessions", " 3", "--idle-timeout", "90s "}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxSessions != 3 {
		t.Errorf("max sessions = %d, want 3", cfg.MaxSessions)
	}
	if cfg.IdleTimeout != 90*time.Second {
		t.Errorf("idle timeout = %s, want 90s", cfg.IdleTimeout)
	}
}
