package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/middleware"
)

// pacedLines is client input that arrives as count lines, one every
// interval, as a person typing would send it.
type pacedLines struct {
	count    int
	interval time.Duration
	sent     int
}

func (p *pacedLines) Read(b []byte) (int, error) {
	if p.sent == p.count {
		return 0, io.EOF
	}
	time.Sleep(p.interval)
	p.sent++
	return copy(b, fmt.Sprintf("line %d\n", p.sent)), nil
}

// silentStdin returns a pipe for a client's stdin that stays open and
// sends nothing until the test ends. An *os.File is passed to the client
// as is, so no copying goroutine holds up exec.Cmd.Wait.
func silentStdin(t *testing.T) *os.File {
	t.Helper()
	reader, writer, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = writer.Close()
		_ = reader.Close()
	})
	return reader
}

// checkTimedOut checks that got ended by a timeout: status ExitTimeout and
// message on stderr as one line.
func checkTimedOut(t *testing.T, got sshResult, message string) {
	t.Helper()
	if got.status != middleware.ExitTimeout {
		t.Errorf("exit status = %d, want %d (timeout); stdout %q stderr %q", got.status, middleware.ExitTimeout, got.stdout, got.stderr)
	}
	if want := "throwawaysh: " + message + "\n"; string(got.stderr) != want {
		t.Errorf("stderr = %q, want %q", got.stderr, want)
	}
}

func TestSessionTimeoutConsole(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	cfg.SessionTimeout = 2 * time.Second
	cfg.IdleTimeout = 0
	srv := startServer(t, cfg, testLauncher())

	sleep := uniqueSleep(t, 41)
	got := srv.runSSH(t, sshCall{command: "echo started; " + sleep})
	checkTimedOut(t, got, "the session reached its time limit of 2s and was ended")
	if string(got.stdout) != "started\n" {
		t.Errorf("stdout = %q, want the output before the timeout", got.stdout)
	}
	waitNoProcesses(t, sleep)
	waitNoSessionDirs(t, cfg.RuntimeDir)
	if !strings.Contains(srv.logs.String(), "session timed out") {
		t.Error("the server did not log the timeout")
	}
	checkNoAgentLostWarning(t, srv)
}

// checkNoAgentLostWarning fails the test if the server logged the loss of
// a guest agent as unexpected: a VM killed on purpose takes its agent along.
func checkNoAgentLostWarning(t *testing.T, srv *testServer) {
	t.Helper()
	if logs := srv.logs.String(); regexp.MustCompile(`WARN\s+agent lost`).MatchString(logs) {
		t.Errorf("the server warned that the guest agent was lost after it killed the VM on purpose:\n%s", logs)
	}
}

// The idle timer does not fire while a command writes output or reads
// input more often than the timeout, and fires once both stop. Each
// command goes silent in a sleep after its data flowed for twice the
// timeout. A command that ends by itself could end after the timeout,
// because the test launcher's VM process is a race-enabled binary, which
// pauses for a second as it exits.
func TestIdleTimeoutConsole(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	// Ten times the 200 ms pace of the output and input below, so that a
	// loaded machine's scheduling gaps stay far below it.
	cfg.IdleTimeout = 2 * time.Second
	srv := startServer(t, cfg, testLauncher())
	const message = "the session had no input or output for 2s and was ended"

	t.Run("output flows", func(t *testing.T) {
		sleep := uniqueSleep(t, 42)
		got := srv.runSSH(t, sshCall{command: "for i in $(seq 15); do echo tick; sleep 0.2; done; " + sleep})
		checkTimedOut(t, got, message)
		if n := strings.Count(string(got.stdout), "tick"); n != 15 {
			t.Errorf("stdout %q has %d ticks, want 15: the timeout fired while output flowed", got.stdout, n)
		}
		waitNoProcesses(t, sleep)
	})

	t.Run("input flows", func(t *testing.T) {
		// The command writes nothing until its input ends, three seconds
		// after it starts.
		sleep := uniqueSleep(t, 43)
		got := srv.runSSH(t, sshCall{
			command: `n=0; while read line; do n=$((n+1)); done; echo "read $n"; ` + sleep,
			stdin:   &pacedLines{count: 15, interval: 200 * time.Millisecond},
		})
		checkTimedOut(t, got, message)
		if string(got.stdout) != "read 15\n" {
			t.Errorf("stdout = %q, want \"read 15\\n\": the timeout fired while input flowed", got.stdout)
		}
		waitNoProcesses(t, sleep)
	})

	t.Run("sftp idle", func(t *testing.T) {
		got := startClient(t, append(srv.openSSHArgs("test"), "-s", "127.0.0.1", "sftp"), silentStdin(t)).wait(t)
		checkTimedOut(t, got, message)
	})
}

// In a PTY session, output and typed input keep the session alive, even
// typing that the terminal does not echo. Then the idle timeout ends it.
func TestIdleTimeoutPTY(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	// Two seconds, so that a loaded machine's scheduling gaps between the
	// keys typed 100 ms apart stay far below it.
	cfg.IdleTimeout = 2 * time.Second
	srv := startServer(t, cfg, testLauncher())
	c := srv.startTerminalSSH(t, 24, 80, nil, nil, "")

	c.send("for i in $(seq 15); do echo tick$i; sleep 0.2; done\n")
	c.waitFor(`tick15`)

	c.send("stty -echo; echo echo-off\n")
	c.waitFor(`echo-off`)
	// Thirty keys 100 ms apart, no output: ": " makes the line a no-op.
	c.send(": ")
	for i := 0; i < 30; i++ {
		time.Sleep(100 * time.Millisecond)
		c.send("x")
	}
	c.send("\necho typed-$((1+1))\n")
	c.waitFor(`typed-2`)

	status := c.wait()
	if status != middleware.ExitTimeout {
		t.Errorf("exit status = %d, want %d (timeout); output %q", status, middleware.ExitTimeout, c.Output())
	}
	output := c.Output()
	if !strings.HasSuffix(output, "throwawaysh: the session had no input or output for 2s and was ended\r\n") {
		t.Errorf("terminal output %q does not end with the idle timeout message", output)
	}
	if strings.Count(output, "throwawaysh:") != 1 {
		t.Errorf("terminal output %q has more than one message from throwawaysh", output)
	}
}

func TestSessionTimeoutPTY(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	cfg.SessionTimeout = 1500 * time.Millisecond
	srv := startServer(t, cfg, testLauncher())
	session := srv.goSession(t)
	if err := session.RequestPty("xterm", 24, 80, gossh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	session.Stdout, session.Stderr = &stdout, &stderr
	sleep := uniqueSleep(t, 44)

	err := session.Run(sleep)
	if status := exitStatusOf(t, err); status != middleware.ExitTimeout {
		t.Errorf("exit status = %d, want %d (timeout); stdout %q stderr %q", status, middleware.ExitTimeout, stdout.String(), stderr.String())
	}
	if want := "throwawaysh: the session reached its time limit of 1.5s and was ended\r\n"; stderr.String() != want {
		t.Errorf("stderr = %q, want %q", stderr.String(), want)
	}
	waitNoProcesses(t, sleep)
	waitNoSessionDirs(t, cfg.RuntimeDir)
	checkNoAgentLostWarning(t, srv)
}
