package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

// Sentinel errors for the branches a caller takes.
var (
	// ErrVersionMismatch means that the agent speaks another protocol
	// version. The fix is to reinstall the agent from the server's release.
	ErrVersionMismatch = errors.New("agent: protocol version mismatch")
	// ErrAgentLost means that the connection or the control stream broke,
	// or that the agent broke the protocol. The connection is closed then.
	ErrAgentLost = errors.New("agent: connection to the guest agent lost")
)

// errClientClosed is the error of operations after Client.Close.
var errClientClosed = fmt.Errorf("client closed: %w", net.ErrClosed)

// hostAcceptBacklog bounds the streams that the agent can open before the
// host notices and drops the connection. Agents must not open any.
const hostAcceptBacklog = 4

// Listen creates the unix socket on which the host waits for the agent,
// with mode 0600. Create it in a directory that only the server's user can
// enter: between bind and chmod the socket exists with the mode that the
// process umask gives it. Closing the listener removes the socket file.
func Listen(path string) (net.Listener, error) {
	if limit := len(syscall.RawSockaddrUnix{}.Path) - 1; len(path) > limit {
		return nil, fmt.Errorf("agent: listen on %q: the path is %d bytes, over the limit of %d bytes for unix socket paths (about 100 on every OS); use a shorter directory", path, len(path), limit)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("agent: listen on %q: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("agent: listen on %q: set mode 0600: %w", path, err)
	}
	return ln, nil
}

// StartRequest describes a process for Client.Start.
type StartRequest struct {
	// Command runs with the guest shell's -c option. Empty starts an
	// interactive login shell. At most MaxCommandSize bytes of valid UTF-8
	// without NUL.
	Command string
	// TTY requests a pseudo-terminal. Version 1 agents reject false, so
	// Start returns their error.
	TTY bool
	// Term is the TERM value, for example "xterm-256color". Empty leaves
	// TERM unset unless Env sets it.
	Term string
	// Rows and Cols are the initial window size, at most MaxDimension. 0
	// means unknown.
	Rows, Cols uint32
	// Env holds extra "KEY=value" entries for the process. They override
	// the agent's TERM, HOME, USER, LOGNAME, SHELL and PATH, so filter what
	// an SSH client sends before passing it on.
	Env []string
	// Modes maps RFC 4254 terminal mode opcodes to values, as in an SSH
	// pty-req. Opcodes 0 and 160 to 255 are not modes and are dropped.
	Modes map[uint8]uint32
	// Subsystem, when not empty, makes the agent serve that subsystem
	// itself instead of running a command. SubsystemSFTP is the only one,
	// and it needs an empty Command and TTY false. The Process then carries
	// the subsystem's protocol bytes, and Resize and Signal fail.
	Subsystem string
}

// ExitStatus is the result of a guest process.
type ExitStatus struct {
	// Code is the exit code, or 128+N when signal N killed the process.
	Code int
	// Signal names the signal that killed the process, without "SIG" (for
	// example "TERM"), and is empty when it exited. It is also empty for
	// real-time signals, which have no name here.
	Signal string
}

// Client is the host's end of one agent connection. Its methods are safe
// for concurrent use.
type Client struct {
	logger  *slog.Logger
	guard   *pingGuard
	stall   *writeTimeoutConn
	session *yamux.Session
	control *yamux.Stream

	writeMu sync.Mutex

	mu     sync.Mutex
	nextID uint32
	procs  map[uint32]*Process
	err    error         // reason the client stopped, set once
	done   chan struct{} // closed when err is set

	// console receives the console report (exit with ConsoleID), of which
	// an agent may send one.
	console     chan ExitStatus
	consoleSent bool

	// errorLog limits how many error messages from the agent are logged.
	errorLog *logLimiter
	wg       sync.WaitGroup

	// expectLoss is set by ExpectLoss: the VM is being killed on purpose.
	expectLoss atomic.Bool
}

// ExpectLoss marks the agent's VM as about to be killed on purpose by the
// host, at a session timeout for example, so that losing the connection is
// logged at info level instead of as a warning.
func (c *Client) ExpectLoss() {
	c.expectLoss.Store(true)
}

// Connect runs the host side of the protocol on conn, the connection that
// the agent dialed: it sets up yamux, opens the control stream and
// exchanges hello messages. ctx bounds only that handshake, which also
// gives up when the agent sends no hello within 10 seconds.
//
// On error Connect closes conn. The error wraps ErrVersionMismatch when the
// agent speaks another protocol version. It wraps ErrAgentLost when the
// connection breaks or the agent sends something other than a valid hello.
func Connect(ctx context.Context, conn net.Conn, logger *slog.Logger) (*Client, error) {
	logger = discardLogger(logger)
	stall := &writeTimeoutConn{Conn: conn, timeout: controlWriteTimeout}
	guard := &pingGuard{Conn: stall}
	session, err := yamux.Server(guard, newMuxConfig(logger, hostAcceptBacklog))
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("agent: connect: %w", err)
	}
	handshakeCtx, cancel := context.WithTimeoutCause(ctx, handshakeTimeout,
		fmt.Errorf("%w: no hello from the agent within %s", ErrAgentLost, handshakeTimeout))
	defer cancel()
	stop := context.AfterFunc(handshakeCtx, func() { _ = session.Close() })
	control, reader, hello, err := handshake(session)
	if !stop() || handshakeCtx.Err() != nil {
		_ = session.Close()
		return nil, fmt.Errorf("agent: connect: %w", context.Cause(handshakeCtx))
	}
	if err != nil {
		_ = session.Close()
		if pingErr := guard.pingErr(); pingErr != nil {
			err = fmt.Errorf("%w: %w", ErrAgentLost, pingErr)
		}
		return nil, fmt.Errorf("agent: connect: %w", err)
	}
	if hello.Version != ProtocolVersion {
		_ = session.Close()
		return nil, fmt.Errorf("%w: the guest agent (%s) speaks protocol version %d and this server speaks version %d; reinstall the agent with ./install_guest_agent.sh ROOTFS from the same throwawaysh release", ErrVersionMismatch, hello.Software, hello.Version, ProtocolVersion)
	}
	logger.Debug("agent connected", "software", hello.Software, "protocol", hello.Version)

	c := &Client{
		logger:   logger,
		guard:    guard,
		stall:    stall,
		session:  session,
		control:  control,
		procs:    make(map[uint32]*Process),
		done:     make(chan struct{}),
		console:  make(chan ExitStatus, 1),
		errorLog: newLogLimiter(10, time.Minute),
	}
	c.wg.Add(2)
	go c.readControl(reader)
	go c.rejectStreams()
	return c, nil
}

// handshake opens the control stream, sends the host's hello and reads the
// agent's. The caller checks the version.
func handshake(session *yamux.Session) (*yamux.Stream, *bufio.Reader, *HelloMsg, error) {
	control, err := session.OpenStream()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: open control stream: %w", ErrAgentLost, err)
	}
	line, err := encodeLine(&HelloMsg{Version: ProtocolVersion, Software: softwareName("throwawaysh")})
	if err != nil {
		return nil, nil, nil, err
	}
	if _, err := control.Write(line); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: send hello: %w", ErrAgentLost, err)
	}
	reader := bufio.NewReader(control)
	m, err := readMessage(reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: read the agent's hello: %w", ErrAgentLost, err)
	}
	hello, ok := m.(*HelloMsg)
	if !ok {
		return nil, nil, nil, fmt.Errorf("%w: the agent sent %s instead of hello", ErrAgentLost, m.MessageType())
	}
	return control, reader, hello, nil
}

// Close closes the connection. The agent then hangs up every process it
// still runs. Wait on a process that had not exited returns an error, and
// its Read returns io.EOF after the output already received.
func (c *Client) Close() error {
	c.stop(errClientClosed)
	c.wg.Wait()
	return nil
}

// stop records why the client stopped, wakes every waiter and closes the
// connection. Only the first call has an effect.
func (c *Client) stop(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	close(c.done)
	c.mu.Unlock()
	switch {
	case errors.Is(err, ErrAgentLost) && c.expectLoss.Load():
		c.logger.Info("agent connection ended with the vm", "err", err)
	case errors.Is(err, ErrAgentLost):
		c.logger.Warn("agent lost", "err", err)
	}
	_ = c.session.Close()
}

// lost stops the client with an error that wraps ErrAgentLost and cause.
// A ping from the agent or a connection write that timed out makes yamux
// end the session, and then explains every failure that follows, so it
// takes the place of cause.
func (c *Client) lost(cause error) error {
	if pingErr := c.guard.pingErr(); pingErr != nil {
		cause = pingErr
	} else if stallErr := c.stall.timeoutErr(); stallErr != nil {
		cause = stallErr
	}
	err := fmt.Errorf("%w: %w", ErrAgentLost, cause)
	c.stop(err)
	return c.stopErr()
}

func (c *Client) stopErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// readControl reads the agent's control messages until the connection
// ends or the agent breaks the protocol.
func (c *Client) readControl(reader *bufio.Reader) {
	defer c.wg.Done()
	for {
		m, err := readMessage(reader)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the agent closed the connection")
			}
			c.lost(fmt.Errorf("read control stream: %w", err))
			return
		}
		if err := c.handle(m); err != nil {
			c.lost(err)
			return
		}
	}
}

// rejectStreams ends the connection when the agent opens a stream, which
// only the host may do.
func (c *Client) rejectStreams() {
	defer c.wg.Done()
	stream, err := c.session.AcceptStream()
	if err != nil {
		return
	}
	_ = stream.Close()
	c.lost(errors.New("the agent opened a stream, which only the host may do"))
}

// handle applies one message from the agent. An error is a protocol
// violation.
func (c *Client) handle(m Message) error {
	switch m := m.(type) {
	case *StartedMsg:
		return c.handleStarted(m)
	case *ExitMsg:
		return c.handleExit(m)
	case *ErrorMsg:
		return c.handleError(m)
	default:
		return fmt.Errorf("the agent sent a %s message, which only the host sends", m.MessageType())
	}
}

func (c *Client) handleStarted(m *StartedMsg) error {
	c.mu.Lock()
	p := c.procs[m.ID]
	if p == nil || (p.state != statePending && p.state != stateAbandoned) {
		c.mu.Unlock()
		return fmt.Errorf("the agent sent started for process %d, which is not starting", m.ID)
	}
	abandoned := p.state == stateAbandoned
	p.state = stateRunning
	p.pid = m.PID
	c.mu.Unlock()

	if abandoned {
		// Start gave up waiting, so no caller will attach or wait. The
		// exit message removes the entry later.
		c.logger.Debug("kill process whose start was abandoned", "id", m.ID, "pid", m.PID)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			_ = c.send(&SignalMsg{ID: m.ID, Signal: "KILL"})
		}()
		return nil
	}
	p.started <- nil
	return nil
}

func (c *Client) handleExit(m *ExitMsg) error {
	if m.ID == ConsoleID {
		return c.handleConsoleExit(m)
	}
	c.mu.Lock()
	p := c.procs[m.ID]
	if p == nil || p.state != stateRunning {
		c.mu.Unlock()
		return fmt.Errorf("the agent sent exit for process %d, which is not running", m.ID)
	}
	p.state = stateExited
	p.status = ExitStatus{Code: m.Status, Signal: m.Signal}
	p.outputLeft = streamWindowSize
	delete(c.procs, m.ID)
	stream := p.stream
	c.mu.Unlock()

	// Ending the stream before Wait returns makes a Write after Wait fail.
	if stream != nil {
		endStream(stream)
	}
	close(p.exited)
	return nil
}

func (c *Client) handleConsoleExit(m *ExitMsg) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.consoleSent {
		return errors.New("the agent sent a second console exit report")
	}
	c.consoleSent = true
	c.console <- ExitStatus{Code: m.Status, Signal: m.Signal}
	return nil
}

// ConsoleExit waits for the report of an agent started with --exec: how the
// command it ran on the VM console ended. It returns ctx's error when ctx
// ends first, and an error that wraps ErrAgentLost when the connection ends
// without a report. Call it at most once per Client.
func (c *Client) ConsoleExit(ctx context.Context) (ExitStatus, error) {
	select {
	case status := <-c.console:
		return status, nil
	case <-c.done:
		// The agent may send its report and close the connection at once.
		select {
		case status := <-c.console:
			return status, nil
		default:
		}
		return ExitStatus{}, fmt.Errorf("agent: wait for the console exit report: %w", c.stopErr())
	case <-ctx.Done():
		return ExitStatus{}, fmt.Errorf("agent: wait for the console exit report: %w", context.Cause(ctx))
	}
}

// SignalConsole sends signal name, without "SIG", to the process group of
// the command that an agent started with --exec runs on the console.
func (c *Client) SignalConsole(name string) error {
	if !SupportedSignal(name) {
		return fmt.Errorf("agent: signal console command: unsupported signal %s; use one of %s", quote(name, MaxSignalNameSize), supportedSignalList())
	}
	if err := c.send(&SignalMsg{ID: ConsoleID, Signal: name}); err != nil {
		return fmt.Errorf("agent: signal console command: %w", err)
	}
	return nil
}

// endStream ends the data stream of a process whose exit arrived. Input can
// no longer reach the process, so the write half is closed, which keeps the
// output that is still buffered readable.
//
// The agent closes its write half before it sends exit, and yamux handles
// frames in the order they arrive, so all output is buffered on the host by
// the time exit arrives. The read deadline makes a Read that would wait for
// more output fail, and Process.Read turns that into end of file. So an
// agent that sends exit but keeps the stream open cannot hold the session.
func endStream(stream *yamux.Stream) {
	_ = stream.Close()
	_ = stream.SetReadDeadline(time.Now())
}

func (c *Client) handleError(m *ErrorMsg) error {
	if m.ID == 0 {
		return fmt.Errorf("the agent reported a connection error: %s", m.Message)
	}
	c.mu.Lock()
	p := c.procs[m.ID]
	if p != nil && (p.state == statePending || p.state == stateAbandoned) {
		delete(c.procs, m.ID)
		pending := p.state == statePending
		p.state = stateExited
		c.mu.Unlock()
		if pending {
			p.started <- fmt.Errorf("the agent reported: %s", m.Message)
		}
		return nil
	}
	c.mu.Unlock()
	// An error about a running or finished process is the reply to a
	// resize or signal. It changes nothing. The agent controls how many it
	// sends, so the log is rate-limited.
	if ok, suppressed := c.errorLog.allow(); ok {
		attrs := []any{"id", m.ID, "message", m.Message}
		if suppressed > 0 {
			attrs = append(attrs, "suppressed", suppressed)
		}
		c.logger.Warn("agent error", attrs...)
	}
	return nil
}

// send writes one control message. A failure stops the client, because a
// lost control message would leave the two sides disagreeing.
func (c *Client) send(m Message) error {
	line, err := encodeLine(m)
	if err != nil {
		return err
	}
	select {
	case <-c.done:
		return c.stopErr()
	default:
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = c.control.SetWriteDeadline(time.Now().Add(controlWriteTimeout))
	if _, err := c.control.Write(line); err != nil {
		return c.lost(fmt.Errorf("send %s message: %w", m.MessageType(), err))
	}
	return nil
}

// Start requests a process from the agent and waits, within ctx, until it
// runs. The error wraps ErrAgentLost when the connection broke, and
// contains the agent's message when the agent could not start the
// process. When ctx ends first, a process that starts later is killed.
func (c *Client) Start(ctx context.Context, req StartRequest) (*Process, error) {
	msg := &StartMsg{
		Command: req.Command,
		TTY:     req.TTY,
		Term:    req.Term,
		Rows:    req.Rows,
		Cols:    req.Cols,
		Env:     req.Env,
		Modes:   validModes(req.Modes),

		Subsystem: req.Subsystem,
	}

	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, fmt.Errorf("agent: start process: %w", err)
	}
	c.nextID++
	msg.ID = c.nextID
	if _, err := encodeMessage(msg); err != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("agent: start process: %w", err)
	}
	p := &Process{
		client:  c,
		id:      msg.ID,
		state:   statePending,
		started: make(chan error, 1),
		exited:  make(chan struct{}),
	}
	c.procs[p.id] = p
	c.mu.Unlock()

	if err := c.send(msg); err != nil {
		return nil, fmt.Errorf("agent: start process %d: %w", p.id, err)
	}
	select {
	case err := <-p.started:
		if err != nil {
			return nil, fmt.Errorf("agent: start process %d: %w", p.id, err)
		}
	case <-c.done:
		return nil, fmt.Errorf("agent: start process %d: %w", p.id, c.stopErr())
	case <-ctx.Done():
		c.abandon(p)
		return nil, fmt.Errorf("agent: start process %d: %w", p.id, context.Cause(ctx))
	}

	if err := c.attach(p); err != nil {
		return nil, fmt.Errorf("agent: start process %d: %w", p.id, err)
	}
	c.logger.Debug("process started", "id", p.id, "pid", p.pid)
	return p, nil
}

// abandon handles a Start whose context ended before started arrived.
func (c *Client) abandon(p *Process) {
	c.mu.Lock()
	state := p.state
	if state == statePending {
		p.state = stateAbandoned
	}
	c.mu.Unlock()
	if state == stateRunning {
		// started arrived while ctx ended.
		_ = c.send(&SignalMsg{ID: p.id, Signal: "KILL"})
	}
}

// attach opens the data stream of a started process.
//
// NOTE: yamux v0.1.2 acknowledges a stream only if the agent accepts it
// before its FIN arrives, and allows 4 unacknowledged streams (the accept
// backlog) per connection. So after 4 processes whose input was closed at
// once, OpenStream here waits, ignoring Start's ctx, until one of them
// ends. One process per connection, as the SSH middleware runs, never
// waits.
func (c *Client) attach(p *Process) error {
	stream, err := c.session.OpenStream()
	if err != nil {
		return c.lost(fmt.Errorf("open data stream: %w", err))
	}
	line, err := encodeLine(&AttachMsg{ID: p.id})
	if err != nil {
		return err
	}
	if _, err := stream.Write(line); err != nil {
		return c.lost(fmt.Errorf("send attach message: %w", err))
	}
	c.mu.Lock()
	p.stream = stream
	exited := p.state == stateExited
	c.mu.Unlock()
	// An agent can send exit before the stream exists. handleExit found
	// no stream then, so the stream ends here.
	if exited {
		endStream(stream)
	}
	return nil
}

// validModes drops the opcodes that RFC 4254 section 8 does not define as
// modes: 0 ends the list on the wire and 160 to 255 stop its parsing.
func validModes(modes map[uint8]uint32) map[uint8]uint32 {
	out := make(map[uint8]uint32, len(modes))
	for opcode, value := range modes {
		if opcode >= 1 && opcode <= 159 {
			out[opcode] = value
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

type processState int

const (
	statePending   processState = iota // start sent, started not yet received
	stateAbandoned                     // Start gave up before started arrived
	stateRunning                       // started received
	stateExited                        // exit or a start error received
)

// Process is a process in the guest, started by Client.Start. Read returns
// its PTY output and Write sends PTY input. Its methods are safe for
// concurrent use, but only one goroutine should Read and one Write.
type Process struct {
	client *Client
	id     uint32

	// Guarded by client.mu.
	state  processState
	pid    int
	stream *yamux.Stream
	status ExitStatus
	// outputLeft is how many more bytes Read returns once exit arrived. It
	// starts at one receive window, the most output that a compliant agent
	// can have sent and the host not yet read, and bounds an agent that
	// keeps writing after exit.
	outputLeft int

	started chan error    // receives the start result once
	exited  chan struct{} // closed when exit arrives; status is set then
}

// PID returns the process id in the guest.
func (p *Process) PID() int {
	p.client.mu.Lock()
	defer p.client.mu.Unlock()
	return p.pid
}

// Read reads PTY output. It returns io.EOF after the last output, which
// arrives before the exit status. Once the exit status has arrived, Read
// returns only the output buffered by then (at most 256 KiB), so an agent
// that keeps the output open after exit cannot keep Read going. It also
// returns io.EOF when the connection breaks, so call Wait to tell the two
// apart.
func (p *Process) Read(b []byte) (int, error) {
	stream, exited, left := p.readState()
	if exited {
		if left == 0 {
			return 0, io.EOF
		}
		b = b[:min(len(b), left)]
	}
	n, err := stream.Read(b)
	exited = p.countOutput(n)

	switch {
	case err == nil || errors.Is(err, io.EOF):
		return n, err
	case exited && errors.Is(err, yamux.ErrTimeout):
		// endStream's deadline: the agent sent exit without closing the
		// stream and nothing more is buffered.
		p.client.logger.Warn("the agent kept the output of an exited process open; ending it", "id", p.id)
		p.endOutput()
		return n, io.EOF
	default:
		return n, fmt.Errorf("agent: read output of process %d: %w", p.id, err)
	}
}

// readState returns the data stream, whether exit arrived and, if it did,
// how many more bytes Read may return.
func (p *Process) readState() (stream *yamux.Stream, exited bool, left int) {
	p.client.mu.Lock()
	defer p.client.mu.Unlock()
	return p.stream, p.state == stateExited, p.outputLeft
}

// countOutput subtracts n bytes read from outputLeft once exit arrived, and
// reports whether it did.
func (p *Process) countOutput(n int) (exited bool) {
	p.client.mu.Lock()
	defer p.client.mu.Unlock()
	if p.state != stateExited {
		return false
	}
	p.outputLeft = max(p.outputLeft-n, 0)
	return true
}

// endOutput makes every later Read return end of file.
func (p *Process) endOutput() {
	p.client.mu.Lock()
	defer p.client.mu.Unlock()
	p.outputLeft = 0
}

// Write sends PTY input. It blocks while the process does not read its
// input and the buffers fill up. After exit, CloseWrite or Client.Close it
// returns an error that wraps net.ErrClosed.
func (p *Process) Write(b []byte) (int, error) {
	n, err := p.dataStream().Write(b)
	if errors.Is(err, yamux.ErrStreamClosed) || errors.Is(err, yamux.ErrSessionShutdown) {
		return n, fmt.Errorf("agent: write input of process %d: %w", p.id, net.ErrClosed)
	}
	if err != nil {
		return n, fmt.Errorf("agent: write input of process %d: %w", p.id, err)
	}
	return n, nil
}

// CloseWrite ends the input. As with OpenSSH, the process gets no end of
// file, because a PTY has no half-close. A user ends input with the
// terminal's EOF character (Ctrl-D) instead.
func (p *Process) CloseWrite() error {
	if err := p.dataStream().Close(); err != nil {
		return fmt.Errorf("agent: close input of process %d: %w", p.id, err)
	}
	return nil
}

func (p *Process) dataStream() *yamux.Stream {
	p.client.mu.Lock()
	defer p.client.mu.Unlock()
	return p.stream
}

// Resize sets the window size. rows and cols are at most MaxDimension, and
// 0 keeps that dimension as it is.
func (p *Process) Resize(rows, cols uint32) error {
	if err := checkDimensions(rows, cols); err != nil {
		return fmt.Errorf("agent: resize process %d: %w", p.id, err)
	}
	if err := p.sendRequest(&ResizeMsg{ID: p.id, Rows: rows, Cols: cols}); err != nil {
		return fmt.Errorf("agent: resize process %d: %w", p.id, err)
	}
	return nil
}

// Signal sends a signal, named as in RFC 4254 without "SIG" (for example
// "INT"), to the process's foreground process group: INT interrupts a
// whole pipeline, like Ctrl-C. Names outside SupportedSignal fail here
// without reaching the agent.
func (p *Process) Signal(name string) error {
	if !SupportedSignal(name) {
		return fmt.Errorf("agent: signal process %d: unsupported signal %s; use one of %s", p.id, quote(name, MaxSignalNameSize), supportedSignalList())
	}
	if err := p.sendRequest(&SignalMsg{ID: p.id, Signal: name}); err != nil {
		return fmt.Errorf("agent: signal process %d: %w", p.id, err)
	}
	return nil
}

func (p *Process) sendRequest(m Message) error {
	select {
	case <-p.exited:
		return errors.New("the process has exited")
	default:
	}
	return p.client.send(m)
}

// Wait waits for the exit status. The agent sends it only after the host
// has taken all output, so read the output until io.EOF first, or
// concurrently: a Wait without reading can block forever. The error wraps
// ErrAgentLost when the connection breaks before the status arrives.
func (p *Process) Wait() (ExitStatus, error) {
	select {
	case <-p.exited:
		return p.exitStatus(), nil
	case <-p.client.done:
	}
	// exit can arrive just before the connection ends.
	select {
	case <-p.exited:
		return p.exitStatus(), nil
	default:
		return ExitStatus{}, fmt.Errorf("agent: wait for process %d: %w", p.id, p.client.stopErr())
	}
}

func (p *Process) exitStatus() ExitStatus {
	p.client.mu.Lock()
	defer p.client.mu.Unlock()
	return p.status
}

func supportedSignalList() string {
	names := make([]string, 0, len(rfc4254Signals))
	for name := range rfc4254Signals {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
