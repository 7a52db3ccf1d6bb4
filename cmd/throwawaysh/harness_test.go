package main

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/krun"
	"github.com/throwawaysh/throwawaysh/middleware"
)

func TestMain(m *testing.M) {
	krtest.RunInitIfRequested()
	krun.RunChildIfRequested()
	runServerProcessIfRequested()
	code := m.Run()
	krtest.Cleanup()
	if serviceBuild.path != "" {
		_ = os.RemoveAll(filepath.Dir(serviceBuild.path))
	}
	os.Exit(code)
}

const testPassword = "correct horse battery staple"

// testServer is a throwawaysh server on 127.0.0.1:0, composed by newServer
// as the service composes it, with a launcher chosen by the test.
type testServer struct {
	addr string
	port string
	cfg  config
	logs *syncBuffer
	// sessions is the server's session tracker.
	sessions *middleware.Tracker
}

// syncBuffer collects the server's log for assertions and failure output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testConfig returns a valid configuration for rootDir with a host key in
// a temporary directory and the test password.
func testConfig(t testing.TB, rootDir string) config {
	t.Helper()
	return config{
		ListenAddr:           "127.0.0.1:0",
		HostKeyPath:          filepath.Join(t.TempDir(), "host_key"),
		Rootfs:               rootDir,
		Username:             "test",
		Password:             testPassword,
		LogLevel:             "debug",
		LogFormat:            "text",
		SessionDiskMiB:       64,
		RuntimeDir:           shortTempDir(t),
		GuestNetwork:         "off",
		VMCPUs:               krun.DefaultCPUs,
		VMMemoryMiB:          krun.DefaultMemoryMiB,
		HandshakeTimeout:     30 * time.Second,
		MaxStartups:          100,
		PerSourceMaxStartups: 10,

		MaxSessions:              32,
		MaxSessionsPerIP:         8,
		MaxSessionsPerConnection: 10,
		SessionTimeout:           time.Hour,
		IdleTimeout:              15 * time.Minute,
		KeepaliveInterval:        15 * time.Second,
		KeepaliveCountMax:        3,
	}
}

// shortTempDir returns a new directory with a short path, removed after
// the test: t.TempDir() contains the test's name, and socket paths in the
// directory must stay under about 100 bytes.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tw-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func startServer(t *testing.T, cfg config, launcher krun.Launcher) *testServer {
	t.Helper()
	logs := &syncBuffer{}
	logger := newLogger(cfg, logs)
	sessions := middleware.NewTracker()
	srv, err := newServer(cfg, launcher, sessions, logger)
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return &testServer{addr: ln.Addr().String(), port: port, cfg: cfg, logs: logs, sessions: sessions}
}

// krtestRootfs and testLauncher give tests that need only the test
// launcher a root with the agent and a launcher.
func krtestRootfs(t testing.TB) string { return krtest.Rootfs(t, true) }

func testLauncher() krun.Launcher { return &krtest.Launcher{} }

// backend is a way to run VMs: the test launcher everywhere, and libkrun
// where it can boot guests.
type backend struct {
	name     string
	launcher krun.Launcher
	rootfs   func(t testing.TB, withAgent bool) string
}

// forEachBackend runs fn once with the test launcher and once with libkrun;
// the libkrun run skips with the reason when libkrun or KVM is missing.
func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Run("testlauncher", func(t *testing.T) {
		fn(t, backend{name: "testlauncher", launcher: &krtest.Launcher{}, rootfs: krtest.Rootfs})
	})
	t.Run("libkrun", func(t *testing.T) {
		b, reason := libkrunBackend()
		if reason != "" {
			t.Skip(reason)
		}
		fn(t, b)
	})
}

var libkrunProbe struct {
	once   sync.Once
	b      backend
	reason string
}

// libkrunBackend returns the libkrun backend, or why it cannot run here.
// Its rootfs is THROWAWAYSH_TEST_ROOTFS, a root built by 'make rootfs'
// (with the agent installed); tests that need a root without the agent
// skip there.
func libkrunBackend() (backend, string) {
	libkrunProbe.once.Do(func() {
		lib, err := krun.Load()
		if errors.Is(err, krun.ErrLibkrunNotFound) {
			libkrunProbe.reason = "libkrun not installed (see README, Prerequisites)"
			return
		}
		if err != nil {
			libkrunProbe.reason = "libkrun not usable: " + firstLine(err.Error())
			return
		}
		if err := krun.CheckKVM(); err != nil {
			libkrunProbe.reason = "KVM not usable: " + firstLine(err.Error())
			return
		}
		root := os.Getenv("THROWAWAYSH_TEST_ROOTFS")
		if root == "" {
			libkrunProbe.reason = "THROWAWAYSH_TEST_ROOTFS is not set; run 'make rootfs' and point it at ./rootfs"
			return
		}
		launcher, err := krun.NewLauncher(lib, slog.New(slog.DiscardHandler))
		if err != nil {
			libkrunProbe.reason = "libkrun launcher: " + firstLine(err.Error())
			return
		}
		libkrunProbe.b = backend{
			name:     "libkrun",
			launcher: launcher,
			rootfs: func(t testing.TB, withAgent bool) string {
				if !withAgent {
					t.Skip("needs a rootfs without the guest agent; only the test launcher builds one")
				}
				return root
			},
		}
	})
	return libkrunProbe.b, libkrunProbe.reason
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// sshResult is what one run of the OpenSSH client produced.
type sshResult struct {
	stdout []byte
	stderr []byte
	status int
}

// openSSHArgs returns the OpenSSH client options that connect to srv as
// user without reading the user's own configuration, keys or known hosts.
func (srv *testServer) openSSHArgs(user string, extra ...string) []string {
	args := []string{
		"-F", "/dev/null",
		"-p", srv.port,
		"-l", user,
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR",
		"-o", "PubkeyAuthentication=no",
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityFile=/dev/null",
		"-o", "PreferredAuthentications=none,password",
		"-o", "NumberOfPasswordPrompts=1",
		"-o", "ConnectTimeout=10",
		"-o", "ControlMaster=no",
		"-o", "ControlPath=none",
	}
	return append(args, extra...)
}

// askpassEnv returns an environment in which the OpenSSH client reads
// password from an askpass program instead of a terminal.
func askpassEnv(t *testing.T, password string) []string {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "askpass")
	passwordFile := filepath.Join(dir, "password")
	if err := os.WriteFile(passwordFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncat '"+passwordFile+"'\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"SSH_ASKPASS=" + script,
		"SSH_ASKPASS_REQUIRE=force",
		"DISPLAY=:0",
	}
}

func requireOpenSSH(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("ssh")
	if err != nil {
		t.Fatalf("the OpenSSH client is required (apt-get install openssh-client): %v", err)
	}
	return path
}

// sshCall is one run of the OpenSSH client: its options, and the remote
// command (empty for none).
type sshCall struct {
	options  []string
	command  string
	stdin    io.Reader
	password string
}

// runSSH runs the OpenSSH client against srv and waits for it, failing the
// test if it takes longer than a minute.
func (srv *testServer) runSSH(t *testing.T, call sshCall) sshResult {
	t.Helper()
	args := append(srv.openSSHArgs("test"), call.options...)
	args = append(args, "127.0.0.1")
	if call.command != "" {
		args = append(args, call.command)
	}
	if call.password == "" {
		call.password = testPassword
	}
	cmd := exec.Command(requireOpenSSH(t), args...)
	cmd.Env = askpassEnv(t, call.password)
	cmd.Stdin = call.stdin
	return runClient(t, cmd)
}

// runClient runs an OpenSSH client program and collects its output and
// exit status, failing the test if it takes longer than a minute.
func runClient(t *testing.T, cmd *exec.Cmd) sshResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%q did not finish within a minute; stderr: %s", cmd.Args, stderr.String())
	}
	return sshResult{stdout: stdout.Bytes(), stderr: stderr.Bytes(), status: cmd.ProcessState.ExitCode()}
}

// dialGo connects to srv with the x/crypto/ssh client.
func (srv *testServer) dialGo(t *testing.T, user, password string) *gossh.Client {
	t.Helper()
	client, err := gossh.Dial("tcp", srv.addr, &gossh.ClientConfig{
		User:            user,
		Auth:            []gossh.AuthMethod{gossh.Password(password)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatalf("dial %s: %v", srv.addr, err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// askUntil writes command to stdin until output contains want, and fails
// the test after 30 seconds. A window change travels to the guest apart
// from the terminal input, so a command typed right after a resize can run
// before the new size lands; asking again shows the size once it has.
func askUntil(t *testing.T, stdin io.Writer, output func() string, command, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := io.WriteString(stdin, command); err != nil {
			t.Fatalf("type %q: %v", command, err)
		}
		asked := time.Now()
		for time.Since(asked) < time.Second {
			if strings.Contains(output(), want) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			t.Fatalf("output never contained %q: %q", want, output())
		}
	}
}

// goSession opens a session on a new x/crypto/ssh connection to srv.
func (srv *testServer) goSession(t *testing.T) *gossh.Session {
	t.Helper()
	session, err := srv.dialGo(t, "test", testPassword).NewSession()
	if err != nil {
		t.Fatal(err)
	}
	return session
}

// exitErrorOf returns the remote exit status or signal in err, failing the
// test when the session ended without either.
func exitErrorOf(t *testing.T, err error) *gossh.ExitError {
	t.Helper()
	var exitErr *gossh.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("session ended with %v, want an exit status or signal", err)
	}
	return exitErr
}

// exitStatusOf returns the remote exit status in err from a Go client
// session, 0 for nil.
func exitStatusOf(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var exitErr *gossh.ExitError
	if errors.As(err, &exitErr) {
		return exitErr.ExitStatus()
	}
	t.Fatalf("session ended without an exit status: %v", err)
	return -1
}

// processesMatching returns the host processes whose command line starts
// with marker. Matching the start leaves out the ssh client, whose
// arguments contain the remote command too.
func processesMatching(marker string) []string {
	entries, _ := os.ReadDir("/proc")
	var found []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		line := strings.ReplaceAll(string(cmdline), "\x00", " ")
		if strings.HasPrefix(line, marker) {
			found = append(found, e.Name()+": "+line)
		}
	}
	return found
}

// processIDs returns the ids of the processes matching marker.
func processIDs(marker string) []int {
	var pids []int
	for _, p := range processesMatching(marker) {
		id, _, _ := strings.Cut(p, ":")
		if pid, err := strconv.Atoi(id); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitNoProcesses fails the test if processes matching marker remain
// after a few seconds.
func waitNoProcesses(t *testing.T, marker string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := processesMatching(marker)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes outlived the session: %q", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
