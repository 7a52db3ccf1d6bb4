package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// loadSessions is how many sessions TestLoadConcurrentSessions holds open
// at the same time.
const loadSessions = 50

// loadResult is what one session of the load test saw.
type loadResult struct {
	index  int
	status int
	output []byte
	err    error
}

// Fifty sessions, half console and half PTY, all hold their VM at the same
// time before they do their work. Every exit status and byte count must be
// right, and afterwards no VM process, session directory or server socket
// may be left.
func TestLoadConcurrentSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("load test skipped in -short mode")
	}
	cfg := testConfig(t, krtestRootfs(t))
	// All clients connect from 127.0.0.1 at once.
	cfg.PerSourceMaxStartups = loadSessions
	cfg.MaxSessions = loadSessions
	cfg.MaxSessionsPerIP = loadSessions
	srv := startServer(t, cfg, testLauncher())
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	socketsBefore := countSockets(t)

	payload := make([]byte, 64<<10)
	_, _ = rand.Read(payload)
	const ptyBytes = 10000

	release := make(chan struct{})
	var ready sync.WaitGroup
	ready.Add(loadSessions)
	results := make(chan loadResult, loadSessions)
	for i := range loadSessions {
		go func() {
			if i%2 == 0 {
				results <- srv.loadConsoleSession(i, payload, &ready, release)
			} else {
				results <- srv.loadPTYSession(i, ptyBytes, &ready, release)
			}
		}()
	}

	allReady := make(chan struct{})
	go func() {
		ready.Wait()
		close(allReady)
	}()
	select {
	case <-allReady:
	case <-time.After(2 * time.Minute):
		t.Fatal("not every session was ready after 2 minutes")
	}
	if n := len(processesMatching(exe)); n < loadSessions {
		t.Errorf("%d VM processes run while all sessions are held, want at least %d", n, loadSessions)
	}
	close(release)

	for range loadSessions {
		var r loadResult
		select {
		case r = <-results:
		case <-time.After(2 * time.Minute):
			t.Fatal("sessions did not finish within 2 minutes of their release")
		}
		if r.err != nil {
			t.Errorf("session %d: %v", r.index, r.err)
			continue
		}
		if want := r.index % 7; r.status != want {
			t.Errorf("session %d: exit status %d, want %d", r.index, r.status, want)
		}
		if r.index%2 == 0 {
			if !bytes.Equal(r.output, payload) {
				t.Errorf("session %d: console output is %d bytes, want the %d-byte payload unchanged", r.index, len(r.output), len(payload))
			}
		} else if n := bytes.Count(r.output, []byte("x")); n != ptyBytes {
			t.Errorf("session %d: PTY output has %d x bytes, want %d", r.index, n, ptyBytes)
		}
	}

	waitNoProcesses(t, exe)
	deadline := time.Now().Add(10 * time.Second)
	for countSockets(t) > socketsBefore && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if after := countSockets(t); after > socketsBefore {
		t.Errorf("server process has %d sockets after the load, %d before", after, socketsBefore)
	}
	waitNoSessionDirs(t, cfg.RuntimeDir)
	leftovers, _ := filepath.Glob(filepath.Join(cfg.RuntimeDir, "*"))
	for _, path := range leftovers {
		if filepath.Base(path) != "lock" {
			t.Errorf("runtime directory still holds %s", path)
		}
	}
}

// loadConsoleSession runs a console session that waits for release, then
// echoes payload through cat and exits with index%7.
func (srv *testServer) loadConsoleSession(index int, payload []byte, ready *sync.WaitGroup, release <-chan struct{}) loadResult {
	result := loadResult{index: index}
	session, err := srv.dialLoad()
	if err != nil {
		ready.Done()
		result.err = err
		return result
	}
	defer session.Close()
	stdin, _ := session.StdinPipe()
	stdout, _ := session.StdoutPipe()
	if err := session.Start(fmt.Sprintf("echo ready; read go; cat; exit %d", index%7)); err != nil {
		ready.Done()
		result.err = err
		return result
	}
	reader := bufio.NewReader(stdout)
	line, err := reader.ReadString('\n')
	ready.Done()
	if err != nil || line != "ready\n" {
		result.err = fmt.Errorf("first line %q, err %v; want ready", line, err)
		return result
	}
	<-release

	go func() {
		_, _ = io.WriteString(stdin, "go\n")
		_, _ = stdin.Write(payload)
		_ = stdin.Close()
	}()
	result.output, result.err = io.ReadAll(reader)
	if result.err == nil {
		result.status, result.err = waitStatus(session.Wait())
	}
	return result
}

// loadPTYSession runs a PTY session that waits for release, then writes
// count x bytes and exits with index%7.
func (srv *testServer) loadPTYSession(index, count int, ready *sync.WaitGroup, release <-chan struct{}) loadResult {
	result := loadResult{index: index}
	session, err := srv.dialLoad()
	if err != nil {
		ready.Done()
		result.err = err
		return result
	}
	defer session.Close()
	if err := session.RequestPty("xterm", 24, 80, gossh.TerminalModes{gossh.ECHO: 0}); err != nil {
		ready.Done()
		result.err = err
		return result
	}
	stdin, _ := session.StdinPipe()
	stdout, _ := session.StdoutPipe()
	command := fmt.Sprintf("echo ready; read go; head -c %d /dev/zero | tr '\\0' x; exit %d", count, index%7)
	if err := session.Start(command); err != nil {
		ready.Done()
		result.err = err
		return result
	}
	reader := bufio.NewReader(stdout)
	line, err := reader.ReadString('\n')
	ready.Done()
	if err != nil || strings.TrimRight(line, "\r\n") != "ready" {
		result.err = fmt.Errorf("first line %q, err %v; want ready", line, err)
		return result
	}
	<-release

	_, _ = io.WriteString(stdin, "go\n")
	result.output, result.err = io.ReadAll(reader)
	if result.err == nil {
		result.status, result.err = waitStatus(session.Wait())
	}
	return result
}

// dialLoad opens a connection and a session on it; the load test cannot
// use the t-bound helpers from its goroutines. Closing the session closes
// the connection too.
func (srv *testServer) dialLoad() (*loadSession, error) {
	client, err := gossh.Dial("tcp", srv.addr, &gossh.ClientConfig{
		User:            "test",
		Auth:            []gossh.AuthMethod{gossh.Password(testPassword)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         30 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	session, err := client.NewSession()
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	return &loadSession{Session: session, client: client}, nil
}

// loadSession is a session whose Close closes its connection as well.
type loadSession struct {
	*gossh.Session
	client *gossh.Client
}

func (s *loadSession) Close() error {
	_ = s.Session.Close()
	return s.client.Close()
}

// waitStatus turns session.Wait's result into an exit status.
func waitStatus(err error) (int, error) {
	if err == nil {
		return 0, nil
	}
	if exit, ok := err.(*gossh.ExitError); ok {
		return exit.ExitStatus(), nil
	}
	return -1, err
}

// countSockets returns how many sockets the test process has open.
func countSockets(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}
