package middleware

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startSleeper starts a process in place of a VM left behind by a crashed
// server, and reaps it when it ends.
func startSleeper(t *testing.T) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	return cmd, done
}

func makeSessionDir(t *testing.T, runtimeDir, name string) string {
	t.Helper()
	dir := filepath.Join(runtimeDir, name)
	if err := os.MkdirAll(filepath.Join(dir, "vm-1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "agent.sock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOpenRuntimeDirRemovesStaleSessions(t *testing.T) {
	runtimeDir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(runtimeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	live, liveDone := startSleeper(t)
	withVM := makeSessionDir(t, runtimeDir, sessionDirPrefix+"1")
	if err := writeVMPID(withVM, live.Process.Pid); err != nil {
		t.Fatal(err)
	}
	// A recorded PID whose start time does not match is another process
	// that reused the PID: it must survive.
	other, otherDone := startSleeper(t)
	reused := makeSessionDir(t, runtimeDir, sessionDirPrefix+"2")
	content := strconv.Itoa(other.Process.Pid) + " 1\n"
	if err := os.WriteFile(filepath.Join(reused, vmPIDFile), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	withoutPID := makeSessionDir(t, runtimeDir, sessionDirPrefix+"3")
	unrelated := filepath.Join(runtimeDir, "notes")
	if err := os.WriteFile(unrelated, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	dir, err := OpenRuntimeDir(runtimeDir, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("OpenRuntimeDir: %v", err)
	}
	defer dir.Close()

	select {
	case <-liveDone:
	case <-time.After(5 * time.Second):
		t.Error("the stale VM process still runs")
	}
	select {
	case <-otherDone:
		t.Error("a process that only reused a recorded PID was killed")
	default:
	}
	for _, gone := range []string{withVM, reused, withoutPID} {
		if _, err := os.Lstat(gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stale session directory %s still exists (err = %v)", gone, err)
		}
	}
	if _, err := os.Stat(unrelated); err != nil {
		t.Errorf("a file that is not a session directory was removed: %v", err)
	}
	if got := strings.Count(logs.String(), "stale session directory removed"); got != 3 {
		t.Errorf("log has %d removals, want 3:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), "stale vm ended") || !strings.Contains(logs.String(), "vm="+strconv.Itoa(live.Process.Pid)) {
		t.Errorf("log does not name the ended VM process %d:\n%s", live.Process.Pid, logs.String())
	}
}

func TestOpenRuntimeDirLocksOutSecondServer(t *testing.T) {
	runtimeDir := filepath.Join(t.TempDir(), "run")
	first, err := OpenRuntimeDir(runtimeDir, nil)
	if err != nil {
		t.Fatalf("OpenRuntimeDir: %v", err)
	}
	info, err := os.Stat(runtimeDir)
	if err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("created runtime directory: mode %v, err %v; want 0700", info.Mode().Perm(), err)
	}
	session := makeSessionDir(t, runtimeDir, sessionDirPrefix+"live")

	_, err = OpenRuntimeDir(runtimeDir, nil)
	if err == nil || !strings.Contains(err.Error(), "in use by another throwawaysh server") {
		t.Fatalf("second OpenRuntimeDir: err = %v, want an in-use error", err)
	}
	if _, err := os.Stat(session); err != nil {
		t.Errorf("the refused second server removed a live session directory: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err := OpenRuntimeDir(runtimeDir, nil)
	if err != nil {
		t.Fatalf("OpenRuntimeDir after Close: %v", err)
	}
	_ = second.Close()
}

func TestOpenRuntimeDirRejectsSharedDirectory(t *testing.T) {
	runtimeDir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(runtimeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(runtimeDir, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := OpenRuntimeDir(runtimeDir, nil)
	if err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Errorf("world-writable runtime directory: err = %v, want a refusal with the fix", err)
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRuntimeDir(file, nil); err == nil {
		t.Error("a file as runtime directory was accepted")
	}
}

func TestProcessStartTimeOfSelf(t *testing.T) {
	start, err := processStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if n, err := strconv.ParseUint(start, 10, 64); err != nil || n == 0 {
		t.Errorf("start time %q: want a positive number of clock ticks", start)
	}
	if _, err := processStartTime(1 << 30); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("start time of a PID that does not exist: err = %v, want ENOENT", err)
	}
}
