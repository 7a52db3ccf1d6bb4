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
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

const (
	// agentAcceptBacklog bounds the streams the host may open before the
	// agent accepts them. The agent accepts at once, so a few are plenty.
	agentAcceptBacklog = 16
	// maxProcesses bounds the processes one connection runs at a time.
	maxProcesses = 16
)

// Serve runs the guest side of the protocol on conn, the connection that
// the agent dialed to the host, until the host closes it or ctx ends. It
// closes conn before it returns, after hanging up every process it still
// runs. It returns nil when the host closed the connection, ctx's error
// when ctx ended, and an error for a failed handshake, a protocol
// violation or a host that stopped reading the connection.
func Serve(ctx context.Context, conn net.Conn, opts ServeOptions) error {
	logger := discardLogger(opts.Logger)
	stall := &writeTimeoutConn{Conn: conn, timeout: controlWriteTimeout}
	session, err := yamux.Client(stall, newMuxConfig(logger, agentAcceptBacklog))
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("agent: serve: %w", err)
	}
	defer session.Close()
	stop := context.AfterFunc(ctx, func() { _ = session.Close() })
	defer stop()

	s := newServer(session, opts, logger)
	err = s.serve(ctx)
	if err == nil {
		// A failed control write, or a connection write that timed out,
		// closes the session, and the control loop cannot tell that from
		// a close by the host.
		err = s.writeFailure()
	}
	if err == nil {
		err = stall.timeoutErr()
	}
	s.shutdown()
	if ctx.Err() != nil {
		return fmt.Errorf("agent: serve: %w", context.Cause(ctx))
	}
	if err != nil {
		return fmt.Errorf("agent: serve: %w", err)
	}
	return nil
}

// server is the agent's state for one connection.
type server struct {
	logger        *slog.Logger
	session       *yamux.Session
	shell         string
	account       account
	software      string
	attachTimeout time.Duration

	control *yamux.Stream
	writeMu sync.Mutex
	// writeErr is the first control write that failed while the connection
	// was up (it timed out), after which the connection is closed.
	writeErr error

	mu         sync.Mutex
	procs      map[uint32]*guestProcess
	subsystems map[uint32]*subsystemProcess

	done     chan struct{} // closed when the server shuts down
	doneOnce sync.Once
	wg       sync.WaitGroup // stream and process goroutines
}

func newServer(session *yamux.Session, opts ServeOptions, logger *slog.Logger) *server {
	acct := lookupAccount("/etc/passwd", os.Getuid())
	s := &server{
		logger:        logger,
		session:       session,
		shell:         opts.Shell,
		account:       acct,
		software:      opts.Software,
		attachTimeout: opts.AttachTimeout,
		procs:         make(map[uint32]*guestProcess),
		subsystems:    make(map[uint32]*subsystemProcess),
		done:          make(chan struct{}),
	}
	if s.shell == "" {
		s.shell = acct.shell
	}
	if s.software == "" {
		s.software = softwareName("throwawaysh-guest-agent")
	}
	if s.attachTimeout <= 0 {
		s.attachTimeout = defaultAttachTimeout
	}
	return s
}

// serve runs the handshake and then the control loop.
func (s *server) serve(ctx context.Context) error {
	acceptCtx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	control, err := s.session.AcceptStreamWithContext(acceptCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("wait for the host's control stream: %w", err)
	}
	s.control = control

	if err := s.send(&HelloMsg{Version: ProtocolVersion, Software: s.software}); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	reader := bufio.NewReader(control)
	_ = control.SetReadDeadline(time.Now().Add(handshakeTimeout))
	m, err := readMessage(reader)
	if err != nil {
		return fmt.Errorf("read the host's hello: %w", err)
	}
	_ = control.SetReadDeadline(time.Time{})
	hello, ok := m.(*HelloMsg)
	if !ok {
		return fmt.Errorf("the host sent %s instead of hello", m.MessageType())
	}
	if hello.Version != ProtocolVersion {
		return fmt.Errorf("%w: the host (%s) speaks protocol version %d and this agent speaks version %d; reinstall the agent with ./install_guest_agent.sh ROOTFS from the same throwawaysh release", ErrVersionMismatch, hello.Software, hello.Version, ProtocolVersion)
	}
	s.logger.Info("host connected", "software", hello.Software)

	s.wg.Add(1)
	go s.acceptStreams()
	return s.controlLoop(reader)
}

// controlLoop handles the host's control messages until the connection
// ends. A message it cannot decode or does not expect ends the connection,
// after an error message with id 0 that gives the reason.
func (s *server) controlLoop(reader *bufio.Reader) error {
	for {
		m, err := readMessage(reader)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, yamux.ErrConnectionReset) || s.session.IsClosed() {
				s.logger.Info("host closed the connection")
				return nil
			}
			s.sendError(0, err.Error())
			return fmt.Errorf("control stream: %w", err)
		}
		switch m := m.(type) {
		case *StartMsg:
			s.start(m)
		case *ResizeMsg:
			s.resize(m)
		case *SignalMsg:
			s.signal(m)
		default:
			err := fmt.Errorf("the host sent a %s message on the control stream, which it must not", m.MessageType())
			s.sendError(0, err.Error())
			return err
		}
	}
}

// send writes one control message. A failure closes the connection,
// because the host would otherwise wait for a message that never comes.
func (s *server) send(m Message) error {
	line, err := encodeLine(m)
	if err != nil {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.writeErr != nil {
		return s.writeErr
	}
	_ = s.control.SetWriteDeadline(time.Now().Add(controlWriteTimeout))
	if _, err := s.control.Write(line); err != nil {
		err = fmt.Errorf("send %s message: %w", m.MessageType(), err)
		if s.session.IsClosed() || errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, yamux.ErrStreamClosed) {
			// The connection is already gone; that is no write failure.
			return err
		}
		s.writeErr = err
		s.logger.Error("control write failed; closing the connection", "err", err)
		_ = s.session.Close()
		return err
	}
	return nil
}

func (s *server) writeFailure() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.writeErr
}

// sendError replies to a request with an error message and logs it.
func (s *server) sendError(id uint32, text string) {
	s.logger.Warn("request failed", "id", id, "err", text)
	_ = s.send(&ErrorMsg{ID: id, Message: sanitizeMessage(text)})
}

func (s *server) shuttingDown() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *server) lookup(id uint32) *guestProcess {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[id]
}

// checkNewID returns why a new process with id cannot start, or "" when
// it can. Processes and subsystems share the ids and the limit.
func (s *server) checkNewID(id uint32) string {
	s.mu.Lock()
	_, duplicateProcess := s.procs[id]
	_, duplicateSubsystem := s.subsystems[id]
	running := len(s.procs) + len(s.subsystems)
	s.mu.Unlock()
	switch {
	case duplicateProcess || duplicateSubsystem:
		return fmt.Sprintf("process id %d is already in use", id)
	case running >= maxProcesses:
		return fmt.Sprintf("%d processes already run, the maximum per connection", running)
	}
	return ""
}

func (s *server) start(m *StartMsg) {
	if m.Subsystem != "" {
		s.startSubsystem(m)
		return
	}
	if !m.TTY {
		s.sendError(m.ID, "tty false is not supported: protocol version 1 runs every command in a PTY, and only a subsystem runs without one")
		return
	}
	if reason := s.checkNewID(m.ID); reason != "" {
		s.sendError(m.ID, reason)
		return
	}

	p, err := startProcess(m, s.shell, s.account)
	if err != nil {
		s.sendError(m.ID, err.Error())
		return
	}
	s.mu.Lock()
	s.procs[m.ID] = p
	s.mu.Unlock()
	s.logger.Info("process started", "id", m.ID, "pid", p.pid, "command", m.Command != "")

	// started goes out before the process goroutine can send anything
	// else about this process.
	if err := s.send(&StartedMsg{ID: m.ID, PID: p.pid}); err != nil {
		s.logger.Warn("report started process", "id", m.ID, "err", err)
	}
	s.wg.Add(1)
	go s.run(p)
}

func (s *server) resize(m *ResizeMsg) {
	p := s.lookup(m.ID)
	if p == nil {
		s.sendError(m.ID, fmt.Sprintf("resize: no process with id %d", m.ID))
		return
	}
	if p.hasExited.Load() {
		// A window change that crossed the exit on its way is harmless.
		return
	}
	if err := p.resize(m.Rows, m.Cols); err != nil {
		s.sendError(m.ID, fmt.Sprintf("resize process %d: %v", m.ID, err))
	}
}

func (s *server) signal(m *SignalMsg) {
	if !SupportedSignal(m.Signal) {
		s.sendError(m.ID, fmt.Sprintf("unsupported signal %s; use one of %s", quote(m.Signal, MaxSignalNameSize), supportedSignalList()))
		return
	}
	p := s.lookup(m.ID)
	if p == nil {
		s.sendError(m.ID, fmt.Sprintf("signal %s: no process with id %d", m.Signal, m.ID))
		return
	}
	if err := p.signal(m.Signal); err != nil {
		s.sendError(m.ID, fmt.Sprintf("signal %s to process %d: %v", m.Signal, m.ID, err))
	}
}

// acceptStreams accepts the host's data streams until the connection ends.
func (s *server) acceptStreams() {
	defer s.wg.Done()
	for {
		stream, err := s.session.AcceptStream()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go s.attach(stream)
	}
}

// attach reads a data stream's attach line and hands the stream to its
// process. A stream that names no waiting process is closed.
func (s *server) attach(stream *yamux.Stream) {
	defer s.wg.Done()
	reader := bufio.NewReader(stream)
	_ = stream.SetReadDeadline(time.Now().Add(handshakeTimeout))
	m, err := readMessage(reader)
	_ = stream.SetReadDeadline(time.Time{})
	if err != nil {
		s.logger.Warn("read attach line", "err", err)
		_ = stream.Close()
		return
	}
	a, ok := m.(*AttachMsg)
	if !ok {
		s.logger.Warn("data stream does not start with attach", "type", m.MessageType())
		_ = stream.Close()
		return
	}
	if !s.offerStream(a.ID, &dataStream{stream: stream, input: reader}) {
		s.logger.Warn("attach to a process that is unknown or already attached", "id", a.ID)
		_ = stream.Close()
	}
}

// offerStream hands ds to the process or subsystem with id. It returns
// false when there is none or it already has a stream.
func (s *server) offerStream(id uint32, ds *dataStream) bool {
	s.mu.Lock()
	p := s.procs[id]
	sub := s.subsystems[id]
	s.mu.Unlock()
	switch {
	case p != nil:
		return p.offerStream(ds)
	case sub != nil:
		return sub.offerStream(ds)
	default:
		return false
	}
}

// run forwards one process's terminal data, waits for it to end and
// reports its exit status.
func (s *server) run(p *guestProcess) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.procs, p.id)
		s.mu.Unlock()
	}()

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		p.waitExit(s.logger)
	}()

	stream := p.awaitStream(s.attachTimeout, s.done)
	if stream != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			p.copyInput(stream.input)
		}()
		p.copyOutput(stream.stream)
		// The host reads end of file after the last output byte.
		_ = stream.stream.Close()
	} else if !s.shuttingDown() {
		s.sendError(p.id, fmt.Sprintf("no data stream attached within %s; the process was hung up", s.attachTimeout))
		// No host reads the output, and a process blocked on a full
		// terminal would never exit.
		p.hangUp()
		p.closeTerminal()
	}

	select {
	case <-p.exited:
	case <-s.done:
		p.stopAll(s.logger)
	}
	// A terminal hangup for what is left of the session, such as
	// background jobs.
	p.hangUp()
	p.closeTerminal()
	if s.shuttingDown() {
		return
	}
	status := p.exitStatus()
	s.logger.Info("process exited", "id", p.id, "pid", p.pid, "status", status.Code, "signal", status.Signal)
	_ = s.send(&ExitMsg{ID: p.id, Status: status.Code, Signal: status.Signal})
}

// shutdown stops every process and waits for the server's goroutines.
func (s *server) shutdown() {
	s.doneOnce.Do(func() { close(s.done) })
	// Closing the session ends every blocked stream read and write, and
	// closing the terminals ends every blocked terminal read and write.
	_ = s.session.Close()
	s.mu.Lock()
	procs := make([]*guestProcess, 0, len(s.procs))
	for _, p := range s.procs {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	for _, p := range procs {
		p.hangUp()
		p.closeTerminal()
	}
	s.wg.Wait()
}
