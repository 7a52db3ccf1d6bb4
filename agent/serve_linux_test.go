package agent

import (
	"bufio"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// rawHost plays the host's side from a script, to test how the agent
// handles requests that the Client never sends.
type rawHost struct {
	t       *testing.T
	session *yamux.Session
	control *yamux.Stream
	reader  *bufio.Reader
	served  chan error
}

// startRawHost runs Serve on one end of a real unix socket and opens the
// control stream on the other, without sending hello.
func startRawHost(t *testing.T, opts ServeOptions) *rawHost {
	t.Helper()
	if opts.Shell == "" {
		opts.Shell = "/bin/sh"
	}
	opts.Logger = testLogger(t, "agent")
	host, guest := connPair(t)
	h := &rawHost{t: t, served: make(chan error, 1)}
	go func() { h.served <- Serve(context.Background(), guest, opts) }()

	session, err := yamux.Server(host, newMuxConfig(testLogger(t, "raw-host"), 4))
	if err != nil {
		t.Fatal(err)
	}
	h.session = session
	h.control, err = session.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	h.reader = bufio.NewReader(h.control)
	t.Cleanup(func() {
		session.Close()
		select {
		case <-h.served:
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return within 10s after the host closed")
		}
	})
	return h
}

func (h *rawHost) send(m Message) {
	h.t.Helper()
	line, err := encodeLine(m)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.control.Write(line); err != nil {
		h.t.Fatalf("send %s: %v", m.MessageType(), err)
	}
}

// sendLast sends a message after which the agent closes the connection.
// yamux can then report the write as failed although the agent read it, so
// the error is ignored.
func (h *rawHost) sendLast(m Message) {
	h.t.Helper()
	line, err := encodeLine(m)
	if err != nil {
		h.t.Fatal(err)
	}
	_, _ = h.control.Write(line)
}

// read returns the agent's next control message.
func (h *rawHost) read() Message {
	h.t.Helper()
	_ = h.control.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := readMessage(h.reader)
	if err != nil {
		h.t.Fatalf("read the agent's message: %v", err)
	}
	return m
}

func (h *rawHost) handshake() {
	h.t.Helper()
	h.send(&HelloMsg{Version: ProtocolVersion, Software: "raw-host"})
	if m, ok := h.read().(*HelloMsg); !ok || m.Version != ProtocolVersion {
		h.t.Fatalf("the agent's first message is %#v, want hello version %d", m, ProtocolVersion)
	}
}

// readError reads an error message and checks its id and text.
func (h *rawHost) readError(id uint32, want string) {
	h.t.Helper()
	m := h.read()
	e, ok := m.(*ErrorMsg)
	if !ok {
		h.t.Fatalf("the agent sent %#v, want an error message", m)
	}
	if e.ID != id || !strings.Contains(e.Message, want) {
		h.t.Errorf("error message = {id %d, %q}, want id %d containing %q", e.ID, e.Message, id, want)
	}
}

// serveResult waits for Serve's result.
func (h *rawHost) serveResult() error {
	h.t.Helper()
	select {
	case err := <-h.served:
		h.served <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		h.t.Fatalf("Serve did not return")
		return nil
	}
}

func TestServeAnswersBadRequests(t *testing.T) {
	checkGoroutines(t)
	h := startRawHost(t, ServeOptions{AttachTimeout: 300 * time.Millisecond})
	h.handshake()

	h.send(&StartMsg{ID: 1, Command: "sleep 100", TTY: true})
	if started, ok := h.read().(*StartedMsg); !ok || started.ID != 1 {
		t.Fatalf("the agent answered start with %#v, want started for id 1", started)
	}
	h.send(&SignalMsg{ID: 1, Signal: "WINCH"})
	h.readError(1, `unsupported signal "WINCH"`)
	h.send(&SignalMsg{ID: 9, Signal: "INT"})
	h.readError(9, "no process with id 9")
	h.send(&ResizeMsg{ID: 9, Rows: 1, Cols: 1})
	h.readError(9, "no process with id 9")
	h.send(&StartMsg{ID: 1, Command: "true", TTY: true})
	h.readError(1, "process id 1 is already in use")

	// No data stream comes, so the agent hangs the process up.
	h.readError(1, "no data stream attached within 300ms")
	exit, ok := h.read().(*ExitMsg)
	if !ok || *exit != (ExitMsg{ID: 1, Status: 129, Signal: "HUP"}) {
		t.Errorf("after the hangup the agent sent %#v, want exit 129 by HUP", exit)
	}

	// A message the agent must never get ends the connection.
	h.sendLast(&AttachMsg{ID: 1})
	h.readError(0, "attach message on the control stream")
	if err := h.serveResult(); err == nil || !strings.Contains(err.Error(), "attach") {
		t.Errorf("Serve = %v, want an error naming the attach message", err)
	}
}

func TestServeRejectsGarbage(t *testing.T) {
	checkGoroutines(t)
	h := startRawHost(t, ServeOptions{})
	h.handshake()
	_, _ = h.control.Write([]byte("{\"type\":\"start\",\"id\":1}\n"))
	h.readError(0, `"tty" is missing`)
	if err := h.serveResult(); err == nil || !strings.Contains(err.Error(), `"tty" is missing`) {
		t.Errorf("Serve = %v, want an error naming the missing field", err)
	}
}

func TestServeVersionMismatch(t *testing.T) {
	checkGoroutines(t)
	h := startRawHost(t, ServeOptions{})
	h.sendLast(&HelloMsg{Version: 2, Software: "newer-host"})
	if _, ok := h.read().(*HelloMsg); !ok {
		t.Fatalf("the agent did not send hello first")
	}
	err := h.serveResult()
	if !errors.Is(err, ErrVersionMismatch) || !strings.Contains(err.Error(), "install_guest_agent.sh") {
		t.Errorf("Serve = %v, want ErrVersionMismatch with the reinstall hint", err)
	}
}

func TestServeNoControlStream(t *testing.T) {
	checkGoroutines(t)
	host, guest := connPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	// The host never speaks yamux; ctx ends the wait for the control stream.
	err := Serve(ctx, guest, ServeOptions{Logger: testLogger(t, "agent")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Serve = %v, want context.DeadlineExceeded", err)
	}
	host.Close()
}
