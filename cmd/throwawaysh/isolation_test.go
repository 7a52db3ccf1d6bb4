package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/throwawaysh/throwawaysh/internal/sandbox"
)

// startHeldSession starts command in a session and returns once its stdout
// has printed "ready"; the command then waits for input. Closing the
// returned writer lets it finish.
func (srv *testServer) startHeldSession(t *testing.T, command string) io.WriteCloser {
	t.Helper()
	session := srv.goSession(t)
	stdin, err := session.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := session.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	session.Stderr = &stderr
	if err := session.Start(command + "; echo ready; read line"); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			if scanner.Text() == "ready" {
				ready <- true
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("held session ended before it was ready; stderr: %s", stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("held session not ready after a minute")
	}
	t.Cleanup(func() { _ = session.Close() })
	return stdin
}

// Writes as guest root (changed, new and deleted files) stay in the
// session's own copy of the rootfs: another session running at the same
// time does not see them, the rootfs on the host does not change, and a
// later session starts from the rootfs again.
func TestSessionWritesStayInSession(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		rootDir := b.rootfs(t, true)
		passwd, err := os.ReadFile(filepath.Join(rootDir, "etc/passwd"))
		if err != nil {
			t.Fatal(err)
		}
		srv := startServer(t, testConfig(t, rootDir), b.launcher)

		writer := srv.startHeldSession(t,
			"echo changed > /etc/passwd && echo mine > /root/mark && mkdir /newdir && rm /bin/cat")
		concurrent := srv.runSSH(t, sshCall{command: "cat /etc/passwd; ls /root; ls -d /newdir; ls /bin/cat"})
		if !strings.Contains(string(concurrent.stdout), string(passwd)) {
			t.Errorf("concurrent session sees /etc/passwd as %q, want the rootfs's", concurrent.stdout)
		}
		if strings.Contains(string(concurrent.stdout), "mark") || !strings.Contains(string(concurrent.stdout), "/bin/cat") {
			t.Errorf("concurrent session sees the other session's writes: %q", concurrent.stdout)
		}
		if !strings.Contains(string(concurrent.stderr), "/newdir") {
			t.Errorf("concurrent session: ls -d /newdir stderr = %q, want an error", concurrent.stderr)
		}

		got, err := os.ReadFile(filepath.Join(rootDir, "etc/passwd"))
		if err != nil || string(got) != string(passwd) {
			t.Errorf("rootfs etc/passwd on the host = %q, %v; want it unchanged", got, err)
		}
		checkNotInRootfs(t, rootDir, "root/mark")
		checkNotInRootfs(t, rootDir, "newdir")
		if _, err := os.Lstat(filepath.Join(rootDir, "bin/cat")); err != nil {
			t.Errorf("rootfs bin/cat on the host after the guest removed it: %v", err)
		}

		_ = writer.Close()
		later := srv.runSSH(t, sshCall{command: "ls /root; cat /etc/passwd"})
		if strings.Contains(string(later.stdout), "mark") || strings.Contains(string(later.stdout), "changed") {
			t.Errorf("a later session sees an ended session's writes: %q", later.stdout)
		}
	})
}

// A session that fills its disk gets ENOSPC in the guest and can go on;
// the host's disk is never touched.
func TestSessionDiskFullGivesENOSPC(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cfg := testConfig(t, b.rootfs(t, true))
		cfg.SessionDiskMiB = 8
		srv := startServer(t, cfg, b.launcher)

		got := srv.runSSH(t, sshCall{command: "dd if=/dev/zero of=/root/big bs=1M count=32; echo dd=$?; " +
			"rm /root/big; echo after > /root/small && cat /root/small"})
		if got.status != 0 {
			t.Fatalf("exit status = %d, want 0; stderr: %s", got.status, got.stderr)
		}
		if !strings.Contains(string(got.stderr), "No space left on device") {
			t.Errorf("stderr = %q, want dd's ENOSPC error", got.stderr)
		}
		if strings.Contains(string(got.stdout), "dd=0") {
			t.Errorf("dd of 32 MiB into an 8 MiB session succeeded: %q", got.stdout)
		}
		if !strings.Contains(string(got.stdout), "after") {
			t.Errorf("stdout = %q, want the session to write again after freeing space", got.stdout)
		}
	})
}

// The guest cannot read a host file outside its root, whether by the host
// path or through /proc.
func TestGuestCannotReadHostFile(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)
		secretBytes := make([]byte, 16)
		_, _ = rand.Read(secretBytes)
		secretText := "host-secret-" + hex.EncodeToString(secretBytes)
		secret := filepath.Join(t.TempDir(), "secret")
		if err := os.WriteFile(secret, []byte(secretText), 0o644); err != nil {
			t.Fatal(err)
		}

		// A descriptor of the service without close-on-exec, as one
		// inherited from its own parent, must not reach the guest either.
		dirFD, err := syscall.Open(filepath.Dir(secret), syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(dirFD)

		got := srv.runSSH(t, sshCall{command: fmt.Sprintf("cat %[1]s; cat /proc/1/root%[1]s; cat /proc/self/root%[1]s; cat /proc/self/fd/%[2]d/secret; echo done", secret, dirFD)})
		if strings.Contains(string(got.stdout), secretText) {
			t.Fatalf("the guest read the host file %s", secret)
		}
		if n := strings.Count(string(got.stderr), "cat: can't open"); n != 4 {
			t.Errorf("stderr = %q, want 4 errors from cat", got.stderr)
		}
		if !strings.Contains(string(got.stdout), "done") {
			t.Errorf("stdout = %q, want the command to finish", got.stdout)
		}
	})
}

var vmPIDPattern = regexp.MustCompile(`vm boot .* vm=(\d+)`)

// The VM process is what libkrun's virtio-fs server runs in, so its own
// view of the file system is what a guest could reach: only its jail.
// With the test launcher the stand-in init is that process.
func TestVMProcessSeesOnlyItsJail(t *testing.T) {
	srv := startServer(t, testConfig(t, krtestRootfs(t)), testLauncher())
	stdin := srv.startHeldSession(t, "true")
	defer stdin.Close()

	match := vmPIDPattern.FindStringSubmatch(srv.logs.String())
	if match == nil {
		t.Fatalf("no vm boot line with a PID in the server log")
	}
	entries, err := os.ReadDir("/proc/" + match[1] + "/root")
	if err != nil {
		t.Fatalf("list the VM process's root: %v", err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{"dev", "proc", "root", "sock", "upper", "work"}
	if !slices.Equal(names, want) {
		t.Errorf("VM process root has %v, want only the jail's %v", names, want)
	}
	// Started by root, the VM process runs as an unprivileged host user;
	// otherwise as the service's own user.
	status, err := os.ReadFile("/proc/" + match[1] + "/status")
	if err != nil {
		t.Fatal(err)
	}
	wantUID := os.Geteuid()
	if wantUID == 0 {
		wantUID = sandbox.IDBase
	}
	if want := fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d", wantUID, wantUID, wantUID, wantUID); !strings.Contains(string(status), want) {
		t.Errorf("VM process status has no line %q:\n%s", want, status)
	}
	devices, err := os.ReadDir("/proc/" + match[1] + "/root/dev")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devices {
		if !slices.Contains([]string{"null", "zero", "full", "random", "urandom", "tty"}, d.Name()) {
			t.Errorf("jail /dev has %s, which the VM process does not need", d.Name())
		}
	}
}

// Without --guest-network the guest has no network: a TCP server on the
// host's loopback cannot be reached.
func TestGuestNetworkOffByDefault(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan struct{}, 1)
		go func() {
			if conn, err := ln.Accept(); err == nil {
				accepted <- struct{}{}
				_ = conn.Close()
			}
		}()
		port := ln.Addr().(*net.TCPAddr).Port

		got := srv.runSSH(t, sshCall{command: fmt.Sprintf("echo hi | nc -w 2 127.0.0.1 %d; echo nc=$?", port)})
		if strings.Contains(string(got.stdout), "nc=0") {
			t.Errorf("nc to host loopback succeeded: stdout %q", got.stdout)
		}
		select {
		case <-accepted:
			t.Error("the host listener accepted a connection from the guest")
		default:
		}
	})
}

// With --guest-network tsi the VM process stays in the host's network
// namespace, where libkrun opens the guest's sockets, so the guest reaches
// the host's loopback. The test launcher's guest shares that namespace.
func TestGuestNetworkTSIReachesHost(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	cfg.GuestNetwork = "tsi"
	srv := startServer(t, cfg, testLauncher())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	received := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		line, _ := bufio.NewReader(conn).ReadString('\n')
		received <- line
	}()
	port := ln.Addr().(*net.TCPAddr).Port

	got := srv.runSSH(t, sshCall{command: fmt.Sprintf("echo from-guest | nc -w 2 127.0.0.1 %d; echo nc=$?", port)})
	select {
	case line := <-received:
		if line != "from-guest\n" {
			t.Errorf("the host listener received %q, want the guest's line", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the host listener got nothing; guest stdout %q stderr %q", got.stdout, got.stderr)
	}
}

// waitNoSessionDirs fails the test unless dir holds no session directory
// within 10 seconds: a session's directory goes once its VM has ended.
func waitNoSessionDirs(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "session-") {
				left = append(left, e.Name())
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session directories %v left in %s", left, dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
