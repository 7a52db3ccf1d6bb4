package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
)

// fileTransferArgs returns openSSHArgs in the form that sftp and scp take:
// they set the port with -P and read -l as a bandwidth limit, so the user
// goes into the destination instead.
func (srv *testServer) fileTransferArgs() []string {
	var args []string
	ssh := srv.openSSHArgs("test")
	for i := 0; i < len(ssh); i++ {
		switch ssh[i] {
		case "-p":
			args = append(args, "-P", ssh[i+1])
			i++
		case "-l":
			i++
		default:
			args = append(args, ssh[i])
		}
	}
	return args
}

// runTransfer runs the OpenSSH program name (sftp or scp) with args and
// fails the test when it does not succeed within a minute.
func runTransfer(t *testing.T, name string, args ...string) sshResult {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s from openssh-client is required (apt-get install openssh-client): %v", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = askpassEnv(t, testPassword)
	return runClient(t, cmd)
}

// checkNotInRootfs fails the test when name exists in the rootfs on the
// host: what a session writes must stay in its own copy-on-write root.
func checkNotInRootfs(t *testing.T, rootDir, name string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(rootDir, name)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s is in the rootfs on the host (err = %v); a session's writes must not reach it", name, err)
	}
}

// randomFile writes size random bytes to a new file in dir and returns its
// path and content.
func randomFile(t *testing.T, dir string, size int) (string, []byte) {
	t.Helper()
	content := make([]byte, size)
	if _, err := rand.Read(content); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "local.bin")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, content
}

// checkFile fails the test unless the file at path holds want.
func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s has %d bytes that differ from the %d bytes sent", path, len(got), len(want))
	}
}

// checkSubsystemSessions fails the test unless the server ran n sessions,
// all in subsystem mode, which shows that the client used SFTP.
func checkSubsystemSessions(t *testing.T, srv *testServer, n int) {
	t.Helper()
	logs := srv.logs.String()
	if got := strings.Count(logs, "mode=subsystem"); got < n {
		t.Errorf("server log has %d subsystem sessions, want %d:\n%s", got, n, logs)
	}
	for _, mode := range []string{"mode=console", "mode=pty"} {
		if strings.Contains(logs, mode) {
			t.Errorf("server log has a session with %s, want only SFTP subsystem sessions", mode)
		}
	}
}

func TestSFTPPutAndGet(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		rootDir := b.rootfs(t, true)
		srv := startServer(t, testConfig(t, rootDir), b.launcher)
		local := t.TempDir()
		const remote = "/tmp"
		source, content := randomFile(t, local, 1<<20+123)
		back := filepath.Join(local, "back.bin")

		batch := filepath.Join(local, "batch")
		commands := "put " + source + " " + remote + "/sftp-up.bin\n" +
			"get " + remote + "/sftp-up.bin " + back + "\n" +
			"ls " + remote + "\n"
		if err := os.WriteFile(batch, []byte(commands), 0o600); err != nil {
			t.Fatal(err)
		}
		// -b turns on BatchMode, which disables password authentication.
		// The first value of an option wins, so BatchMode=no goes before -b.
		args := append(srv.fileTransferArgs(), "-o", "BatchMode=no", "-b", batch, "test@127.0.0.1")
		result := runTransfer(t, "sftp", args...)
		if result.status != 0 {
			t.Fatalf("sftp exited with status %d; stderr: %s", result.status, result.stderr)
		}
		checkNotInRootfs(t, rootDir, "tmp/sftp-up.bin")
		checkFile(t, back, content)
		if !strings.Contains(string(result.stdout), "sftp-up.bin") {
			t.Errorf("sftp ls output does not list sftp-up.bin: %q", result.stdout)
		}
		checkSubsystemSessions(t, srv, 1)
	})
}

// Each scp run is a session of its own with a fresh VM, so the upload
// cannot be fetched back: the download takes a file of the rootfs instead.
func TestSCPRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		rootDir := b.rootfs(t, true)
		srv := startServer(t, testConfig(t, rootDir), b.launcher)
		local := t.TempDir()
		source, _ := randomFile(t, local, 300<<10)
		back := filepath.Join(local, "back.bin")

		up := append(srv.fileTransferArgs(), source, "test@127.0.0.1:/tmp/scp-up.bin")
		if result := runTransfer(t, "scp", up...); result.status != 0 {
			t.Fatalf("scp to the server exited with status %d; stderr: %s", result.status, result.stderr)
		}
		checkNotInRootfs(t, rootDir, "tmp/scp-up.bin")

		down := append(srv.fileTransferArgs(), "test@127.0.0.1:/bin/busybox", back)
		if result := runTransfer(t, "scp", down...); result.status != 0 {
			t.Fatalf("scp from the server exited with status %d; stderr: %s", result.status, result.stderr)
		}
		want, err := os.ReadFile(filepath.Join(rootDir, "bin/busybox"))
		if err != nil {
			t.Fatal(err)
		}
		checkFile(t, back, want)
		checkSubsystemSessions(t, srv, 2)
	})
}

func TestSFTPWithoutAgent(t *testing.T) {
	srv := startServer(t, testConfig(t, krtest.Rootfs(t, false)), &krtest.Launcher{})
	batch := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(batch, []byte("ls /\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append(srv.fileTransferArgs(), "-o", "BatchMode=no", "-b", batch, "test@127.0.0.1")
	result := runTransfer(t, "sftp", args...)
	if result.status == 0 {
		t.Errorf("sftp against a rootfs without the agent succeeded; stdout: %s", result.stdout)
	}
	if !strings.Contains(string(result.stderr), "SFTP and scp need the guest agent") {
		t.Errorf("sftp stderr does not explain the missing agent: %q", result.stderr)
	}
}

func TestLegacySCPWithoutSCPFailsClearly(t *testing.T) {
	srv := startServer(t, testConfig(t, krtest.Rootfs(t, true)), &krtest.Launcher{})
	local := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(local, []byte("data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-O"}, srv.fileTransferArgs()...)
	got := runTransfer(t, "scp", append(args, local, "test@127.0.0.1:"+filepath.Join(t.TempDir(), "copy"))...)
	if got.status == 0 {
		t.Fatalf("scp -O succeeded without scp in the rootfs: %s", got.stderr)
	}
	if !strings.Contains(string(got.stderr), "scp without -O") {
		t.Errorf("scp -O stderr = %q, want the throwawaysh hint", got.stderr)
	}
}
