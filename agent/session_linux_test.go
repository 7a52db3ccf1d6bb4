package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startAgent runs Serve in a goroutine on one end of a real unix socket and
// connects a Client on the other. Cleanup closes the client and checks that
// Serve returned nil.
func startAgent(t *testing.T, opts ServeOptions) *Client {
	t.Helper()
	if opts.Shell == "" {
		opts.Shell = "/bin/sh"
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t, "agent")
	}
	host, guest := connPair(t)
	served := make(chan error, 1)
	go func() { served <- Serve(context.Background(), guest, opts) }()

	client, err := Connect(testContext(t, 10*time.Second), host, testLogger(t, "host"))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() {
		if err := client.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return within 10s after Close")
		}
	})
	return client
}

// mustStart starts req with a PTY and fails the test when that fails.
func mustStart(t *testing.T, c *Client, req StartRequest) *Process {
	t.Helper()
	req.TTY = true
	p, err := c.Start(testContext(t, 10*time.Second), req)
	if err != nil {
		t.Fatalf("Start(%q): %v", req.Command, err)
	}
	if p.PID() <= 0 {
		t.Errorf("PID() = %d, want a process id", p.PID())
	}
	return p
}

// runCommand runs command to the end and returns its output and status.
func runCommand(t *testing.T, c *Client, req StartRequest) ([]byte, ExitStatus) {
	t.Helper()
	p := mustStart(t, c, req)
	out := readOutput(p)
	output := out.all(t, 20*time.Second)
	status, err := waitStatus(t, p, 10*time.Second)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return output, status
}

func TestSessionEchoExitStatus(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{})
	output, status := runCommand(t, c, StartRequest{Command: "echo hi; exit 3", Rows: 24, Cols: 80})
	// The PTY's line discipline turns "\n" into "\r\n".
	if string(output) != "hi\r\n" {
		t.Errorf("output = %q, want %q", output, "hi\r\n")
	}
	if status != (ExitStatus{Code: 3}) {
		t.Errorf("status = %+v, want code 3", status)
	}
}

// A resize travels on the control stream and input on the process's own
// stream, so input written right after a resize can reach the shell first.
// The test asks for the size again until the new one shows.
func TestSessionWindowSize(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{})
	p := mustStart(t, c, StartRequest{
		Command: "stty size; while read line; do stty size; done",
		Rows:    24, Cols: 80,
	})
	out := readOutput(p)
	out.waitFor(t, "24 80\r\n", 10*time.Second)

	if err := p.Resize(30, 100); err != nil {
		t.Fatalf("Resize(30, 100): %v", err)
	}
	askSize(t, p, out, "30 100\r\n")

	// 0 keeps the rows.
	if err := p.Resize(0, 120); err != nil {
		t.Fatalf("Resize(0, 120): %v", err)
	}
	askSize(t, p, out, "30 120\r\n")

	// Ctrl-D at the start of a line ends read's input.
	if _, err := p.Write([]byte{4}); err != nil {
		t.Fatalf("Write: %v", err)
	}
	out.all(t, 10*time.Second)
	status, err := waitStatus(t, p, 10*time.Second)
	if err != nil || status.Code != 0 {
		t.Errorf("Wait = %+v, %v; want code 0", status, err)
	}
	if err := p.Resize(10, 10); err == nil {
		t.Errorf("Resize after exit succeeded, want an error")
	}
	if err := p.Resize(70000, 10); err == nil || !strings.Contains(err.Error(), "rows") {
		t.Errorf("Resize(70000, 10) = %v, want an error naming rows", err)
	}
}

// askSize sends empty lines to a shell loop that prints its terminal size
// for each, until the output shows want.
func askSize(t *testing.T, p *Process, out *outputReader, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("terminal size %q never shown; output: %q", want, out.String())
		}
		if _, err := p.Write([]byte("\n")); err != nil {
			t.Fatalf("Write: %v", err)
		}
		wait := time.Now().Add(500 * time.Millisecond)
		for time.Now().Before(wait) && !strings.Contains(out.String(), want) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestSessionEnvironment(t *testing.T) {
	checkGoroutines(t)
	t.Setenv("THROWAWAYSH_LEAK_CHECK", "agent-own-env")
	c := startAgent(t, ServeOptions{})
	output, status := runCommand(t, c, StartRequest{
		Command: "env",
		Term:    "xterm-test",
		Env:     []string{"LANG=C.UTF-8", "PATH=/custom/bin:/usr/bin:/bin"},
	})
	if status.Code != 0 {
		t.Fatalf("env exited with %+v; output %q", status, output)
	}

	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(output)), "\r\n") {
		key, value, _ := strings.Cut(line, "=")
		env[key] = value
	}

	acct := lookupAccount("/etc/passwd", os.Getuid())
	want := map[string]string{
		"TERM":    "xterm-test",
		"HOME":    acct.home,
		"USER":    acct.name,
		"LOGNAME": acct.name,
		"SHELL":   "/bin/sh",
		"LANG":    "C.UTF-8",
		"PATH":    "/custom/bin:/usr/bin:/bin",
	}
	for key, value := range want {
		if env[key] != value {
			t.Errorf("%s = %q, want %q", key, env[key], value)
		}
	}
	if !strings.HasPrefix(env["SSH_TTY"], "/dev/pts/") {
		t.Errorf("SSH_TTY = %q, want the process's terminal under /dev/pts", env["SSH_TTY"])
	}

	if _, ok := env["THROWAWAYSH_LEAK_CHECK"]; ok {
		t.Errorf("the agent's own environment reached the process: %q", output)
	}
	allowed := map[string]bool{"PWD": true, "SHLVL": true, "_": true, "OLDPWD": true, "SSH_TTY": true}
	for key := range env {
		if _, ok := want[key]; !ok && !allowed[key] {
			t.Errorf("unexpected variable %s=%q", key, env[key])
		}
	}
}

func TestSessionDefaultPathAndNoTerm(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{})
	output, _ := runCommand(t, c, StartRequest{Command: `echo "path=$PATH term=${TERM-unset}"`})
	want := "path=" + defaultPath + " term=unset\r\n"
	if string(output) != want {
		t.Errorf("output = %q, want %q", output, want)
	}
}

func TestSessionInputReachesCat(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{})
	p := mustStart(t, c, StartRequest{Command: "cat"})
	out := readOutput(p)
	if _, err := p.Write([]byte("hello\n")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	// The terminal echoes the line, then cat prints it.
	out.waitFor(t, "hello\r\nhello\r\n", 10*time.Second)
	// Ctrl-D at the start of a line is end of file for cat.
	if _, err := p.Write([]byte{4}); err != nil {
		t.Fatalf("Write: %v", err)
	}
	out.all(t, 10*time.Second)
	status, err := waitStatus(t, p, 10*time.Second)
	if err != nil || status != (ExitStatus{}) {
		t.Errorf("Wait = %+v, %v; want code 0", status, err)
	}
	if _, err := p.Write([]byte("late")); err == nil {
		t.Errorf("Write after exit succeeded, want an error")
	}
}

// rawModes turns off every terminal mode that changes bytes, so that data
// passes the PTY unchanged.
var rawModes = map[uint8]uint32{
	36: 0, // ICRNL
	38: 0, // IXON
	50: 0, // ISIG
	51: 0, // ICANON
	53: 0, // ECHO
	59: 0, // IEXTEN
	70: 0, // OPOST
}

func TestSessionLargeOutput(t *testing.T) {
	checkGoroutines(t)
	data := make([]byte, 1<<20)
	rand.Read(data)
	file := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c := startAgent(t, ServeOptions{})
	output, status := runCommand(t, c, StartRequest{Command: "cat " + file, Modes: rawModes})
	if status.Code != 0 {
		t.Errorf("status = %+v, want code 0", status)
	}
	if !bytes.Equal(output, data) {
		t.Errorf("output is %d bytes and differs from the %d bytes of the file", len(output), len(data))
	}
}

func TestSessionLargeInput(t *testing.T) {
	checkGoroutines(t)
	data := make([]byte, 1<<20)
	rand.Read(data)
	sum := sha256.Sum256(data)
	c := startAgent(t, ServeOptions{})
	p := mustStart(t, c, StartRequest{
		Command: fmt.Sprintf("head -c %d | sha256sum", len(data)),
		Modes:   rawModes,
	})
	out := readOutput(p)
	if _, err := p.Write(data); err != nil {
		t.Fatalf("Write: %v", err)
	}
	output := out.all(t, 20*time.Second)
	if want := hex.EncodeToString(sum[:]); !strings.HasPrefix(string(output), want) {
		t.Errorf("sha256sum printed %q, want %s", output, want)
	}
}

// waitSession polls until the session of sid has at least n live
// processes, or none when n is 0.
func waitSession(t *testing.T, sid, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		members := len(sessionMembers(sid))
		if (n == 0 && members == 0) || (n > 0 && members >= n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %d has %d processes, want %d", sid, members, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSessionSignalInterruptsPipeline(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{})
	p := mustStart(t, c, StartRequest{Command: "sleep 100 | cat"})
	out := readOutput(p)
	// sh, sleep and cat.
	waitSession(t, p.PID(), 3)

	if err := p.Signal("INT"); err != nil {
		t.Fatalf("Signal(INT): %v", err)
	}
	out.all(t, 10*time.Second)
	status, err := waitStatus(t, p, 10*time.Second)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if status != (ExitStatus{Code: 130, Signal: "INT"}) {
		t.Errorf("status = %+v, want code 130 and signal INT", status)
	}
	waitSession(t, p.PID(), 0)
}

func TestSessionKilledByTerm(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{})
	p := mustStart(t, c, StartRequest{Command: "sleep 100"})
	out := readOutput(p)
	waitSession(t, p.PID(), 1)
	if err := p.Signal("TERM"); err != nil {
		t.Fatalf("Signal(TERM): %v", err)
	}
	out.all(t, 10*time.Second)
	status, err := waitStatus(t, p, 10*time.Second)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if status != (ExitStatus{Code: 143, Signal: "TERM"}) {
		t.Errorf("status = %+v, want code 143 and signal TERM", status)
	}
	if err := p.Signal("TERM"); err == nil {
		t.Errorf("Signal after exit succeeded, want an error")
	}
}

func TestSessionSignalRejectsUnknownName(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{})
	p := mustStart(t, c, StartRequest{Command: "exit 0"})
	err := p.Signal("WINCH")
	if err == nil || !strings.Contains(err.Error(), `"WINCH"`) || !strings.Contains(err.Error(), "INT") {
		t.Errorf("Signal(WINCH) = %v, want an error naming WINCH and the supported names", err)
	}
	readOutput(p).all(t, 10*time.Second)
	if _, err := waitStatus(t, p, 10*time.Second); err != nil {
		t.Errorf("Wait: %v", err)
	}
}

func TestSessionLoginShell(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{})
	p := mustStart(t, c, StartRequest{})
	out := readOutput(p)
	if _, err := p.Write([]byte("echo \"zero=$0\"; exit 5\n")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	out.all(t, 10*time.Second)
	status, err := waitStatus(t, p, 10*time.Second)
	if err != nil || status.Code != 5 {
		t.Errorf("Wait = %+v, %v; want code 5", status, err)
	}
	if !strings.Contains(out.String(), "zero=-sh\r\n") {
		t.Errorf("output %q lacks zero=-sh, the login shell's argv[0]", out.String())
	}
}

func TestSessionTerminalModes(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{})
	output, _ := runCommand(t, c, StartRequest{
		Command: "stty -a",
		Modes:   map[uint8]uint32{3: 8, 2: 255, 53: 0, 42: 1, 90: 1, 91: 0, 128: 9600, 11: 25, 0: 1, 200: 1},
	})
	// CS7 (90) is ignored: Linux PTYs always use CS8.
	for _, want := range []string{"erase = ^H", "quit = <undef>", "-echo ", "iutf8", "cs8"} {
		if !strings.Contains(string(output), want) {
			t.Errorf("stty -a output lacks %q:\n%s", want, output)
		}
	}
}

func TestSessionTTYFalseRejected(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{})
	_, err := c.Start(testContext(t, 10*time.Second), StartRequest{Command: "true", TTY: false})
	if err == nil || !strings.Contains(err.Error(), "tty false is not supported") {
		t.Fatalf("Start with TTY false = %v, want the agent's error about tty", err)
	}
	// The connection stays usable.
	output, status := runCommand(t, c, StartRequest{Command: "echo still here"})
	if string(output) != "still here\r\n" || status.Code != 0 {
		t.Errorf("after a rejected start: output %q, status %+v", output, status)
	}
}

func TestSessionStartErrors(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{Shell: "/nonexistent/shell"})
	_, err := c.Start(testContext(t, 10*time.Second), StartRequest{Command: "true", TTY: true})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/shell") {
		t.Errorf("Start with a missing shell = %v, want an error naming the shell", err)
	}
	_, err = c.Start(testContext(t, 10*time.Second), StartRequest{Command: "a\x00b", TTY: true})
	if err == nil || !strings.Contains(err.Error(), "NUL") {
		t.Errorf("Start with a NUL in the command = %v, want an error about NUL", err)
	}
	_, err = c.Start(testContext(t, 10*time.Second), StartRequest{TTY: true, Rows: 1 << 20})
	if err == nil || !strings.Contains(err.Error(), `"rows"`) {
		t.Errorf("Start with 1<<20 rows = %v, want an error naming rows", err)
	}
}

func TestSessionOutputOfBackgroundJob(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{})
	start := time.Now()
	// The background job inherits sh's ignored SIGHUP, so it survives both
	// the kernel's hangup when sh exits and the agent's, and keeps the
	// terminal open. Only the drain's idle timeout ends the output.
	p := mustStart(t, c, StartRequest{Command: "trap '' HUP; sleep 30 & echo started; exit 4"})
	t.Cleanup(func() {
		for _, pid := range sessionMembers(p.PID()) {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
	out := readOutput(p)
	output := out.all(t, 10*time.Second)
	status, err := waitStatus(t, p, 10*time.Second)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}

	if status.Code != 4 {
		t.Errorf("status = %+v, want code 4", status)
	}
	if string(output) != "started\r\n" {
		t.Errorf("output = %q, want %q", output, "started\r\n")
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("the session took %s; the background job held it open", elapsed)
	}
	if len(sessionMembers(p.PID())) == 0 {
		t.Errorf("the background job is gone, so the test did not cover the idle timeout")
	}
}

// A background job that ignores SIGHUP and keeps writing to the terminal
// never lets the drain after exit go idle. The agent must still send exit
// soon after the shell exits, as sshd ends a PTY session when its shell
// exits, instead of forwarding the job's output forever.
func TestSessionBackgroundWriterDoesNotHoldExit(t *testing.T) {
	tests := []struct {
		name    string
		command string
	}{
		{"trickle", "trap '' HUP; (while :; do echo tick; sleep 0.05; done) & exit 4"},
		{"flood", "trap '' HUP; (while :; do echo flood flood flood flood flood; done) & exit 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			c := startAgent(t, ServeOptions{})
			start := time.Now()
			p := mustStart(t, c, StartRequest{Command: tt.command})
			t.Cleanup(func() {
				for _, pid := range sessionMembers(p.PID()) {
					unix.Kill(pid, unix.SIGKILL)
				}
			})

			out := readOutput(p)
			out.all(t, 15*time.Second)
			status, err := waitStatus(t, p, 5*time.Second)
			if err != nil || status.Code != 4 {
				t.Errorf("Wait = %+v, %v; want code 4", status, err)
			}
			if elapsed := time.Since(start); elapsed > 10*time.Second {
				t.Errorf("the session took %s; the background job held it open", elapsed)
			}
		})
	}
}

func TestSessionCloseHangsUp(t *testing.T) {
	checkGoroutines(t)
	host, guest := connPair(t)
	served := make(chan error, 1)
	go func() {
		served <- Serve(context.Background(), guest, ServeOptions{Shell: "/bin/sh", Logger: testLogger(t, "agent")})
	}()
	c, err := Connect(testContext(t, 10*time.Second), host, testLogger(t, "host"))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	p := mustStart(t, c, StartRequest{Command: "sleep 100"})
	out := readOutput(p)
	waitSession(t, p.PID(), 1)

	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after the host closed = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Serve did not return within 10s after the host closed")
	}
	waitSession(t, p.PID(), 0)
	if _, err := p.Wait(); err == nil || !errors.Is(err, errClientClosed) {
		t.Errorf("Wait after Close = %v, want the client-closed error", err)
	}
	out.all(t, 5*time.Second)
}

func TestServeContextCancel(t *testing.T) {
	checkGoroutines(t)
	host, guest := connPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, guest, ServeOptions{Shell: "/bin/sh", Logger: testLogger(t, "agent")})
	}()
	c, err := Connect(testContext(t, 10*time.Second), host, testLogger(t, "host"))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer c.Close()
	p := mustStart(t, c, StartRequest{Command: "trap '' HUP; sleep 100"})
	readOutput(p)
	waitSession(t, p.PID(), 1)

	cancel()
	select {
	case err := <-served:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Serve after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("Serve did not return within 15s after cancel")
	}
	// The shell ignored the hangup, so only SIGKILL ended it.
	waitSession(t, p.PID(), 0)
	if _, err := p.Wait(); !errors.Is(err, ErrAgentLost) {
		t.Errorf("Wait after the agent stopped = %v, want ErrAgentLost", err)
	}
}

func TestSignalNumbersMatchLinux(t *testing.T) {
	for name, number := range linuxSignals {
		if got := unix.SignalNum("SIG" + name); int(got) != number {
			t.Errorf("signal %s: table has %d, unix.SignalNum has %d", name, number, got)
		}
	}
}
