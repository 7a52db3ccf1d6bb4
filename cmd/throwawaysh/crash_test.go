package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// serverProcessEnv makes the test binary run as a throwawaysh server with
// the test launcher, configured by the JSON config in the variable. It
// prints "listening ADDR" on stdout once it accepts connections and logs
// to stderr.
const serverProcessEnv = "THROWAWAYSH_TEST_SERVER"

// runServerProcessIfRequested serves as main does, with the test launcher,
// when the test binary was started by startServerProcess.
func runServerProcessIfRequested() {
	encoded := os.Getenv(serverProcessEnv)
	if encoded == "" {
		return
	}
	var cfg config
	if err := json.Unmarshal([]byte(encoded), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(exitFailure)
	}
	logger := newLogger(cfg, os.Stderr)
	runtimeDir, err := middleware.OpenRuntimeDir(cfg.RuntimeDir, logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(exitFailure)
	}
	defer runtimeDir.Close()
	sessions := middleware.NewTracker()
	srv, err := newServer(cfg, &krtest.Launcher{}, sessions, logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(exitFailure)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(exitFailure)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	os.Exit(serve(context.Background(), srv, ln, sessions, logger))
}

// serverProcess is a server started by startServerProcess.
type serverProcess struct {
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuffer
	done   chan struct{}
}

// startServerProcess starts the test binary as a server for cfg and
// returns once it listens.
func startServerProcess(t *testing.T, cfg config) *serverProcess {
	t.Helper()
	encoded, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), serverProcessEnv+"="+string(encoded))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &serverProcess{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("server process log:\n%s", p.stderr.String())
		}
	})

	lines := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(stdout)
		if scanner.Scan() {
			lines <- scanner.Text()
		}
		close(lines)
	}()
	select {
	case line, ok := <-lines:
		addr, found := strings.CutPrefix(line, "listening ")
		if !ok || !found {
			t.Fatalf("server process did not start: %q\n%s", line, p.stderr.String())
		}
		p.addr = addr
	case <-time.After(30 * time.Second):
		t.Fatalf("server process not listening after 30s:\n%s", p.stderr.String())
	}
	return p
}

// After the server dies with SIGKILL, its VMs end with it, and the next
// server on the same runtime directory removes the session directories it
// left before it accepts connections.
func TestServerCrashLeftoversRemovedAtStart(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	first := startServerProcess(t, cfg)
	srv := &testServer{addr: first.addr, cfg: cfg, logs: first.stderr}
	_, srv.port, _ = strings.Cut(first.addr, ":")
	sleep := uniqueSleep(t, 30)
	srv.startHeldSession(t, sleep+" & sleep 0")
	waitForProcess(t, sleep)

	sessions, _ := filepath.Glob(filepath.Join(cfg.RuntimeDir, "session-*"))
	if len(sessions) != 1 {
		t.Fatalf("runtime directory has %d session directories during the session, want 1", len(sessions))
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	waitNoProcesses(t, sleep)
	if _, err := os.Stat(sessions[0]); err != nil {
		t.Fatalf("the crashed server's session directory is already gone (%v); the test cannot show the cleanup", err)
	}

	second := startServerProcess(t, cfg)
	if _, err := os.Stat(sessions[0]); !os.IsNotExist(err) {
		t.Errorf("session directory %s still exists after the next start (err = %v)", sessions[0], err)
	}
	// The log arrives through a pipe of its own, maybe after "listening".
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(second.stderr.String(), "stale session directory removed dir="+sessions[0]) {
		if time.Now().After(deadline) {
			t.Fatalf("the next server did not log what it removed:\n%s", second.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
