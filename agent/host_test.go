package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// fakeAgent plays the agent's side of a connection from a script, to test
// how the host handles agents that misbehave.
type fakeAgent struct {
	t       *testing.T
	session *yamux.Session
	control *yamux.Stream
	reader  *bufio.Reader
}

// runFakeAgent runs script as the agent on conn once the host has opened
// the control stream. Cleanup waits for the script and closes the session.
func runFakeAgent(t *testing.T, conn net.Conn, script func(a *fakeAgent)) {
	t.Helper()
	session, err := yamux.Client(conn, newMuxConfig(testLogger(t, "fake-agent"), 16))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		control, err := session.AcceptStreamWithContext(ctx)
		if err != nil {
			return
		}
		script(&fakeAgent{t: t, session: session, control: control, reader: bufio.NewReader(control)})
	}()
	t.Cleanup(func() {
		session.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("the fake agent's script did not end")
		}
	})
}

func (a *fakeAgent) writeLine(line string) {
	a.control.Write([]byte(line + "\n"))
}

func (a *fakeAgent) send(m Message) {
	line, err := EncodeMessage(m)
	if err != nil {
		a.t.Errorf("fake agent: %v", err)
		return
	}
	a.writeLine(string(line))
}

// read returns the host's next control message, or nil when the
// connection ended.
func (a *fakeAgent) read() Message {
	m, err := readMessage(a.reader)
	if err != nil {
		return nil
	}
	return m
}

// handshake sends a valid hello and reads the host's.
func (a *fakeAgent) handshake() {
	a.send(&HelloMsg{Version: ProtocolVersion, Software: "fake-agent"})
	if _, ok := a.read().(*HelloMsg); !ok {
		a.t.Errorf("fake agent: the host did not send hello first")
	}
}

// fakeData is a data stream as the fake agent sees it: input holds what
// follows the attach line.
type fakeData struct {
	*yamux.Stream
	input *bufio.Reader
}

// startProcess answers the host's start with started and reads the attach
// line of the data stream. It returns the data stream.
func (a *fakeAgent) startProcess() *fakeData {
	start, ok := a.read().(*StartMsg)
	if !ok {
		a.t.Errorf("fake agent: expected start")
		return nil
	}
	a.send(&StartedMsg{ID: start.ID, PID: 100})
	stream, err := a.session.AcceptStream()
	if err != nil {
		a.t.Errorf("fake agent: accept data stream: %v", err)
		return nil
	}
	input := bufio.NewReader(stream)
	if _, err := readMessage(input); err != nil {
		a.t.Errorf("fake agent: read attach: %v", err)
	}
	return &fakeData{Stream: stream, input: input}
}

// waitClosed blocks until the host closes the connection.
func (a *fakeAgent) waitClosed() {
	<-a.session.CloseChan()
}

func connectFake(t *testing.T, script func(a *fakeAgent)) (*Client, error) {
	t.Helper()
	host, guest := connPair(t)
	runFakeAgent(t, guest, script)
	client, err := Connect(testContext(t, 10*time.Second), host, testLogger(t, "host"))
	if client != nil {
		t.Cleanup(func() { client.Close() })
	}
	return client, err
}

func TestConnectVersionMismatch(t *testing.T) {
	checkGoroutines(t)
	_, err := connectFake(t, func(a *fakeAgent) {
		a.send(&HelloMsg{Version: 99, Software: "future-agent"})
		a.waitClosed()
	})
	if !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("Connect = %v, want ErrVersionMismatch", err)
	}
	for _, want := range []string{"version 99", "version 1", "future-agent", "./install_guest_agent.sh ROOTFS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestConnectGarbageHello(t *testing.T) {
	checkGoroutines(t)
	_, err := connectFake(t, func(a *fakeAgent) {
		a.writeLine("this is not JSON")
		a.waitClosed()
	})
	if !errors.Is(err, ErrAgentLost) || !strings.Contains(err.Error(), "malformed JSON") {
		t.Fatalf("Connect = %v, want ErrAgentLost about malformed JSON", err)
	}
}

func TestConnectWrongFirstMessage(t *testing.T) {
	checkGoroutines(t)
	_, err := connectFake(t, func(a *fakeAgent) {
		a.send(&StartedMsg{ID: 1, PID: 1})
		a.waitClosed()
	})
	if !errors.Is(err, ErrAgentLost) || !strings.Contains(err.Error(), "started instead of hello") {
		t.Fatalf("Connect = %v, want ErrAgentLost naming the started message", err)
	}
}

func TestConnectPeerNotYamux(t *testing.T) {
	checkGoroutines(t)
	host, guest := connPair(t)
	go func() {
		guest.Write([]byte("SSH-2.0-not-an-agent\r\n"))
		io.Copy(io.Discard, guest)
	}()
	_, err := Connect(testContext(t, 10*time.Second), host, testLogger(t, "host"))
	if !errors.Is(err, ErrAgentLost) {
		t.Fatalf("Connect to a peer that does not speak yamux = %v, want ErrAgentLost", err)
	}
}

func TestConnectContextEnds(t *testing.T) {
	checkGoroutines(t)
	host, guest := connPair(t)
	runFakeAgent(t, guest, func(a *fakeAgent) { a.waitClosed() })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Connect(ctx, host, testLogger(t, "host"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect to an agent that sends no hello = %v, want context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Connect returned after %s, long after its context ended", elapsed)
	}
}

// awaitStarted blocks the fake agent until the test closes started, which
// it does once Start has returned, or until the connection ends. Input sent
// by the host cannot serve as that signal: yamux can report a Write as
// failed when the session ends right after the frame went out.
func (a *fakeAgent) awaitStarted(started <-chan struct{}) {
	select {
	case <-started:
	case <-a.session.CloseChan():
	}
}

func TestWaitAgentSendsGarbage(t *testing.T) {
	checkGoroutines(t)
	started := make(chan struct{})
	c, err := connectFake(t, func(a *fakeAgent) {
		a.handshake()
		stream := a.startProcess()
		// The garbage must not race with Start.
		a.awaitStarted(started)
		if stream != nil {
			stream.Write([]byte("partial output"))
		}
		a.writeLine("{not json")
		a.waitClosed()
	})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	p, err := c.Start(testContext(t, 10*time.Second), StartRequest{TTY: true})
	close(started)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	status, err := waitStatus(t, p, 10*time.Second)
	if !errors.Is(err, ErrAgentLost) || !strings.Contains(err.Error(), "malformed JSON") {
		t.Fatalf("Wait = %+v, %v; want ErrAgentLost about malformed JSON", status, err)
	}
	output := readOutput(p).all(t, 5*time.Second)
	if !strings.HasPrefix("partial output", string(output)) {
		t.Errorf("output = %q, want a prefix of the data sent before the garbage", output)
	}
	if _, err := c.Start(testContext(t, 10*time.Second), StartRequest{TTY: true}); !errors.Is(err, ErrAgentLost) {
		t.Errorf("Start after the agent was lost = %v, want ErrAgentLost", err)
	}
}

func TestWaitAgentClosesConnection(t *testing.T) {
	checkGoroutines(t)
	started := make(chan struct{})
	c, err := connectFake(t, func(a *fakeAgent) {
		a.handshake()
		a.startProcess()
		a.awaitStarted(started)
		a.session.Close()
	})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	p, err := c.Start(testContext(t, 10*time.Second), StartRequest{TTY: true})
	close(started)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if _, err := waitStatus(t, p, 10*time.Second); !errors.Is(err, ErrAgentLost) {
		t.Fatalf("Wait = %v, want ErrAgentLost", err)
	}
	readOutput(p).all(t, 5*time.Second)
	if _, err := p.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after the agent was lost = %v, want net.ErrClosed", err)
	}
}

// slowRead reads r in small chunks with a pause after each, as a slow SSH
// client does, until end of file. It fails the test when r does not end
// within timeout.
func slowRead(t *testing.T, r io.Reader, timeout time.Duration) []byte {
	t.Helper()
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var data []byte
		chunk := make([]byte, 4<<10)
		for {
			n, err := r.Read(chunk)
			data = append(data, chunk[:n]...)
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				done <- result{data, err}
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatalf("read output: %v", res.err)
		}
		return res.data
	case <-time.After(timeout):
		t.Fatalf("output did not end within %s", timeout)
		return nil
	}
}

// An agent must close its write half of the data stream before it sends
// exit. One that sends exit and keeps the stream open, silent or still
// writing, must not keep Read (and with it the SSH session, which reads
// the output to end of file before it calls Wait) going while the client
// stays connected.
func TestReadEndsWhenAgentKeepsOutputOpenAfterExit(t *testing.T) {
	const before = "output before exit\n"
	tests := []struct {
		name      string
		afterExit func(a *fakeAgent, stream *fakeData)
	}{
		{"silent", func(a *fakeAgent, stream *fakeData) {
			a.waitClosed()
		}},
		{"trickle", func(a *fakeAgent, stream *fakeData) {
			for {
				select {
				case <-a.session.CloseChan():
					return
				case <-time.After(20 * time.Millisecond):
				}
				if _, err := stream.Write([]byte("late ")); err != nil {
					return
				}
			}
		}},
		{"flood", func(a *fakeAgent, stream *fakeData) {
			chunk := bytes.Repeat([]byte("flood "), 8<<10)
			for {
				if _, err := stream.Write(chunk); err != nil {
					return
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			c, err := connectFake(t, func(a *fakeAgent) {
				a.handshake()
				stream := a.startProcess()
				if stream == nil {
					return
				}
				stream.Write([]byte(before))
				a.send(&ExitMsg{ID: 1, Status: 7})
				tt.afterExit(a, stream)
			})
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			p, err := c.Start(testContext(t, 10*time.Second), StartRequest{TTY: true})
			if err != nil {
				t.Fatalf("Start: %v", err)
			}

			output := slowRead(t, p, 10*time.Second)
			if !strings.HasPrefix(string(output), before) {
				t.Errorf("output starts with %.40q, want %q", output, before)
			}
			// After exit the host returns at most one receive window more.
			// A second window allows for output that Read took between the
			// arrival of exit and its handling.
			if limit := len(before) + 2*streamWindowSize; len(output) > limit {
				t.Errorf("output is %d bytes, over the limit of %d", len(output), limit)
			}
			status, err := waitStatus(t, p, 5*time.Second)
			if err != nil || status != (ExitStatus{Code: 7}) {
				t.Errorf("Wait = %+v, %v; want code 7", status, err)
			}
		})
	}
}

// exit can reach the host before Start has opened the process's data
// stream: a hostile agent sends started and exit together. The stream that
// Start opens afterwards must still end: Read reaches end of file although
// the agent never closes it, and Write fails as after any exit. Which of
// exit and attach comes first varies, so the test repeats, each time on a
// new connection. (A stream that the host closes before the agent accepts
// it is never acknowledged, and the host opens at most 4 unacknowledged
// streams per connection.)
func TestExitBeforeAttachEndsProcess(t *testing.T) {
	checkGoroutines(t)
	for i := range 10 {
		c, err := connectFake(t, func(a *fakeAgent) {
			a.handshake()
			start, ok := a.read().(*StartMsg)
			if !ok {
				return
			}
			started, _ := EncodeMessage(&StartedMsg{ID: start.ID, PID: 100})
			exit, _ := EncodeMessage(&ExitMsg{ID: start.ID, Status: 3})
			a.control.Write([]byte(string(started) + "\n" + string(exit) + "\n"))
			// Accept the data stream, but never read or close it.
			a.session.AcceptStream()
			a.waitClosed()
		})
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		p, err := c.Start(testContext(t, 10*time.Second), StartRequest{TTY: true})
		if err != nil {
			t.Fatalf("run %d: Start: %v", i, err)
		}
		if output := readOutput(p).all(t, 5*time.Second); len(output) != 0 {
			t.Errorf("run %d: output %q, want none", i, output)
		}
		status, err := waitStatus(t, p, 5*time.Second)
		if err != nil || status.Code != 3 {
			t.Errorf("run %d: Wait = %+v, %v; want code 3", i, status, err)
		}
		if _, err := p.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("run %d: Write after exit = %v, want net.ErrClosed", i, err)
		}
		c.Close()
	}
}

func TestAgentProtocolViolations(t *testing.T) {
	tests := []struct {
		name   string
		script func(a *fakeAgent)
		want   string
	}{
		{"oversize line", func(a *fakeAgent) {
			a.writeLine(`{"type":"error","id":1,"message":"` + strings.Repeat("x", MaxMessageSize) + `"}`)
		}, fmt.Sprintf("longer than %d bytes", MaxMessageSize)},
		{"exit for unknown process", func(a *fakeAgent) {
			a.send(&ExitMsg{ID: 42, Status: 0})
		}, "exit for process 42"},
		{"started for unknown process", func(a *fakeAgent) {
			a.send(&StartedMsg{ID: 42, PID: 7})
		}, "started for process 42"},
		{"host-only message", func(a *fakeAgent) {
			a.send(&ResizeMsg{ID: 1, Rows: 1, Cols: 1})
		}, "resize message, which only the host sends"},
		{"unknown type", func(a *fakeAgent) {
			a.writeLine(`{"type":"reboot"}`)
		}, `unknown message type "reboot"`},
		{"connection error", func(a *fakeAgent) {
			a.send(&ErrorMsg{ID: 0, Message: "agent broke"})
		}, "agent broke"},
		{"line cut by end of file", func(a *fakeAgent) {
			a.control.Write([]byte(`{"type":"exit"`))
			a.session.Close()
		}, "in the middle of a control line"},
		{"agent opens a stream", func(a *fakeAgent) {
			a.session.OpenStream()
		}, "opened a stream"},
		{"agent sends a ping", func(a *fakeAgent) {
			a.session.Ping()
		}, "yamux ping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			// The violation waits for Connect to return, because yamux can
			// report a write as failed when the session ends right after.
			connected := make(chan struct{})
			c, err := connectFake(t, func(a *fakeAgent) {
				a.handshake()
				select {
				case <-connected:
				case <-a.session.CloseChan():
					return
				}
				tt.script(a)
				a.waitClosed()
			})
			close(connected)
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			select {
			case <-c.done:
			case <-time.After(10 * time.Second):
				t.Fatalf("the client did not notice the violation")
			}
			err = c.stopErr()
			if !errors.Is(err, ErrAgentLost) {
				t.Fatalf("client stopped with %v, want ErrAgentLost", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			_, err = c.Start(testContext(t, 10*time.Second), StartRequest{TTY: true})
			if !errors.Is(err, ErrAgentLost) {
				t.Errorf("Start after the violation = %v, want ErrAgentLost", err)
			}
		})
	}
}

func TestStartAgentReportsError(t *testing.T) {
	checkGoroutines(t)
	c, err := connectFake(t, func(a *fakeAgent) {
		a.handshake()
		start, _ := a.read().(*StartMsg)
		if start == nil {
			return
		}
		a.send(&ErrorMsg{ID: start.ID, Message: "start /bin/nosuchshell: no such file or directory"})
		// An error about a process that is gone changes nothing.
		a.send(&ErrorMsg{ID: 77, Message: "no process with id 77"})
		if stream := a.startProcess(); stream != nil {
			stream.Close()
			a.send(&ExitMsg{ID: start.ID + 1, Status: 0})
		}
		a.waitClosed()
	})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	_, err = c.Start(testContext(t, 10*time.Second), StartRequest{TTY: true})
	if err == nil || errors.Is(err, ErrAgentLost) || !strings.Contains(err.Error(), "/bin/nosuchshell") {
		t.Fatalf("Start = %v, want the agent's error naming the shell", err)
	}
	p, err := c.Start(testContext(t, 10*time.Second), StartRequest{TTY: true})
	if err != nil {
		t.Fatalf("second Start: %v", err)
	}
	readOutput(p).all(t, 10*time.Second)
	if status, err := waitStatus(t, p, 10*time.Second); err != nil || status.Code != 0 {
		t.Errorf("Wait = %+v, %v; want code 0", status, err)
	}
}

func TestStartContextEndsKillsLateProcess(t *testing.T) {
	checkGoroutines(t)
	killed := make(chan Message, 1)
	release := make(chan struct{})
	c, err := connectFake(t, func(a *fakeAgent) {
		a.handshake()
		start, _ := a.read().(*StartMsg)
		if start == nil {
			return
		}
		<-release
		a.send(&StartedMsg{ID: start.ID, PID: 5})
		killed <- a.read()
		a.send(&ExitMsg{ID: start.ID, Status: 137, Signal: "KILL"})
		a.waitClosed()
	})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Start(ctx, StartRequest{TTY: true}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start = %v, want context.DeadlineExceeded", err)
	}
	close(release)
	select {
	case m := <-killed:
		signal, ok := m.(*SignalMsg)
		if !ok || signal.Signal != "KILL" || signal.ID != 1 {
			t.Errorf("after the abandoned start the host sent %#v, want signal KILL for id 1", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the host did not kill the process whose start it abandoned")
	}
}

func TestListenMode(t *testing.T) {
	path := socketPath(t)
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("socket mode = %o, want 600", mode)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Listen on a path in use = %v, want an error naming %s", err, path)
	}
	ln.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket file is left after Close: %v", err)
	}
}

func TestListenPathTooLong(t *testing.T) {
	path := filepath.Join(t.TempDir(), strings.Repeat("d", 120), "a.sock")
	_, err := Listen(path)
	if err == nil {
		t.Fatalf("Listen(%q) succeeded", path)
	}
	for _, want := range []string{path, "about 100", "shorter"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestListenMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "a.sock")
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Listen in a missing directory = %v, want an error naming %s", err, path)
	}
}

func TestLookupAccount(t *testing.T) {
	passwd := filepath.Join(t.TempDir(), "passwd")
	content := "root:x:0:0:root:/root:/bin/bash\n" +
		"broken line\n" +
		"alice:x:1000:1000:Alice:/home/alice:/usr/bin/zsh\n" +
		"nohome:x:1001:1001::relative:\n"
	if err := os.WriteFile(passwd, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		uid  int
		want account
	}{
		{passwd, 0, account{name: "root", home: "/root", shell: "/bin/bash"}},
		{passwd, 1000, account{name: "alice", home: "/home/alice", shell: "/usr/bin/zsh"}},
		{passwd, 1001, account{name: "nohome", home: "/", shell: "/bin/sh"}},
		{passwd, 2000, account{name: "2000", home: "/", shell: "/bin/sh"}},
		{filepath.Join(t.TempDir(), "none"), 0, account{name: "root", home: "/root", shell: "/bin/sh"}},
	}
	for _, tt := range tests {
		if got := lookupAccount(tt.path, tt.uid); got != tt.want {
			t.Errorf("lookupAccount(%s, %d) = %+v, want %+v", filepath.Base(tt.path), tt.uid, got, tt.want)
		}
	}
}

func TestSanitizeMessage(t *testing.T) {
	tests := map[string]string{
		"plain":               "plain",
		"line\nbreak\x1b[31m": "line break [31m",
		"\xff":                "?",
		"":                    "unknown error",
		"\n\n":                "unknown error",
	}
	for in, want := range tests {
		if got := sanitizeMessage(in); got != want {
			t.Errorf("sanitizeMessage(%q) = %q, want %q", in, got, want)
		}
	}
	long := sanitizeMessage(strings.Repeat("é", MaxErrorSize))
	if len(long) > MaxErrorSize || (&ErrorMsg{ID: 1, Message: long}).validate() != nil {
		t.Errorf("sanitizeMessage of a long text returned %d bytes that fail validation", len(long))
	}
}

func TestMuxLoggerLimit(t *testing.T) {
	var lines []string
	logger := newMuxLogger(nil)
	logger.logger = testLoggerFunc(func(line string) { lines = append(lines, line) })
	for i := range muxLogBurst + 5 {
		logger.Printf("[WARN] yamux: line %d", i)
	}
	if len(lines) != muxLogBurst {
		t.Fatalf("logged %d lines, want the burst of %d", len(lines), muxLogBurst)
	}
	if !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], `detail="yamux: line 0"`) {
		t.Errorf("first line = %q, want level WARN and the detail without its prefix", lines[0])
	}
	logger.limiter.start = time.Now().Add(-2 * time.Minute)
	logger.Print("[ERR] yamux: after the pause")
	if last := lines[len(lines)-1]; !strings.Contains(last, "level=ERROR") || !strings.Contains(last, "suppressed=5") {
		t.Errorf("line after the pause = %q, want level ERROR and suppressed=5", last)
	}
}

// yamux fails a stream write whose frame waits too long for the
// connection, but leaves its sending goroutine blocked in the connection's
// Write and the session open. A peer that stops reading the connection
// must make that Write fail instead, which ends the session.
func TestWriteTimeoutConnFailsStalledWrite(t *testing.T) {
	host, _ := connPair(t) // the guest end is never read
	conn := &writeTimeoutConn{Conn: host, timeout: 200 * time.Millisecond}
	chunk := make([]byte, 64<<10)
	start := time.Now()
	var err error
	for err == nil && time.Since(start) < 10*time.Second {
		_, err = conn.Write(chunk)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write to a peer that does not read = %v after %s, want os.ErrDeadlineExceeded", err, time.Since(start))
	}
	if err := conn.timeoutErr(); !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "stopped reading") {
		t.Errorf("timeoutErr() = %v, want the timeout explained", err)
	}
}

func TestPingGuardFindsFrameBoundaries(t *testing.T) {
	frame := func(typ byte, length uint32, payload []byte) []byte {
		header := []byte{0, typ, 0, 1, 0, 0, 0, 2, byte(length >> 24), byte(length >> 16), byte(length >> 8), byte(length)}
		return append(header, payload...)
	}
	// A data payload that looks like a ping header must pass.
	fakePing := frame(muxTypePing, 7, nil)
	var stream []byte
	stream = append(stream, frame(muxTypeData, uint32(len(fakePing)+3), append(fakePing, 'a', 'b', 'c'))...)
	stream = append(stream, frame(1, 4096, nil)...) // window update
	stream = append(stream, frame(muxTypeData, 0, nil)...)
	pingAt := len(stream)
	stream = append(stream, frame(muxTypePing, 9, nil)...)
	stream = append(stream, frame(muxTypeData, 1, []byte("x"))...)

	for chunk := 1; chunk <= len(stream); chunk++ {
		g := &pingGuard{}
		delivered := 0
		found := false
		for offset := 0; offset < len(stream) && !found; offset += chunk {
			end := min(offset+chunk, len(stream))
			before, ping := g.inspect(stream[offset:end])
			delivered += before
			found = ping
		}
		if !found {
			t.Errorf("chunk %d: the ping was not found", chunk)
			continue
		}
		// Every frame before the ping reaches yamux, and never the whole
		// ping header. Header bytes from earlier reads are already gone.
		if delivered < pingAt || delivered >= pingAt+muxHeaderSize {
			t.Errorf("chunk %d: %d bytes delivered, want %d to %d", chunk, delivered, pingAt, pingAt+muxHeaderSize-1)
		}
		if !errors.Is(g.pingErr(), errPeerPing) {
			t.Errorf("chunk %d: pingErr = %v, want errPeerPing", chunk, g.pingErr())
		}
	}
}
