package krun

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuffer collects log output from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTestLogger() (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// TestKrunLauncherReportsMissingLibkrun runs the real VM process path: the
// test binary is started again, reads the spec from fd 3, fails to load
// libkrun and reports that on fd 4, and Wait turns the report into
// ErrBootFailed. Only krun_start_enter and the calls before it are not
// exercised.
func TestKrunLauncherReportsMissingLibkrun(t *testing.T) {
	t.Setenv(LibraryEnv, "/nonexistent/libkrun.so.1")
	logger, logs := newTestLogger()
	launcher, err := NewLauncher(nil, logger)
	if err != nil {
		t.Fatalf("NewLauncher: %v", err)
	}

	vm, err := launcher.Start(context.Background(), Spec{ID: "vm-missing", Root: t.TempDir(), Exec: "/bin/sh"})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	stdout, stderr := readAllAsync(vm.Stdout()), readAllAsync(vm.Stderr())
	if out := <-stdout; len(out) != 0 {
		t.Errorf("VM process wrote %q to stdout, which belongs to the guest", out)
	}
	if out := <-stderr; len(out) != 0 {
		t.Errorf("VM process wrote %q to stderr, which belongs to the guest", out)
	}

	status, err := vm.Wait()
	if !errors.Is(err, ErrBootFailed) {
		t.Fatalf("Wait = %d, %v; want ErrBootFailed", status, err)
	}
	if status != -1 {
		t.Errorf("status = %d, want -1 with ErrBootFailed", status)
	}
	for _, want := range []string{"libkrun", "/nonexistent/libkrun.so.1", "vm-missing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if got := logs.String(); !strings.Contains(got, `msg="vm log"`) || !strings.Contains(got, "vm=vm-missing") {
		t.Errorf("log %q has no vm log line for the VM", got)
	}

	// A second Wait returns the same result and Kill after the end is fine.
	if _, again := vm.Wait(); again == nil || again.Error() != err.Error() {
		t.Errorf("second Wait = %v, want %v", again, err)
	}
	if err := vm.Kill(); err != nil {
		t.Errorf("Kill after Wait: %v", err)
	}
}

// TestKrunLauncherPassesLibPath checks that the VM process loads the
// library the service loaded, not whatever the environment names.
func TestKrunLauncherPassesLibPath(t *testing.T) {
	t.Setenv(LibraryEnv, "/nonexistent/from-environment.so")
	launcher, err := NewLauncher(&Lib{path: "/nonexistent/from-lib.so"}, nil)
	if err != nil {
		t.Fatalf("NewLauncher: %v", err)
	}
	vm, err := launcher.Start(context.Background(), Spec{ID: "vm-lib", Root: t.TempDir(), Exec: "/bin/sh"})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	<-readAllAsync(vm.Stdout())
	_, err = vm.Wait()
	if !errors.Is(err, ErrBootFailed) || !strings.Contains(err.Error(), "/nonexistent/from-lib.so") {
		t.Fatalf("Wait error = %v, want a boot failure naming the Lib's path", err)
	}
	if strings.Contains(err.Error(), "from-environment") {
		t.Errorf("VM process used the environment's library: %v", err)
	}
}

func TestKrunLauncherChildEnvironment(t *testing.T) {
	t.Setenv("LD_LIBRARY_PATH", "/opt/krun/lib")
	t.Setenv(LibraryEnv, "/opt/krun/lib/libkrun.so.1")
	t.Setenv("SECRET_TOKEN", "do-not-pass")

	launcher := &KrunLauncher{}
	got := launcher.childEnvironment()
	want := []string{childEnv + "=1", "LD_LIBRARY_PATH=/opt/krun/lib", LibraryEnv + "=/opt/krun/lib/libkrun.so.1"}
	if !slices.Equal(got, want) {
		t.Errorf("environment = %q, want %q", got, want)
	}

	launcher.lib = &Lib{path: "libkrun.so.1"}
	got = launcher.childEnvironment()
	want = []string{childEnv + "=1", "LD_LIBRARY_PATH=/opt/krun/lib", LibraryEnv + "=libkrun.so.1"}
	if !slices.Equal(got, want) {
		t.Errorf("environment with a Lib = %q, want %q", got, want)
	}
}

func TestKrunLauncherRejectsInvalidSpec(t *testing.T) {
	launcher, err := NewLauncher(nil, nil, WithExecutable("/nonexistent/must-not-start"))
	if err != nil {
		t.Fatalf("NewLauncher: %v", err)
	}
	_, err = launcher.Start(context.Background(), Spec{Root: t.TempDir(), Exec: "sh"})
	if err == nil || !strings.Contains(err.Error(), "Spec.Exec") {
		t.Fatalf("Start error = %v, want a Spec.Exec validation error", err)
	}
}

func TestKrunLauncherCancelledContext(t *testing.T) {
	launcher, err := NewLauncher(nil, nil, WithExecutable("/nonexistent/must-not-start"))
	if err != nil {
		t.Fatalf("NewLauncher: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = launcher.Start(ctx, Spec{Root: t.TempDir(), Exec: "/bin/sh"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start error = %v, want context.Canceled", err)
	}
}

// TestKrunLauncherTimesOutOnForeignExecutable covers a main that forgot
// RunChildIfRequested: the process never acknowledges the spec, so Start
// must give up, say why, and leave no process behind.
func TestKrunLauncherTimesOutOnForeignExecutable(t *testing.T) {
	// The VM process of a root launcher runs as an unprivileged user,
	// which must reach the script and write its PID file.
	dir := publicTempDir(t)
	pidFile := filepath.Join(dir, "pid")
	script := filepath.Join(dir, "server")
	// The process is PID 1 of its own PID namespace, so $$ is 1; the host's
	// /proc gives its host PID.
	body := fmt.Sprintf("#!/bin/sh\nread pid rest < /proc/self/stat\necho $pid > %s\nexec sleep 100\n", pidFile)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	launcher, err := NewLauncher(nil, nil, WithExecutable(script), WithStartTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatalf("NewLauncher: %v", err)
	}

	_, err = launcher.Start(context.Background(), Spec{Root: t.TempDir(), Exec: "/bin/sh"})
	if err == nil || !strings.Contains(err.Error(), "RunChildIfRequested") {
		t.Fatalf("Start error = %v, want a hint at RunChildIfRequested", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Start error = %v, want context.DeadlineExceeded", err)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("script never ran: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("pid file %q: %v", data, err)
	}
	waitGone(t, pid)
}

func TestKrunLauncherChildEndsBeforeSpec(t *testing.T) {
	launcher, err := NewLauncher(nil, nil, WithExecutable("/bin/true"))
	if err != nil {
		t.Fatalf("NewLauncher: %v", err)
	}
	_, err = launcher.Start(context.Background(), Spec{Root: t.TempDir(), Exec: "/bin/sh"})
	if err == nil {
		t.Fatal("Start succeeded with a process that never read its spec")
	}
}

func TestNewLauncherRejectsBadTimeout(t *testing.T) {
	if _, err := NewLauncher(nil, nil, WithStartTimeout(-time.Second)); err == nil {
		t.Fatal("NewLauncher accepted a negative start timeout")
	}
}

func TestReadLines(t *testing.T) {
	input := "one\r\ntwo\n" + strings.Repeat("x", 20) + "\nlast"
	var got []string
	readLines(strings.NewReader(input), 8, func(line string) { got = append(got, line) })
	want := []string{"one", "two", "xxxxxxxx", "last"}
	if !slices.Equal(got, want) {
		t.Errorf("lines = %q, want %q", got, want)
	}
}

func TestVMLogReaderLimitsLinesAndKeepsFatal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	logger, logs := newTestLogger()
	reader := newVMLogReader(r, logger.With("vm", "noisy"))
	go reader.run()

	var input strings.Builder
	input.WriteString("{\"spec_received\":true}\n")
	for i := range maxLoggedLines + 50 {
		fmt.Fprintf(&input, "libkrun error %d\n", i)
	}
	input.WriteString("{\"fatal\":\"krun_start_enter: invalid argument (-22)\"}\n")
	if _, err := w.WriteString(input.String()); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	reader.finish(5 * time.Second)

	select {
	case <-reader.specReceived:
	default:
		t.Error("spec acknowledgement not seen")
	}
	if reader.fatal != "krun_start_enter: invalid argument (-22)" {
		t.Errorf("fatal = %q", reader.fatal)
	}
	out := logs.String()
	if n := strings.Count(out, `msg="vm log"`); n != maxLoggedLines {
		t.Errorf("logged %d lines, want %d", n, maxLoggedLines)
	}
	if !strings.Contains(out, `msg="vm log lines dropped" vm=noisy count=51`) {
		t.Errorf("log has no count of dropped lines:\n%s", out)
	}
	if strings.Contains(out, "spec_received") {
		t.Error("the spec acknowledgement was logged as a vm log line")
	}
}

func TestVMLogReaderFinishClosesHeldPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close() // held open, as by a process that inherited fd 4
	reader := newVMLogReader(r, slog.New(slog.DiscardHandler))
	go reader.run()

	start := time.Now()
	reader.finish(50 * time.Millisecond)
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("finish took %v", elapsed)
	}
	select {
	case <-reader.done:
	default:
		t.Error("reader still runs after finish")
	}
}

func TestKrunLauncherLeavesNoGoroutines(t *testing.T) {
	t.Setenv(LibraryEnv, "/nonexistent/libkrun.so.1")
	launcher, err := NewLauncher(nil, nil)
	if err != nil {
		t.Fatalf("NewLauncher: %v", err)
	}
	before := runtime.NumGoroutine()
	for i := range 3 {
		vm, err := launcher.Start(context.Background(), Spec{ID: strconv.Itoa(i), Root: t.TempDir(), Exec: "/bin/sh"})
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		<-readAllAsync(vm.Stdout())
		<-readAllAsync(vm.Stderr())
		if _, err := vm.Wait(); !errors.Is(err, ErrBootFailed) {
			t.Fatalf("Wait error = %v, want ErrBootFailed", err)
		}
	}

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("%d goroutines before, %d after three VMs ended", before, after)
	}
}

// publicTempDir returns a new temporary directory that every user can
// enter and write to, for files that a VM process running as an
// unprivileged user must reach.
func publicTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
