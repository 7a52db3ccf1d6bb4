package middleware

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Names in a runtime directory.
const (
	// sessionDirPrefix starts the name of each session's directory.
	sessionDirPrefix = "session-"
	// vmPIDFile, in a session directory, holds the VM process's PID and
	// start time, so that a later start can end a VM that outlived a
	// crashed server without hitting a process that reused the PID.
	vmPIDFile = "vm.pid"
	// lockFile keeps two servers from sharing a runtime directory, where
	// each would remove the other's sessions as stale.
	lockFile = "lock"
)

// staleVMTimeout bounds how long OpenRuntimeDir waits for a killed stale
// VM process to disappear.
const staleVMTimeout = 5 * time.Second

// RuntimeDir is a directory that holds the per-session directories of one
// server (agent sockets, VM process ids). Open it with
// OpenRuntimeDir and pass its Path to WithRuntimeDir.
type RuntimeDir struct {
	path string
	lock *os.File
}

// Path returns the directory's path.
func (d *RuntimeDir) Path() string { return d.path }

// Close releases the directory for another server.
func (d *RuntimeDir) Close() error { return d.lock.Close() }

// OpenRuntimeDir creates dir (mode 0700) unless it exists, makes sure no
// other server uses it, and removes what a previous server left there after
// a crash: it kills each VM process that still runs and removes each
// session directory, logging both. Call it before the server accepts
// connections and keep the result open while the server runs.
//
// The directory must belong to the current user and be closed to others:
// anyone who can write to it could plant sockets that sessions connect to.
func OpenRuntimeDir(dir string, logger *slog.Logger) (*RuntimeDir, error) {
	if logger == nil {
		logger = discardLogger
	}
	if dir == "" {
		return nil, errors.New("runtime directory: empty path")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("runtime directory %q: %w; choose a directory, or a path that does not exist yet, on a local file system", dir, err)
	}
	if err := checkPrivateDir(dir); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("runtime directory %q: %w", dir, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("runtime directory %q is in use by another throwawaysh server; give each server its own directory", dir)
		}
		return nil, fmt.Errorf("runtime directory %q: lock: %w", dir, err)
	}
	if err := removeStaleSessions(dir, logger); err != nil {
		_ = lock.Close()
		return nil, err
	}
	return &RuntimeDir{path: dir, lock: lock}, nil
}

// checkPrivateDir returns an error unless dir is a directory of the
// current user that no one else can write to.
func checkPrivateDir(dir string) error {
	info, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("runtime directory %q: %w", dir, err)
	}
	if !info.IsDir() {
		return fmt.Errorf("runtime directory %q: not a directory; point it at a directory or a path that does not exist yet", dir)
	}
	if info.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("runtime directory %q: mode %v lets other users write to it; run chmod 700 on it or choose another directory", dir, info.Mode().Perm())
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("runtime directory %q: owned by uid %d, not by this server's uid %d; choose a directory of your own", dir, st.Uid, os.Geteuid())
	}
	return nil
}

// removeStaleSessions ends the VM processes and removes the session
// directories that a previous server left in dir.
func removeStaleSessions(dir string, logger *slog.Logger) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("runtime directory %q: %w", dir, err)
	}
	for _, entry := range entries {
		if !entry.IsDir() || !strings.HasPrefix(entry.Name(), sessionDirPrefix) {
			continue
		}
		sessionDir := filepath.Join(dir, entry.Name())
		if pid, ok := staleVM(sessionDir); ok {
			if err := killStaleVM(pid); err != nil {
				logger.Error("stale vm not ended", "dir", sessionDir, "vm", pid, "err", err)
			} else {
				logger.Warn("stale vm ended", "dir", sessionDir, "vm", pid)
			}
		}
		if err := os.RemoveAll(sessionDir); err != nil {
			return fmt.Errorf("remove stale session directory %q: %w", sessionDir, err)
		}
		logger.Warn("stale session directory removed", "dir", sessionDir)
	}
	return nil
}

// writeVMPID records pid and its start time in sessionDir.
func writeVMPID(sessionDir string, pid int) error {
	start, err := processStartTime(pid)
	if err != nil {
		return err
	}
	content := strconv.Itoa(pid) + " " + start + "\n"
	return os.WriteFile(filepath.Join(sessionDir, vmPIDFile), []byte(content), 0o600)
}

// staleVM returns the PID recorded in sessionDir if that process still
// runs, judged by its start time.
func staleVM(sessionDir string) (int, bool) {
	data, err := os.ReadFile(filepath.Join(sessionDir, vmPIDFile))
	if err != nil {
		return 0, false
	}
	fields := strings.Fields(string(data))
	if len(fields) != 2 {
		return 0, false
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 1 {
		return 0, false
	}
	start, err := processStartTime(pid)
	return pid, err == nil && start == fields[1]
}

// killStaleVM kills the VM process pid and waits until it is gone.
// Killing its PID namespace's first process ends every process in it.
func killStaleVM(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	deadline := time.Now().Add(staleVMTimeout)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("still running %v after SIGKILL", staleVMTimeout)
}

// processStartTime returns field 22 of /proc/PID/stat, the process's start
// time in clock ticks after boot.
func processStartTime(pid int) (string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", err
	}
	// The command name in field 2 may contain spaces and parentheses; the
	// fields after its closing parenthesis are plain.
	end := strings.LastIndexByte(string(data), ')')
	if end < 0 {
		return "", fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	fields := strings.Fields(string(data[end+1:]))
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 {
		return "", fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return fields[19], nil
}
