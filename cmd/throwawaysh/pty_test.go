package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/middleware"
)

// terminalClient is the OpenSSH client running in a real PTY, as a person
// at a terminal would run it.
type terminalClient struct {
	t      *testing.T
	cmd    *exec.Cmd
	master *os.File

	mu     sync.Mutex
	output bytes.Buffer
	done   chan struct{}
}

func (srv *testServer) startTerminalSSH(t *testing.T, rows, cols uint16, env []string, options []string, command string) *terminalClient {
	t.Helper()
	args := append(srv.openSSHArgs("test"), options...)
	args = append(args, "127.0.0.1")
	if command != "" {
		args = append(args, command)
	}
	cmd := exec.Command(requireOpenSSH(t), args...)
	cmd.Env = append(askpassEnv(t, testPassword), env...)
	master, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: rows, Cols: cols})
	if err != nil {
		t.Fatal(err)
	}
	c := &terminalClient{t: t, cmd: cmd, master: master, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			c.mu.Lock()
			c.output.Write(buf[:n])
			c.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = master.Close()
		_ = cmd.Wait()
	})
	return c
}

func (c *terminalClient) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.output.String()
}

// waitFor waits until the output matches pattern and returns the match.
func (c *terminalClient) waitFor(pattern string) []string {
	c.t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(c.Output()); m != nil {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("terminal output never matched %q; output so far: %q", pattern, c.Output())
	return nil
}

func (c *terminalClient) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.master, s); err != nil {
		c.t.Fatalf("type %q: %v", s, err)
	}
}

// wait waits for the client to exit and for its last output to be read,
// and returns its status.
func (c *terminalClient) wait() int {
	c.t.Helper()
	exited := make(chan error, 1)
	go func() { exited <- c.cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		c.t.Fatalf("ssh did not exit; output: %q", c.Output())
	}
	// The terminal may still hold what the client wrote last; the reader
	// ends once it has read that and the terminal has closed.
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.t.Logf("terminal output not at end of file 5s after ssh exited")
	}
	return c.cmd.ProcessState.ExitCode()
}

func TestPTYShellSizeTermAndResize(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)

		c := srv.startTerminalSSH(t, 37, 101, []string{"TERM=xterm-256color"}, nil, "")
		c.send("stty size; echo \"term=$TERM\"; echo \"tty=$(tty) ssh_tty=$SSH_TTY\"\n")
		c.waitFor(`37 101`)
		c.waitFor(`term=xterm-256color`)
		// SSH_TTY names the session's terminal, as sshd sets it.
		c.waitFor(`tty=(/dev/pts/\d+) ssh_tty=/dev/pts/\d+`)
		if m := regexp.MustCompile(`tty=(/dev/pts/\d+) ssh_tty=(/dev/pts/\d+)`).FindStringSubmatch(c.Output()); m == nil || m[1] != m[2] {
			t.Errorf("SSH_TTY does not name the terminal: %q", m)
		}

		// A real terminal resize: the client gets SIGWINCH and sends
		// window-change.
		if err := pty.Setsize(c.master, &pty.Winsize{Rows: 52, Cols: 133}); err != nil {
			t.Fatal(err)
		}
		askUntil(t, c.master, c.Output, "stty size\n", "52 133")

		c.send("exit 7\n")
		if status := c.wait(); status != 7 {
			t.Errorf("exit status = %d, want 7; output %q", status, c.Output())
		}
	})
}

func TestPTYCommandWithForcedTerminal(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)

		c := srv.startTerminalSSH(t, 24, 80, []string{"TERM=vt100"}, []string{"-t"}, "tty; echo \"$TERM\"; exit 9")
		c.waitFor(`/dev/pts/\d+`)
		c.waitFor(`vt100`)
		if status := c.wait(); status != 9 {
			t.Errorf("exit status = %d, want 9; output %q", status, c.Output())
		}
	})
}

// With the SSH library's emulated PTY, every "\n" the server writes
// becomes "\r\n". The guest's terminal already did its own output
// processing, so the client must receive its bytes unchanged. Turning off
// onlcr in the guest makes any added "\r" visible.
func TestPTYOutputBytesUntouched(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)
		session := srv.goSession(t)
		if err := session.RequestPty("xterm", 24, 80, gossh.TerminalModes{}); err != nil {
			t.Fatal(err)
		}
		var stdout bytes.Buffer
		session.Stdout = &stdout
		err := session.Run("stty -onlcr; printf 'one\\ntwo\\n'")
		if status := exitStatusOf(t, err); status != 0 {
			t.Fatalf("exit status = %d, want 0; output %q", status, stdout.String())
		}
		if got := stdout.String(); got != "one\ntwo\n" {
			t.Errorf("output = %q, want %q", got, "one\ntwo\n")
		}
	})
}

// startGoShell starts an interactive shell in a PTY of rows x cols, without
// echo, through the x/crypto/ssh client, and returns its session, its
// stdin and its collected output.
func (srv *testServer) startGoShell(t *testing.T, rows, cols int) (*gossh.Session, io.Writer, *syncBuffer) {
	t.Helper()
	session, err := srv.dialGo(t, "test", testPassword).NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := session.RequestPty("xterm", rows, cols, gossh.TerminalModes{gossh.ECHO: 0}); err != nil {
		t.Fatal(err)
	}
	stdin, err := session.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	session.Stdout = out
	if err := session.Shell(); err != nil {
		t.Fatal(err)
	}
	return session, stdin, out
}

func TestPTYWindowChangeFromGoClient(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)
		session, stdin, out := srv.startGoShell(t, 30, 90)
		waitForOutput := func(want string) {
			t.Helper()
			deadline := time.Now().Add(30 * time.Second)
			for !strings.Contains(out.String(), want) {
				if time.Now().After(deadline) {
					t.Fatalf("output never contained %q: %q", want, out.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		_, _ = io.WriteString(stdin, "stty size\n")
		waitForOutput("30 90")
		if err := session.WindowChange(45, 120); err != nil {
			t.Fatal(err)
		}
		askUntil(t, stdin, out.String, "stty size\n", "45 120")
		_, _ = io.WriteString(stdin, "exit 0\n")
		if status := exitStatusOf(t, session.Wait()); status != 0 {
			t.Errorf("exit status = %d, want 0", status)
		}
	})
}

func TestPTYMissingAgentFailsFast(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, false)), b.launcher)

		start := time.Now()
		got := srv.runSSH(t, sshCall{options: []string{"-tt"}, command: "echo should-not-run"})
		elapsed := time.Since(start)

		if got.status != middleware.ExitVMFailed {
			t.Errorf("exit status = %d, want %d (VM failed)", got.status, middleware.ExitVMFailed)
		}
		// With -tt, the client merges the session's stderr into its
		// terminal output, which is stdout here.
		all := string(got.stdout) + string(got.stderr)
		for _, want := range []string{"/usr/local/bin/throwawaysh-guest-agent", "install_guest_agent.sh"} {
			if !strings.Contains(all, want) {
				t.Errorf("client output %q does not mention %q", all, want)
			}
		}
		if strings.Contains(all, "should-not-run") {
			t.Errorf("the command ran without the agent: %q", all)
		}
		if elapsed > 10*time.Second {
			t.Errorf("failing took %s; it must fail within seconds", elapsed)
		}
	})
}

func TestPTYLongCommandIntact(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)
		session := srv.goSession(t)
		if err := session.RequestPty("xterm", 24, 80, gossh.TerminalModes{}); err != nil {
			t.Fatal(err)
		}
		var stdout bytes.Buffer
		session.Stdout = &stdout
		// The agent runs "sh -c command" as sshd does, so one argument of
		// Linux's at most 128 KiB bounds the command, here as there.
		command := "#" + strings.Repeat("z", 100<<10) + "\necho \"it's\" 'grüße'; exit 4"
		err := session.Run(command)
		if status := exitStatusOf(t, err); status != 4 {
			t.Errorf("exit status = %d, want 4; output %q", status, stdout.String())
		}
		if got := stdout.String(); got != "it's grüße\r\n" {
			t.Errorf("output = %q, want %q", got, "it's grüße\r\n")
		}
	})
}

// A PTY command becomes one argument of the guest's shell, so Linux caps
// it at 128 KiB. One below the cap runs; one at it fails at once with a
// message that names the limit, not as a fault of the server.
func TestPTYCommandLengthLimit(t *testing.T) {
	srv := startServer(t, testConfig(t, krtestRootfs(t)), testLauncher())
	run := func(command string) (int, string, string) {
		session := srv.goSession(t)
		if err := session.RequestPty("xterm", 24, 80, gossh.TerminalModes{}); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		session.Stdout, session.Stderr = &stdout, &stderr
		return exitStatusOf(t, session.Run(command)), stdout.String(), stderr.String()
	}

	fits := ": " + strings.Repeat("x", 100<<10) + "; echo fits"
	if status, stdout, _ := run(fits); status != 0 || !strings.Contains(stdout, "fits") {
		t.Errorf("100 KiB command: status %d, stdout %q; want 0 and fits", status, stdout)
	}

	tooLong := ": " + strings.Repeat("x", 128<<10) + "; echo ran"
	status, stdout, stderr := run(tooLong)
	if status != middleware.ExitVMFailed {
		t.Errorf("128 KiB command: status %d, want %d", status, middleware.ExitVMFailed)
	}
	if strings.Contains(stdout, "ran") {
		t.Errorf("128 KiB command ran: stdout %q", stdout)
	}
	if !strings.Contains(stderr, "shorter than 131072 bytes") || !strings.Contains(stderr, "ssh -T") {
		t.Errorf("stderr = %q, want the limit and the way around it", stderr)
	}
}
