package main

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/middleware"
)

func TestMain(m *testing.M) {
	krtest.RunInitIfRequested()
	code := m.Run()
	krtest.Cleanup()
	os.Exit(code)
}

// imageRootfs returns a guest root with the agent whose /etc/image
// contains name.
func imageRootfs(t *testing.T, name string) string {
	t.Helper()
	root := krtest.Rootfs(t, true)
	if err := os.WriteFile(filepath.Join(root, "etc/image"), []byte(name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// startPeruser starts the app's server on 127.0.0.1:0 with the images
// alpine and debian and krtest's launcher, and returns its port and log.
func startPeruser(t *testing.T) (port string, logs *syncBuffer) {
	t.Helper()
	runtimeDir, err := os.MkdirTemp("", "pu-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(runtimeDir) })

	cfg := config{
		ListenAddr:  "127.0.0.1:0",
		HostKeyPath: filepath.Join(t.TempDir(), "host_key"),
		RuntimeDir:  runtimeDir,
		Images: map[string]string{
			"alpine": imageRootfs(t, "alpine"),
			"debian": imageRootfs(t, "debian"),
		},
		IdleTimeout: time.Minute,
	}
	logs = &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	srv, err := newServer(cfg, &krtest.Launcher{}, middleware.NewTracker(), logger)
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	_, port, _ = net.SplitHostPort(ln.Addr().String())
	return port, logs
}

// syncBuffer is a log destination shared by the server's goroutines.
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

// sshResult is what one run of the OpenSSH client produced.
type sshResult struct {
	stdout, stderr string
	status         int
}

// runSSH runs the OpenSSH client as user against port with options and
// command, without the user's own configuration, keys or known hosts.
func runSSH(t *testing.T, port, user string, options []string, command string) sshResult {
	t.Helper()
	sshPath, err := exec.LookPath("ssh")
	if err != nil {
		t.Fatalf("the OpenSSH client is required (apt-get install openssh-client): %v", err)
	}
	args := []string{
		"-F", "/dev/null",
		"-p", port,
		"-l", user,
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR",
		"-o", "BatchMode=yes",
		"-o", "PreferredAuthentications=none",
		"-o", "ConnectTimeout=10",
		"-o", "ControlPath=none",
	}
	args = append(args, options...)
	args = append(args, "127.0.0.1", command)

	cmd := exec.Command(sshPath, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("ssh %q did not finish within a minute; stderr: %s", args, stderr.String())
	}
	return sshResult{stdout: stdout.String(), stderr: stderr.String(), status: cmd.ProcessState.ExitCode()}
}

// Each user name boots its own image, and commands without a PTY get no
// banner.
func TestPeruserImagePerUser(t *testing.T) {
	port, logs := startPeruser(t)
	for _, user := range []string{"alpine", "debian"} {
		r := runSSH(t, port, user, []string{"-T"}, "cat /etc/image")
		if r.status != 0 {
			t.Errorf("%s: exit status %d, stderr %q", user, r.status, r.stderr)
		}
		if r.stdout != user+"\n" {
			t.Errorf("%s: stdout = %q, want %q", user, r.stdout, user+"\n")
		}
		if r.stderr != "" {
			t.Errorf("%s: stderr = %q, want nothing", user, r.stderr)
		}
	}
	if t.Failed() {
		t.Logf("server log:\n%s", logs.String())
	}
}

// A PTY session gets the banner before its command runs in the image.
func TestPeruserBannerInPTY(t *testing.T) {
	port, logs := startPeruser(t)
	r := runSSH(t, port, "debian", []string{"-tt"}, "cat /etc/image")
	if r.status != 0 {
		t.Errorf("exit status %d, stderr %q", r.status, r.stderr)
	}
	if !strings.Contains(r.stderr, "peruser: a fresh debian VM, gone when you log out\r\n") {
		t.Errorf("stderr = %q, want the banner", r.stderr)
	}
	if r.stdout != "debian\r\n" {
		t.Errorf("stdout = %q, want %q", r.stdout, "debian\r\n")
	}
	if t.Failed() {
		t.Logf("server log:\n%s", logs.String())
	}
}

// A user name without an image gets the list of valid names and
// ExitVMFailed, and no VM boots.
func TestPeruserUnknownUser(t *testing.T) {
	port, logs := startPeruser(t)
	r := runSSH(t, port, "mallory", []string{"-T"}, "true")
	if r.status != middleware.ExitVMFailed {
		t.Errorf("exit status = %d, want %d", r.status, middleware.ExitVMFailed)
	}
	want := "throwawaysh: no image for this user name; log in as one of: alpine, debian\n"
	if r.stderr != want {
		t.Errorf("stderr = %q, want %q", r.stderr, want)
	}
	if strings.Contains(logs.String(), "vm boot") {
		t.Errorf("a VM booted for an unknown user:\n%s", logs.String())
	}
}

// Invalid flags exit with status 2 and a message that names the value.
func TestPeruserFlagErrors(t *testing.T) {
	valid := krtest.Rootfs(t, false)
	noShell := t.TempDir()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no image", nil, "no image given; pass at least one -image USER=DIR"},
		{"no equals sign", []string{"-image", "alpine"}, `"alpine" is not of the form USER=DIR`},
		{"empty user", []string{"-image", "=" + valid}, `is not of the form USER=DIR`},
		{"rootfs without shell", []string{"-image", "alpine=" + noShell}, "/bin/sh is missing"},
		{"two images for a user", []string{"-image", "a=" + valid, "-image", "a=" + valid}, `user "a" has two images`},
		{"argument", []string{"-image", "a=" + valid, "extra"}, `unexpected argument "extra"`},
		{"negative timeout", []string{"-image", "a=" + valid, "-idle-timeout", "-1s"}, "-idle-timeout -1s is negative"},
		{"unknown flag", []string{"-rootfs", valid}, "flag provided but not defined: -rootfs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			status := run(tc.args, &stderr)
			if status != 2 {
				t.Errorf("exit status = %d, want 2", status)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tc.want)
			}
		})
	}
}

// Without libkrun the app exits with status 1 and names what it looked
// for, before it listens.
func TestPeruserNeedsLibkrun(t *testing.T) {
	t.Setenv("THROWAWAYSH_LIBKRUN", filepath.Join(t.TempDir(), "libkrun.so.1"))
	var stderr bytes.Buffer
	status := run([]string{"-image", "a=" + krtest.Rootfs(t, false), "-listen", "127.0.0.1:0"}, &stderr)
	if status != 1 {
		t.Errorf("exit status = %d, want 1", status)
	}
	if !strings.Contains(stderr.String(), "libkrun not found") {
		t.Errorf("stderr = %q, want the missing libkrun", stderr.String())
	}
}
