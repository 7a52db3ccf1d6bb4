package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/middleware"
)

// runningClient is an OpenSSH client started in the background.
type runningClient struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	exited         chan struct{}
}

// startClient starts the OpenSSH client with args, which end with the host
// and the command, and stdin (nil for none).
func startClient(t *testing.T, args []string, stdin io.Reader) *runningClient {
	t.Helper()
	c := &runningClient{cmd: exec.Command(requireOpenSSH(t), args...), exited: make(chan struct{})}
	c.cmd.Env = askpassEnv(t, testPassword)
	c.cmd.Stdin = stdin
	c.cmd.Stdout, c.cmd.Stderr = &c.stdout, &c.stderr
	// A stdin that is no *os.File is copied by a goroutine that Wait
	// waits for; WaitDelay bounds that wait once the client has exited.
	c.cmd.WaitDelay = 5 * time.Second
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.exited
	})
	return c
}

// wait waits for the client to exit and returns what it produced, failing
// the test after a minute.
func (c *runningClient) wait(t *testing.T) sshResult {
	t.Helper()
	select {
	case <-c.exited:
	case <-time.After(time.Minute):
		t.Fatalf("%q did not finish within a minute", c.cmd.Args)
	}
	return sshResult{stdout: c.stdout.Bytes(), stderr: c.stderr.Bytes(), status: c.cmd.ProcessState.ExitCode()}
}

// endSleep sends SIGTERM to the processes of a sleep started by
// uniqueSleep, which ends the session that runs it.
func endSleep(sleep string) {
	for _, pid := range processIDs(sleep) {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
}

// waitForLogCount waits until the server log contains text at least n
// times. "session end" comes after a session's counts are released.
func waitForLogCount(t *testing.T, srv *testServer, text string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(srv.logs.String(), text) < n {
		if time.Now().After(deadline) {
			t.Fatalf("server log has %q %d times, want %d", text, strings.Count(srv.logs.String(), text), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkRejected checks that got is a session rejected by a limit: status
// ExitCapacity and one stderr line that names the scope.
func checkRejected(t *testing.T, got sshResult, scope string) {
	t.Helper()
	if got.status != middleware.ExitCapacity {
		t.Errorf("exit status = %d, want %d (capacity); stderr %q", got.status, middleware.ExitCapacity, got.stderr)
	}
	stderr := string(got.stderr)
	if !strings.HasPrefix(stderr, "throwawaysh: ") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr = %q, want one line starting with \"throwawaysh: \"", stderr)
	}
	if !strings.Contains(stderr, scope) {
		t.Errorf("stderr = %q, want it to name the limit %q", stderr, scope)
	}
	if len(got.stdout) != 0 {
		t.Errorf("stdout = %q, want nothing: the command must not run", got.stdout)
	}
}

// With OpenSSH connection sharing, a session over the per-connection limit
// is rejected at once, the sessions already on the connection go on, and a
// session after one of them ended is admitted.
func TestLimitPerConnectionControlMaster(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	cfg.MaxSessionsPerConnection = 2
	srv := startServer(t, cfg, testLauncher())
	args := srv.startControlMaster(t)
	run := func(command string) *runningClient {
		return startClient(t, append(append([]string{}, args...), "127.0.0.1", command), nil)
	}

	sleeps := []string{uniqueSleep(t, 51), uniqueSleep(t, 52)}
	first := run(sleeps[0] + "; echo one")
	second := run(sleeps[1] + "; echo two")
	for _, sleep := range sleeps {
		waitForProcess(t, sleep)
	}

	// As with sshd's MaxSessions: the server refuses the third session
	// channel, and the client runs the command on a connection of its
	// own instead.
	three := run("echo three").wait(t)
	if three.status != 0 || string(three.stdout) != "three\n" {
		t.Errorf("third session: stdout %q status %d stderr %q, want \"three\\n\" and 0 on a connection of its own", three.stdout, three.status, three.stderr)
	}
	if !strings.Contains(srv.logs.String(), "session channel rejected") {
		t.Errorf("server did not refuse the third session channel:\n%s", srv.logs.String())
	}

	endSleep(sleeps[0])
	if got := first.wait(t); string(got.stdout) != "one\n" {
		t.Errorf("first session stdout = %q status %d, want \"one\\n\"", got.stdout, got.status)
	}
	waitForLogCount(t, srv, "session end", 2)
	after := run("echo four").wait(t)
	if after.status != 0 || string(after.stdout) != "four\n" {
		t.Errorf("session after one ended: stdout %q status %d stderr %q, want \"four\\n\" and 0", after.stdout, after.status, after.stderr)
	}

	endSleep(sleeps[1])
	if got := second.wait(t); string(got.stdout) != "two\n" {
		t.Errorf("second session stdout = %q status %d, want \"two\\n\"", got.stdout, got.status)
	}
}

// catSession is a console session running cat on a Go client connection.
type catSession struct {
	session *gossh.Session
	stdin   io.WriteCloser
	stdout  *bufio.Reader
}

func startCat(t *testing.T, client *gossh.Client) *catSession {
	t.Helper()
	session, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := session.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := session.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := session.Start("cat"); err != nil {
		t.Fatal(err)
	}
	return &catSession{session: session, stdin: stdin, stdout: bufio.NewReader(stdout)}
}

// echo writes line to cat and checks that it comes back.
func (c *catSession) echo(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		t.Fatalf("write to cat: %v", err)
	}
	got, err := c.stdout.ReadString('\n')
	if err != nil || got != line+"\n" {
		t.Fatalf("cat returned %q, %v; want %q", got, err, line+"\n")
	}
}

// An x/crypto/ssh client opens N+1 sessions on one connection: the last is
// rejected with ExitCapacity while the first N keep working.
func TestLimitPerConnectionGoClient(t *testing.T) {
	const limit = 3
	cfg := testConfig(t, krtestRootfs(t))
	cfg.MaxSessionsPerConnection = limit
	srv := startServer(t, cfg, testLauncher())
	client := srv.dialGo(t, "test", testPassword)

	var cats []*catSession
	for i := 0; i < limit; i++ {
		cat := startCat(t, client)
		cat.echo(t, "hello")
		cats = append(cats, cat)
	}

	// As sshd's MaxSessions: the channel is refused when it opens.
	var open *gossh.OpenChannelError
	if _, err := client.NewSession(); !errors.As(err, &open) || open.Reason != gossh.Prohibited {
		t.Errorf("session over the limit: err = %v, want administratively prohibited", err)
	}

	for _, cat := range cats {
		cat.echo(t, "still here")
	}
	_ = cats[0].stdin.Close()
	if status := exitStatusOf(t, cats[0].session.Wait()); status != 0 {
		t.Errorf("cat exit status = %d, want 0", status)
	}
	waitForLogCount(t, srv, "session end", 1)

	again, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := again.Output("echo again")
	if status := exitStatusOf(t, err); status != 0 || string(out) != "again\n" {
		t.Errorf("session after one ended: output %q status %d, want \"again\\n\" and 0", out, status)
	}
	for _, cat := range cats[1:] {
		_ = cat.stdin.Close()
		if status := exitStatusOf(t, cat.session.Wait()); status != 0 {
			t.Errorf("cat exit status = %d, want 0", status)
		}
	}
}

// Sessions from one address are limited over all its connections, and the
// server limit over all addresses. 127.0.0.2 is a second loopback address.
func TestLimitPerIPAndServer(t *testing.T) {
	tests := []struct {
		name           string
		perIP, server  int
		otherAddressOK bool
		scope          string
	}{
		{name: "per ip", perIP: 1, server: 0, otherAddressOK: true, scope: "per client address"},
		{name: "server", perIP: 0, server: 1, otherAddressOK: false, scope: "the server"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, krtestRootfs(t))
			cfg.MaxSessionsPerIP = tt.perIP
			cfg.MaxSessions = tt.server
			srv := startServer(t, cfg, testLauncher())

			sleep := uniqueSleep(t, 53+i)
			holder := srv.goSession(t)
			if err := holder.Start(sleep); err != nil {
				t.Fatal(err)
			}
			waitForProcess(t, sleep)

			sameAddress := srv.runSSH(t, sshCall{options: []string{"-b", "127.0.0.1"}, command: "echo same"})
			checkRejected(t, sameAddress, tt.scope)

			otherAddress := srv.runSSH(t, sshCall{options: []string{"-b", "127.0.0.2"}, command: "echo other"})
			if tt.otherAddressOK {
				if otherAddress.status != 0 || string(otherAddress.stdout) != "other\n" {
					t.Errorf("session from 127.0.0.2: stdout %q status %d stderr %q, want \"other\\n\" and 0",
						otherAddress.stdout, otherAddress.status, otherAddress.stderr)
				}
			} else {
				checkRejected(t, otherAddress, tt.scope)
			}

			endSleep(sleep)
			_ = holder.Wait()
			waitForLogCount(t, srv, "session end", 3)
			after := srv.runSSH(t, sshCall{command: "echo after"})
			if after.status != 0 || string(after.stdout) != "after\n" {
				t.Errorf("session after the holder ended: stdout %q status %d stderr %q", after.stdout, after.status, after.stderr)
			}
		})
	}
}

// Counts go down when sessions end, also when the client is killed and
// never closes its channel, so a limit of one admits session after session.
func TestLimitReleasedAfterSessionsEnd(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	cfg.MaxSessions = 1
	srv := startServer(t, cfg, testLauncher())

	ended := 0
	for _, options := range [][]string{nil, {"-tt"}, {"-s"}} {
		command := "echo done"
		if len(options) > 0 && options[0] == "-s" {
			// An SFTP session counts too; sftp-server is no program
			// here, so "sftp" is the subsystem name.
			command = "sftp"
		}
		got := srv.runSSH(t, sshCall{options: options, command: command, stdin: strings.NewReader("")})
		if got.status == middleware.ExitCapacity {
			t.Fatalf("session %v was rejected after the previous one ended: %q", options, got.stderr)
		}
		ended++
		waitForLogCount(t, srv, "session end", ended)
	}

	sleep := uniqueSleep(t, 55)
	killed := startClient(t, append(srv.openSSHArgs("test"), "127.0.0.1", sleep), nil)
	waitForProcess(t, sleep)
	rejected := srv.runSSH(t, sshCall{command: "echo while-full"})
	checkRejected(t, rejected, "the server")
	ended++

	_ = killed.cmd.Process.Kill()
	killed.wait(t)
	waitNoProcesses(t, sleep)
	ended++
	waitForLogCount(t, srv, "session end", ended)

	after := srv.runSSH(t, sshCall{command: "echo after"})
	if after.status != 0 || string(after.stdout) != "after\n" {
		t.Errorf("session after the killed client: stdout %q status %d stderr %q, want \"after\\n\" and 0", after.stdout, after.status, after.stderr)
	}
}
