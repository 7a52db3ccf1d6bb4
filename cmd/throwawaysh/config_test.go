package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
)

// configVariables are every variable the service reads; each test starts
// with all of them unset.
var configVariables = []string{
	"SSH_ADDR", "SSH_HOST_KEY_PATH", "SSH_ROOTFS", "SSH_USERNAME", "SSH_PASSWORD",
	"SSH_ALLOW_PASSWORDLESS", "SSH_LOG_LEVEL", "SSH_LOG_FORMAT", "SSH_ACCEPT_ENV",
	"SSH_MAX_SESSIONS", "SSH_MAX_SESSIONS_PER_IP", "SSH_MAX_SESSIONS_PER_CONNECTION",
	"SSH_SESSION_TIMEOUT", "SSH_IDLE_TIMEOUT", "SSH_KEEPALIVE_INTERVAL", "SSH_KEEPALIVE_COUNT_MAX",
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

		MaxSessions:              32,
		MaxSessionsPerIP:         8,
		MaxSessionsPerConnection: 10,
		SessionTimeout:           time.Hour,
		IdleTimeout:              15 * time.Minute,
		KeepaliveInterval:        15 * time.Second,
		KeepaliveCountMax:        3,
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
	t.Setenv("SSH_MAX_SESSIONS", "0")
	t.Setenv("SSH_MAX_SESSIONS_PER_IP", "2")
	t.Setenv("SSH_MAX_SESSIONS_PER_CONNECTION", "1")
	t.Setenv("SSH_SESSION_TIMEOUT", "0")
	t.Setenv("SSH_IDLE_TIMEOUT", "90s")
	t.Setenv("SSH_KEEPALIVE_INTERVAL", "1m")
	t.Setenv("SSH_KEEPALIVE_COUNT_MAX", "5")

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

		MaxSessions:              0,
		MaxSessionsPerIP:         2,
		MaxSessionsPerConnection: 1,
		SessionTimeout:           0,
		IdleTimeout:              90 * time.Second,
		KeepaliveInterval:        time.Minute,
		KeepaliveCountMax:        5,
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

	cfg, _, err := parseConfig([]string{
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
		{"accept-env LD_", []string{"--rootfs", root, "--accept-env", "FOO,LD_PRELOAD"}, nil,
			[]string{"--accept-env", "LD_PRELOAD", "never accepted"}},
		{"accept-env bad pattern", []string{"--rootfs", root}, map[string]string{"SSH_ACCEPT_ENV": "LC_["},
			[]string{"SSH_ACCEPT_ENV", "LC_[", "pattern"}},
		{"accept-env empty entry", []string{"--rootfs", root, "--accept-env", "FOO,,BAR"}, nil,
			[]string{"--accept-env", "empty"}},
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
		{"keepalive interval below a second", []string{"--rootfs", root, "--keepalive-interval", "10ms"}, nil,
			[]string{"--keepalive-interval", "SSH_KEEPALIVE_INTERVAL", `"10ms"`, "1s or more"}},
		{"keepalive count max zero", []string{"--rootfs", root, "--keepalive-count-max", "0"}, nil,
			[]string{"--keepalive-count-max", "SSH_KEEPALIVE_COUNT_MAX", `"0"`, "1 or more"}},
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
	for _, flag := range []string{"--listen-addr", "--host-key-path", "--rootfs", "--username", "--password", "--allow-passwordless", "--log-level", "--log-format", "SSH_ADDR",
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
