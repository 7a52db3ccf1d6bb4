package middleware_test

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"
	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/krun"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// dialAs connects to a server that accepts every user without a password.
func dialAs(t *testing.T, addr, user string) *gossh.Client {
	t.Helper()
	client, err := gossh.Dial("tcp", addr, &gossh.ClientConfig{
		User:            user,
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// runAs runs command as user without a PTY and returns its stdout, its
// stderr and its exit status.
func runAs(t *testing.T, addr, user, command string) (stdout, stderr string, status int) {
	t.Helper()
	session, err := dialAs(t, addr, user).NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	session.Stdout, session.Stderr = &out, &errOut
	err = session.Run(command)
	var exitErr *gossh.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		status = exitErr.ExitStatus()
	default:
		t.Fatalf("run %q as %s: %v", command, user, err)
	}
	return out.String(), errOut.String(), status
}

// settingsServer serves sessions whose VM settings choose decides, and
// records each spec the launcher starts. The log goes to logs.
func settingsServer(t *testing.T, choose func(ssh.Context, *middleware.VMSettings) error, logs *lockedBuffer) (addr string, specs func() []krun.Spec) {
	t.Helper()
	launcher, specs := recordingLauncher()
	addr = serve(t,
		middleware.AllowPasswordless(nil),
		wish.WithMiddleware(
			middleware.Route(),
			middleware.VM(launcher,
				middleware.WithRootfs(krtest.Rootfs(t, false)),
				middleware.WithSettingsFunc(choose),
			),
			middleware.Logging(slog.New(slog.NewTextHandler(logs, nil))),
		),
	)
	return addr, specs
}

// recordingLauncher returns a test launcher that records each spec it
// starts, and a function that returns the specs so far.
func recordingLauncher() (*krtest.Launcher, func() []krun.Spec) {
	var mu sync.Mutex
	var started []krun.Spec
	launcher := &krtest.Launcher{Started: func(s krun.Spec) {
		mu.Lock()
		started = append(started, s)
		mu.Unlock()
	}}
	return launcher, func() []krun.Spec {
		mu.Lock()
		defer mu.Unlock()
		return append([]krun.Spec(nil), started...)
	}
}

// Each user gets the rootfs and resources that the settings function
// chooses for the name, and users it leaves alone get the options' values.
func TestSettingsFuncChoosesPerUser(t *testing.T) {
	alice := krtest.Rootfs(t, false)
	if err := os.WriteFile(filepath.Join(alice, "etc/motd"), []byte("alice's root\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	choose := func(ctx ssh.Context, settings *middleware.VMSettings) error {
		if ctx.User() == "alice" {
			settings.Rootfs = alice
			settings.CPUs = 2
			settings.MemoryMiB = 512
			settings.DiskMiB = 32
		}
		return nil
	}
	addr, specs := settingsServer(t, choose, &lockedBuffer{})

	out, stderr, status := runAs(t, addr, "alice", "cat /etc/motd")
	if status != 0 || out != "alice's root\n" {
		t.Errorf("alice: status %d, stdout %q, stderr %q; want 0 and her motd", status, out, stderr)
	}
	out, stderr, status = runAs(t, addr, "bob", "cat /etc/motd 2>/dev/null || echo no motd")
	if status != 0 || out != "no motd\n" {
		t.Errorf("bob: status %d, stdout %q, stderr %q; want 0 and the default root", status, out, stderr)
	}

	started := specs()
	if len(started) != 2 {
		t.Fatalf("launcher started %d VMs, want 2", len(started))
	}
	if got := started[0]; got.Root != alice || got.CPUs != 2 || got.MemoryMiB != 512 || got.DiskMiB != 32 {
		t.Errorf("alice's spec: root %q, %d CPUs, %d MiB, disk %d MiB; want %q, 2, 512, 32", got.Root, got.CPUs, got.MemoryMiB, got.DiskMiB, alice)
	}
	if got := started[1]; got.Root == alice || got.CPUs != krun.DefaultCPUs || got.MemoryMiB != krun.DefaultMemoryMiB {
		t.Errorf("bob's spec: root %q, %d CPUs, %d MiB; want the defaults", got.Root, got.CPUs, got.MemoryMiB)
	}
}

// A settings function that fails, or chooses settings the launcher would
// reject, ends the session before any VM boots with ExitVMFailed and a
// message without host details, and the log gets the details.
func TestSettingsFuncErrors(t *testing.T) {
	noShell := t.TempDir()
	cases := []struct {
		name        string
		choose      func(*middleware.VMSettings) error
		wantMessage string
		wantLog     string
	}{
		{
			name: "user error",
			choose: func(*middleware.VMSettings) error {
				return middleware.NewUserError("no VM image for this user; log in as guest", errors.New("user has no image in /srv/images"))
			},
			wantMessage: "throwawaysh: no VM image for this user; log in as guest\n",
			wantLog:     "user has no image in /srv/images",
		},
		{
			name:        "plain error",
			choose:      func(*middleware.VMSettings) error { return errors.New("image database at /srv/db unreachable") },
			wantMessage: "throwawaysh: the server could not choose a VM for this session; tell the operator if it keeps failing\n",
			wantLog:     "image database at /srv/db unreachable",
		},
		{
			name:        "panic",
			choose:      func(*middleware.VMSettings) error { panic("image table corrupt") },
			wantMessage: "throwawaysh: the server could not choose a VM for this session; tell the operator if it keeps failing\n",
			wantLog:     "panic: image table corrupt",
		},
		{
			name:        "relative rootfs",
			choose:      func(s *middleware.VMSettings) error { s.Rootfs = "images/alice"; return nil },
			wantMessage: "throwawaysh: the server chose invalid VM settings for this session; tell the operator\n",
			wantLog:     "relative path",
		},
		{
			name:        "rootfs without shell",
			choose:      func(s *middleware.VMSettings) error { s.Rootfs = noShell; return nil },
			wantMessage: "throwawaysh: the server chose invalid VM settings for this session; tell the operator\n",
			wantLog:     "/bin/sh is missing",
		},
		{
			name:        "too many CPUs",
			choose:      func(s *middleware.VMSettings) error { s.CPUs = 1000; return nil },
			wantMessage: "throwawaysh: the server chose invalid VM settings for this session; tell the operator\n",
			wantLog:     "CPUs 1000",
		},
		{
			name:        "too little memory",
			choose:      func(s *middleware.VMSettings) error { s.MemoryMiB = 1; return nil },
			wantMessage: "throwawaysh: the server chose invalid VM settings for this session; tell the operator\n",
			wantLog:     "MemoryMiB 1",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs := &lockedBuffer{}
			addr, specs := settingsServer(t, func(_ ssh.Context, s *middleware.VMSettings) error { return tc.choose(s) }, logs)

			out, stderr, status := runAs(t, addr, "mallory", "echo ran")
			if status != middleware.ExitVMFailed {
				t.Errorf("exit status = %d, want %d", status, middleware.ExitVMFailed)
			}
			if out != "" {
				t.Errorf("stdout = %q, want nothing", out)
			}
			if stderr != tc.wantMessage {
				t.Errorf("stderr = %q, want %q", stderr, tc.wantMessage)
			}
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("log lacks %q:\n%s", tc.wantLog, logs.String())
			}
			if n := len(specs()); n != 0 {
				t.Errorf("launcher started %d VMs, want none", n)
			}
		})
	}
}

// A Tracker's Shutdown that comes while the settings function runs ends
// the session with its message and boots no VM.
func TestShutdownDuringSettingsBootsNoVM(t *testing.T) {
	launcher, specs := recordingLauncher()
	choosing := make(chan struct{})
	release := make(chan struct{})
	choose := func(ssh.Context, *middleware.VMSettings) error {
		close(choosing)
		<-release
		return nil
	}
	sessions := middleware.NewTracker()
	logs := &lockedBuffer{}
	addr := serve(t,
		middleware.AllowPasswordless(nil),
		wish.WithMiddleware(
			middleware.Route(),
			middleware.VM(launcher, middleware.WithRootfs(krtest.Rootfs(t, false)), middleware.WithSettingsFunc(choose)),
			sessions.Middleware(),
			middleware.Logging(slog.New(slog.NewTextHandler(logs, nil))),
		),
	)

	type result struct {
		stderr string
		status int
	}
	done := make(chan result, 1)
	go func() {
		_, stderr, status := runAs(t, addr, "alice", "echo ran")
		done <- result{stderr, status}
	}()
	<-choosing
	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- sessions.Shutdown(t.Context(), "server shutting down") }()
	// The settings function returns only once Shutdown has marked the
	// session, which it logs as "session stop".
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "session stop") {
		if time.Now().After(deadline) {
			t.Fatalf("Shutdown did not stop the session within 10s; log:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)

	got := <-done
	if got.status != middleware.ExitShutdown {
		t.Errorf("exit status = %d, want %d", got.status, middleware.ExitShutdown)
	}
	if got.stderr != "throwawaysh: server shutting down\n" {
		t.Errorf("stderr = %q, want the shutdown message", got.stderr)
	}
	if err := <-shutdownDone; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if n := len(specs()); n != 0 {
		t.Errorf("launcher started %d VMs after the shutdown, want none", n)
	}
}
