package middleware

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"charm.land/ssh"
	"charm.land/wish/v2"
	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/agent"
	"github.com/throwawaysh/throwawaysh/krun"
	"github.com/throwawaysh/throwawaysh/rootfs"
)

// agentStartTimeout bounds the wait for the guest agent's reply to a
// start request.
const agentStartTimeout = 10 * time.Second

// Exit statuses of libkrun's guest init when it cannot run the workload.
const (
	guestInitNotExecutable = 126
	guestInitNotFound      = 127
)

// Route returns a middleware that connects the session to the VM that the
// VM middleware booted: the VM console for sessions without a PTY, the
// guest agent for sessions with one and for the sftp subsystem. It sends the exit status and closes
// the session, so it must be the innermost middleware, listed first in
// wish.WithMiddleware. It does not call the handler after it. PTY sessions
// need the RawPTY server option.
func Route() wish.Middleware {
	return func(ssh.Handler) ssh.Handler {
		return func(s ssh.Session) {
			s = SessionContext(s)
			if _, stopped := stopMessage(s.Context()); stopped {
				// A Tracker's Shutdown came before the workload
				// started, and finish sends its message.
				finish(s, Result{})
				return
			}
			guest, ok := GuestFrom(s.Context())
			if !ok {
				fail(s, ExitVMFailed, errors.New("route: no VM in the session context; put the VM middleware before Route"),
					"the server is misconfigured; tell the operator")
				return
			}
			switch guest.Mode {
			case ModePTY:
				routePTY(s, guest)
			case ModeSubsystem:
				routeSubsystem(s, guest)
			default:
				routeConsole(s, guest)
			}
		}
	}
}

// killOnDisconnect kills the VM when the client's connection ends before
// the session does. Call the returned function when the session ends.
func killOnDisconnect(s ssh.Session, guest *Guest) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-s.Context().Done():
			// A client may close its connection as soon as it has the
			// exit status, before the handler returns.
			if _, ended := SessionResult(s.Context()); !ended {
				Logger(s.Context()).Info("client disconnected; killing vm")
			}
			_ = guest.killVM()
		case <-done:
		}
	}()
	return func() { close(done) }
}

// routeConsole wires the channel to the VM console: channel data to the
// workload's stdin, its stdout and stderr to the channel's data and
// extended data, and its exit status back.
func routeConsole(s ssh.Session, guest *Guest) {
	logger := Logger(s.Context())
	vm := guest.VM
	defer killOnDisconnect(s, guest)()

	var report <-chan consoleReport
	if guest.agentListener != nil {
		reportCtx, cancelReport := context.WithCancel(s.Context())
		defer cancelReport()
		signals := &consoleSignals{}
		report = awaitConsoleReport(reportCtx, guest, signals, logger)
		stopSignals := forwardSignals(s, signals.signal, logger)
		defer stopSignals()
	}
	// NOTE: without the guest agent, signal requests are dropped: the VM
	// process could pass on only SIGINT, and only to the shell.

	// Nothing waits for this copy, because a command that does not read
	// stdin must still finish and the client may never send end of file.
	// It ends when the channel closes or a write to the ended VM fails.
	go func() {
		if _, err := io.Copy(vm.Stdin(), s); err != nil && !isClosedError(err) {
			logger.Debug("copy client input to vm", "err", err)
		}
		_ = vm.Stdin().Close()
	}()

	var firstOutput sync.Once
	noteOutput := func() {
		firstOutput.Do(func() {
			logger.Debug("guest ready", "signal", "first console byte", "duration", time.Since(guest.Booted))
			observeGuestReady(s.Context())
		})
	}
	var wg sync.WaitGroup
	copyOut := func(dst io.Writer, src io.Reader, stream string) {
		defer wg.Done()
		_, err := io.Copy(dst, &notifyReader{r: src, notify: noteOutput})
		if errors.Is(err, ErrEndOfWrite) {
			// As sshd does: the command's next write to stdout fails
			// (SIGPIPE), and the session ends with its status.
			// NOTE: this closes the VM process's console output. The
			// test launcher passes that on to the command; libkrun's
			// console has not been tried.
			logger.Debug("client reads no more output; closing the command's stdout", "stream", stream)
			if closer, ok := src.(io.Closer); ok {
				_ = closer.Close()
			}
			return
		}
		if err != nil && !isClosedError(err) {
			// The client stopped reading output, so the rest can never be
			// delivered.
			logger.Info("copy vm output to client", "stream", stream, "err", err)
			_ = guest.killVM()
		}
	}
	wg.Add(2)
	go copyOut(s, vm.Stdout(), "stdout")
	go copyOut(s.Stderr(), vm.Stderr(), "stderr")
	// All output must be on the channel before the exit status goes out.
	wg.Wait()

	status, err := vm.Wait()
	if clientGone(s, status) {
		return
	}
	if err != nil {
		fail(s, ExitVMFailed, err, "the VM failed to boot; try again, and tell the operator if it keeps failing")
		return
	}
	finish(s, consoleResult(status, report, logger))
}

// consoleReportTimeout bounds the wait, after the VM ended, for the guest
// agent's report of how the console command ended. The agent sends it
// before it exits, so it is normally there already.
const consoleReportTimeout = 3 * time.Second

// consoleReport is the guest agent's report of how the console command
// ended, or why there is none.
type consoleReport struct {
	status agent.ExitStatus
	err    error
}

// awaitConsoleReport accepts the guest agent of a console session, hands
// it to signals, and waits for its exit report, until ctx ends. It closes
// ln when it returns.
func awaitConsoleReport(ctx context.Context, guest *Guest, signals *consoleSignals, logger *slog.Logger) <-chan consoleReport {
	ln := guest.agentListener
	report := make(chan consoleReport, 1)
	// Closing the listener ends the Accept below once ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	go func() {
		defer stop()
		defer func() { _ = ln.Close() }()
		conn, err := ln.Accept()
		if err != nil {
			report <- consoleReport{err: fmt.Errorf("accept guest agent connection: %w", err)}
			return
		}
		client, err := agent.Connect(ctx, conn, logger)
		if err != nil {
			report <- consoleReport{err: fmt.Errorf("connect to guest agent: %w", err)}
			return
		}
		guest.trackAgent(client)
		observeGuestReady(ctx)
		signals.connected(client, logger)
		status, err := client.ConsoleExit(ctx)
		// The agent exits once the host closes the connection.
		_ = client.Close()
		report <- consoleReport{status: status, err: err}
	}()
	return report
}

// consoleResult returns the result of a console session whose VM ended with
// vmStatus. The agent's report, when it arrives in time, wins, because
// only it can distinguish a signal from an exit code of 128+N.
func consoleResult(vmStatus int, report <-chan consoleReport, logger *slog.Logger) Result {
	if report == nil {
		return Result{Status: vmStatus}
	}
	timer := time.NewTimer(consoleReportTimeout)
	defer timer.Stop()
	select {
	case r := <-report:
		if r.err != nil {
			logger.Info("no console exit report from the guest agent; using the VM status", "status", vmStatus, "err", r.err)
			return Result{Status: vmStatus}
		}
		return Result{Status: r.status.Code, Signal: r.status.Signal}
	case <-timer.C:
		logger.Info("no console exit report from the guest agent in time; using the VM status", "status", vmStatus, "timeout", consoleReportTimeout)
		return Result{Status: vmStatus}
	}
}

// clientGone reports whether the client's connection has ended, and then
// records the session's end without an error: a client that goes away is
// how many sessions end, not a failure of the service.
func clientGone(s ssh.Session, status int) bool {
	if s.Context().Err() == nil {
		return false
	}
	Logger(s.Context()).Info("client disconnected")
	s.Context().SetValue(resultKey, &Result{Status: status, ClientGone: true})
	return true
}

// notifyReader calls notify before the first successful read.
type notifyReader struct {
	r      io.Reader
	notify func()
}

func (n *notifyReader) Read(p []byte) (int, error) {
	count, err := n.r.Read(p)
	if count > 0 {
		n.notify()
	}
	return count, err
}

// vmExit is the end of a VM: its status or its failure.
type vmExit struct {
	status int
	err    error
}

// routePTY connects the channel to a PTY process that the guest agent
// runs, and forwards window changes and signals to it.
func routePTY(s ssh.Session, guest *Guest) {
	ctx := s.Context()
	logger := Logger(ctx)
	defer killOnDisconnect(s, guest)()

	if s.EmulatedPty() {
		fail(s, ExitVMFailed, errors.New("route: the server emulates PTYs; add the middleware.RawPTY server option"),
			"the server is misconfigured; tell the operator")
		return
	}
	state := ptyStateOf(s)
	if state == nil {
		// RawPTY drops a session's pty-req once its channel closes, as
		// the channel of a client that left during the boot has.
		if clientGone(s, -1) {
			return
		}
		fail(s, ExitVMFailed, errors.New("route: no pty-req recorded; add the middleware.RawPTY server option"),
			"the server is misconfigured; tell the operator")
		return
	}
	req := state.req
	command := s.RawCommand()
	if !utf8.ValidString(command) {
		// NOTE: the agent protocol carries text as JSON, which holds only
		// valid UTF-8; sshd would run such a command.
		fail(s, ExitVMFailed, errors.New("route: PTY command is not valid UTF-8"),
			"commands run with a PTY must be valid UTF-8; run this one without a PTY (ssh -T)")
		return
	}
	if len(command) >= maxPTYCommandBytes {
		// The guest would fail to start the shell, and the client would
		// read that as a fault of the server.
		fail(s, ExitVMFailed, fmt.Errorf("route: PTY command of %d bytes", len(command)),
			fmt.Sprintf("a command run with a PTY must be shorter than %d bytes, because it becomes one argument of the shell; run this one without a PTY (ssh -T)", maxPTYCommandBytes))
		return
	}

	client, ok := connectAgent(s, guest, "the VM did not start its shell; try again, and tell the operator if it keeps failing")
	if !ok {
		return
	}

	// An agent that never replies to start must not hold the session open.
	startCtx, cancelStart := context.WithTimeout(ctx, agentStartTimeout)
	defer cancelStart()
	proc, err := client.Start(startCtx, agent.StartRequest{
		Command: command,
		TTY:     true,
		Term:    terminalType(req.Term, logger),
		Rows:    clampDimension(req.Window.Height),
		Cols:    clampDimension(req.Window.Width),
		Env:     append(clientEnv(s, logger), connectionEnv(s)...),
		Modes:   terminalModes(req.Modes),
	})
	if err != nil && clientGone(s, -1) {
		return
	}
	if err != nil {
		fail(s, ExitAgentLost, fmt.Errorf("start guest process: %w", err), "the guest agent could not start the shell; try again, and tell the operator if it keeps failing")
		return
	}
	logger.Info("guest ready", "signal", "agent connected", "duration", time.Since(guest.Booted))
	observeGuestReady(ctx)

	stopWindows := make(chan struct{})
	defer close(stopWindows)
	go forwardWindowChanges(state, proc, stopWindows, logger)
	stopSignals := forwardSignals(s, proc.Signal, logger)
	defer stopSignals()

	relayProcess(s, proc, "the connection to the guest agent was lost before the command finished")
}

// relayProcess copies the channel's data to proc's input and proc's output
// to the channel, then waits for proc and ends the session with its exit
// status. lostMessage is the sentence for the user when the agent
// connection breaks.
func relayProcess(s ssh.Session, proc *agent.Process, lostMessage string) {
	logger := Logger(s.Context())
	go func() {
		if _, err := io.Copy(proc, s); err != nil && !isClosedError(err) {
			logger.Debug("copy client input to guest", "err", err)
		}
		_ = proc.CloseWrite()
	}()

	if _, err := io.Copy(s, proc); err != nil && !isClosedError(err) {
		logger.Info("copy guest output to client", "err", err)
	}
	status, err := proc.Wait()
	if err != nil && clientGone(s, -1) {
		return
	}
	if err != nil {
		fail(s, ExitAgentLost, fmt.Errorf("wait for guest process: %w", err), lostMessage)
		return
	}
	finish(s, Result{Status: status.Code, Signal: status.Signal})
}

// connectAgent returns the client of the session's guest agent (see
// Guest.Agent). On failure it ends the session, with bootFailure as the
// message for a VM that ended or failed for no known reason, and returns
// false.
func connectAgent(s ssh.Session, guest *Guest, bootFailure string) (*agent.Client, bool) {
	client, err := guest.Agent()
	if err != nil && clientGone(s, -1) {
		return nil, false
	}
	if err != nil {
		var userErr *userError
		var connectErr *agentConnectError
		switch {
		case errors.As(err, &userErr):
			fail(s, ExitVMFailed, err, userErr.message)
		case errors.As(err, &connectErr):
			message := "the guest agent did not respond; try again, and tell the operator if it keeps failing"
			if errors.Is(err, agent.ErrVersionMismatch) {
				message = "the guest agent in this server's rootfs does not match the server; ask the operator to reinstall it with ./install_guest_agent.sh"
			}
			fail(s, ExitAgentLost, err, message)
		default:
			fail(s, ExitVMFailed, err, bootFailure)
		}
		return nil, false
	}
	return client, true
}

// acceptAgent waits for the guest agent to connect, and gives up when the
// VM ends first, the boot timeout passes or the client goes away.
func acceptAgent(ctx context.Context, guest *Guest, exited <-chan vmExit) (net.Conn, error) {
	type accepted struct {
		conn net.Conn
		err  error
	}
	result := make(chan accepted, 1)
	go func() {
		conn, err := guest.agentListener.Accept()
		result <- accepted{conn, err}
	}()
	// Closing the listener ends the Accept above on every path below.
	defer func() { _ = guest.agentListener.Close() }()

	timer := time.NewTimer(guest.bootTimeout)
	defer timer.Stop()

	select {
	case a := <-result:
		if a.err != nil {
			return nil, fmt.Errorf("accept guest agent connection: %w", a.err)
		}
		return a.conn, nil
	case e := <-exited:
		return nil, agentExitError(e, guest.Mode)
	case <-timer.C:
		return nil, &userError{
			err:     fmt.Errorf("guest agent did not connect within %s", guest.bootTimeout),
			message: fmt.Sprintf("the VM did not become ready within %s; try again, and tell the operator if it keeps failing", guest.bootTimeout),
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("client left before the guest agent connected: %w", ctx.Err())
	}
}

// agentExitError explains a VM that ended before its agent connected.
func agentExitError(e vmExit, mode Mode) error {
	need, alternative := agentNeed(mode)
	switch {
	case e.err != nil:
		return &userError{err: fmt.Errorf("boot vm: %w", e.err), message: "the VM failed to boot; try again, and tell the operator if it keeps failing"}
	case e.status == guestInitNotFound:
		return &userError{
			err:     fmt.Errorf("guest init could not find %s (status %d)", rootfs.AgentPath, e.status),
			message: fmt.Sprintf("%s, and %s was not found in the VM; ask the operator to run ./install_guest_agent.sh on the rootfs%s", need, rootfs.AgentPath, alternative),
		}
	case e.status == guestInitNotExecutable:
		return &userError{
			err:     fmt.Errorf("guest init could not execute %s (status %d)", rootfs.AgentPath, e.status),
			message: fmt.Sprintf("the guest agent %s cannot run in the VM (not executable, or built for another architecture); ask the operator to reinstall it with ./install_guest_agent.sh", rootfs.AgentPath),
		}
	default:
		return fmt.Errorf("guest agent exited with status %d before it connected", e.status)
	}
}

// logConsole copies the VM's stdout and stderr lines to the log at debug
// level and returns a channel closed when both reach end of file. It keeps
// reading after maxConsoleLog bytes but stops logging, so a noisy guest
// can neither block on a full pipe nor flood the log.
func logConsole(vm krun.VM, logger *slog.Logger) <-chan struct{} {
	const maxLine = 1024
	const maxConsoleLog = 64 << 10
	var wg sync.WaitGroup
	read := func(r io.Reader, stream string) {
		defer wg.Done()
		reader := bufio.NewReaderSize(r, maxLine)
		logged := 0
		for {
			line, err := reader.ReadSlice('\n')
			if len(line) > 0 && logged < maxConsoleLog {
				logged += len(line)
				logger.Debug("vm console", "stream", stream, "line", string(trimNewline(line)))
			}
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				return
			}
		}
	}
	wg.Add(2)
	go read(vm.Stdout(), "stdout")
	go read(vm.Stderr(), "stderr")
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

func trimNewline(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		return b[:n-1]
	}
	return b
}

// NOTE: window changes reach the guest on the agent's control stream and
// input on its data stream, so input sent right after a resize can reach
// the shell first; sshd applies both in the order they arrived.
//
// forwardWindowChanges applies the session's window changes to proc until
// the channel's requests end or stop is closed. Sizes that arrive faster
// than they can be applied coalesce into the newest, which is the one the
// client's terminal has.
func forwardWindowChanges(state *ptyState, proc *agent.Process, stop <-chan struct{}, logger *slog.Logger) {
	for {
		select {
		case <-state.changed:
			w := state.latestWindow()
			if err := proc.Resize(clampDimension(w.Height), clampDimension(w.Width)); err != nil {
				logger.Debug("forward window change", "err", err)
			}
		case <-state.closed:
			return
		case <-stop:
			return
		}
	}
}

// signalChannelSize is above the 128 signals that charm.land/ssh v0.4.3
// keeps from before the handler registers (maxSigBufSize), because it hands
// those over from a goroutine of its own, which must never block.
const signalChannelSize = 256

// forwardSignals passes the client's signal requests to signal, which
// delivers them in the guest. Call the returned function to stop.
//
// The channel stays registered for the session's life. The SSH library
// reads the registered channel without its lock while it hands over the
// early signals, so setting another (or nil) could leave that goroutine
// blocked for good. After stop, requests are read and dropped until they
// pause for drainIdle.
func forwardSignals(s ssh.Session, signal func(name string) error, logger *slog.Logger) (stop func()) {
	signals := make(chan ssh.Signal, signalChannelSize)
	stopped := make(chan struct{})
	done := s.Context().Done()
	s.Signals(signals)
	go func() {
		for {
			select {
			case sig := <-signals:
				// Debug, because a client can send signal requests
				// without limit, with names up to a packet long.
				if err := signal(string(sig)); err != nil {
					logger.Debug("forward signal", "signal", logSafe(string(sig)), "err", err)
				}
			case <-stopped:
				drainSignals(signals, done)
				return
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(stopped) }) }
}

// drainIdle is how long drainSignals waits for another signal request.
const drainIdle = time.Second

// drainSignals reads and drops signals until none arrives for drainIdle
// or done is closed.
func drainSignals(signals <-chan ssh.Signal, done <-chan struct{}) {
	idle := time.NewTimer(drainIdle)
	defer idle.Stop()
	for {
		select {
		case <-signals:
			idle.Reset(drainIdle)
		case <-idle.C:
			return
		case <-done:
			return
		}
	}
}

// consoleSignals delivers signal requests to a console command through
// the guest agent that runs it, once that agent has connected. Signals
// that arrive before hold until then, up to maxPendingSignals.
type consoleSignals struct {
	mu      sync.Mutex
	client  *agent.Client
	pending []string
}

// maxPendingSignals bounds the signal requests held for an agent that has
// not connected yet; a client can send them without limit.
const maxPendingSignals = 16

func (c *consoleSignals) signal(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client == nil {
		if len(c.pending) >= maxPendingSignals {
			return fmt.Errorf("%d signals already wait for the guest agent", maxPendingSignals)
		}
		c.pending = append(c.pending, name)
		return nil
	}
	return c.client.SignalConsole(name)
}

// connected delivers the held signals through client and the later ones
// as they come.
func (c *consoleSignals) connected(client *agent.Client, logger *slog.Logger) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.client = client
	for _, name := range c.pending {
		if err := client.SignalConsole(name); err != nil {
			logger.Debug("forward signal", "signal", logSafe(name), "err", err)
		}
	}
	c.pending = nil
}

// maxPTYCommandBytes is Linux's limit on one argument of a new program
// (MAX_ARG_STRLEN, 32 pages of 4 KiB), its terminating NUL included. The
// guest agent passes a PTY command to the shell as one argument.
const maxPTYCommandBytes = 128 << 10

// maxTermBytes is the guest agent's limit on TERM.
const maxTermBytes = agent.MaxTermSize

// terminalType returns term if the guest agent accepts it as TERM, and
// "dumb" otherwise: a TERM with control characters or invalid UTF-8 names
// no real terminal, and the agent rejects it.
func terminalType(term string, logger *slog.Logger) string {
	if len(term) <= maxTermBytes && utf8.ValidString(term) && !strings.ContainsFunc(term, unicode.IsControl) {
		return term
	}
	logger.Info("client TERM replaced", "reason", "too long, not UTF-8 or with control characters", "replacement", "dumb")
	return "dumb"
}

// clampDimension turns a window dimension from the client into the range a
// terminal size can hold.
func clampDimension(v int) uint32 {
	switch {
	case v < 0:
		return 0
	case v > 0xffff:
		return 0xffff
	default:
		return uint32(v)
	}
}

// terminalModes converts pty-req terminal modes for the agent.
func terminalModes(modes gossh.TerminalModes) map[uint8]uint32 {
	if len(modes) == 0 {
		return nil
	}
	out := make(map[uint8]uint32, len(modes))
	for opcode, value := range modes {
		out[opcode] = value
	}
	return out
}

// isClosedError reports whether err only means that one end went away,
// which is the normal end of every session.
func isClosedError(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}
