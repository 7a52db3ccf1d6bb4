package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

// defaultReportTimeout bounds how long RunConsole waits, once the command
// has ended, for the connection to the host and for the host to take the
// report.
const defaultReportTimeout = 5 * time.Second

// Exit codes of RunConsole for a command that could not start, the same as
// a shell's.
const (
	consoleNotExecutable = 126
	consoleNotFound      = 127
)

// RunConsole runs argv as a child with the given stdio, forwards the
// signals of opts.Signals to it, and reports how it ended to the host with
// an exit message with ConsoleID. dial connects to the host. It runs while
// the command starts, so a slow host does not delay the command, and it
// must return once its context ends.
//
// RunConsole returns the command's status and a non-nil error when the
// report did not reach the host. The status is valid even then. When argv
// cannot start, the status is 127 (not found) or 126 (any other reason), as
// a shell reports it, and nothing is sent. ctx bounds only the connection:
// the command runs until it ends.
func RunConsole(ctx context.Context, argv []string, dial func(context.Context) (net.Conn, error), opts ConsoleOptions) (ExitStatus, error) {
	logger := discardLogger(opts.Logger)
	if len(argv) == 0 || argv[0] == "" {
		return ExitStatus{Code: consoleNotFound}, fmt.Errorf("agent: %w: no command given; pass it after --", ErrConsoleStart)
	}
	reportTimeout := opts.ReportTimeout
	if reportTimeout <= 0 {
		reportTimeout = defaultReportTimeout
	}
	software := opts.Software
	if software == "" {
		software = softwareName("throwawaysh-guest-agent")
	}

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = orFile(opts.Stdin, os.Stdin), orFile(opts.Stdout, os.Stdout), orFile(opts.Stderr, os.Stderr)
	// A session of its own, as sshd gives the command, so that "kill 0"
	// in the command cannot end the agent before it reports.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		code := consoleNotExecutable
		if errors.Is(err, fs.ErrNotExist) {
			code = consoleNotFound
		}
		return ExitStatus{Code: code}, fmt.Errorf("agent: %w: %q: %w", ErrConsoleStart, argv[0], err)
	}
	logger.Info("console command started", "pid", cmd.Process.Pid)

	connectCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	linked := make(chan consoleLink, 1)
	go func() {
		link := connectConsole(connectCtx, dial, software)
		if link.err == nil {
			go link.serveSignals(cmd.Process.Pid, logger)
		}
		linked <- link
	}()

	status := waitConsoleCommand(cmd, opts.Signals, logger)
	logger.Info("console command exited", "status", status.Code, "signal", status.Signal)

	deadline := time.Now().Add(reportTimeout)
	timer := time.NewTimer(reportTimeout)
	defer timer.Stop()
	var link consoleLink
	select {
	case link = <-linked:
	case <-timer.C:
		cancel()
		link = <-linked
	}
	if link.err != nil {
		return status, fmt.Errorf("agent: report console exit: %w", link.err)
	}
	if err := link.report(status, deadline); err != nil {
		return status, fmt.Errorf("agent: report console exit: %w", err)
	}
	return status, nil
}

func orFile(f, fallback *os.File) *os.File {
	if f != nil {
		return f
	}
	return fallback
}

// waitConsoleCommand forwards signals to cmd until it ends and returns its
// exit status.
func waitConsoleCommand(cmd *exec.Cmd, signals <-chan os.Signal, logger *slog.Logger) ExitStatus {
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	for {
		select {
		case sig := <-signals:
			if err := cmd.Process.Signal(sig); err != nil {
				logger.Warn("forward signal to console command", "signal", sig, "err", err)
			}
			continue
		case <-exited:
		}
		break
	}

	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ok && ws.Signaled():
		number := int(ws.Signal())
		return ExitStatus{Code: 128 + number, Signal: signalName(number)}
	case ok && ws.Exited():
		return ExitStatus{Code: ws.ExitStatus()}
	default:
		logger.Error("console command ended without an exit status", "state", cmd.ProcessState.String())
		return ExitStatus{Code: statusWaitFailed}
	}
}

// consoleLink is the agent's end of a connection on which it reports the
// console command's exit, after the hello exchange.
type consoleLink struct {
	session *yamux.Session
	control *yamux.Stream
	reader  *bufio.Reader
	// hostClosed is closed once the host closes the connection or sends
	// something that ends it; serveSignals reads until then.
	hostClosed chan struct{}
	err        error
}

// serveSignals delivers the host's signal messages to the process group of
// the command, whose process id is pid, until the host closes the
// connection or breaks the protocol.
func (l consoleLink) serveSignals(pid int, logger *slog.Logger) {
	defer close(l.hostClosed)
	for {
		m, err := readMessage(l.reader)
		if err != nil {
			return
		}
		sig, ok := m.(*SignalMsg)
		if !ok || sig.ID != ConsoleID {
			logger.Warn("the host sent a message the console connection does not take; closing it", "type", m.MessageType())
			_ = l.session.Close()
			return
		}
		number, ok := signalNumber(sig.Signal)
		if !ok {
			logger.Warn("signal from the host not supported", "signal", sig.Signal)
			continue
		}
		// The command leads a session of its own, so its process group
		// id is its pid.
		if err := syscall.Kill(-pid, syscall.Signal(number)); err != nil {
			logger.Info("signal console command", "signal", sig.Signal, "err", err)
		}
	}
}

// connectConsole dials the host and exchanges hello messages.
func connectConsole(ctx context.Context, dial func(context.Context) (net.Conn, error), software string) consoleLink {
	conn, err := dial(ctx)
	if err != nil {
		return consoleLink{err: fmt.Errorf("dial host: %w", err)}
	}
	stall := &writeTimeoutConn{Conn: conn, timeout: controlWriteTimeout}
	session, err := yamux.Client(stall, newMuxConfig(nil, agentAcceptBacklog))
	if err != nil {
		_ = conn.Close()
		return consoleLink{err: err}
	}
	// Closing the session ends the waits below when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = session.Close() })
	defer stop()

	acceptCtx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	control, err := session.AcceptStreamWithContext(acceptCtx)
	cancel()
	if err != nil {
		_ = session.Close()
		return consoleLink{err: fmt.Errorf("wait for the host's control stream: %w", err)}
	}
	link := consoleLink{session: session, control: control, reader: bufio.NewReader(control), hostClosed: make(chan struct{})}
	if err := link.write(&HelloMsg{Version: ProtocolVersion, Software: software}, time.Now().Add(controlWriteTimeout)); err != nil {
		_ = session.Close()
		return consoleLink{err: err}
	}
	_ = control.SetReadDeadline(time.Now().Add(handshakeTimeout))
	m, err := readMessage(link.reader)
	_ = control.SetReadDeadline(time.Time{})
	if err != nil {
		_ = session.Close()
		return consoleLink{err: fmt.Errorf("read the host's hello: %w", err)}
	}
	hello, ok := m.(*HelloMsg)
	if !ok {
		_ = session.Close()
		return consoleLink{err: fmt.Errorf("the host sent %s instead of hello", m.MessageType())}
	}
	if hello.Version != ProtocolVersion {
		_ = session.Close()
		return consoleLink{err: fmt.Errorf("%w: the host (%s) speaks protocol version %d and this agent speaks version %d; reinstall the agent with ./install_guest_agent.sh ROOTFS from the same throwawaysh release", ErrVersionMismatch, hello.Software, hello.Version, ProtocolVersion)}
	}
	if ctx.Err() != nil {
		_ = session.Close()
		return consoleLink{err: context.Cause(ctx)}
	}
	return link
}

func (l consoleLink) write(m Message, deadline time.Time) error {
	line, err := encodeLine(m)
	if err != nil {
		return err
	}
	_ = l.control.SetWriteDeadline(deadline)
	if _, err := l.control.Write(line); err != nil {
		return fmt.Errorf("send %s message: %w", m.MessageType(), err)
	}
	return nil
}

// report sends the exit message and waits until deadline for the host to
// close the connection. The host closes it once it has the report, so the
// agent does not exit, and end the VM, while the report is still on its
// way.
func (l consoleLink) report(status ExitStatus, deadline time.Time) error {
	defer l.session.Close()
	err := l.write(&ExitMsg{ID: ConsoleID, Status: status.Code, Signal: status.Signal}, deadline)
	if errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, yamux.ErrStreamClosed) {
		// yamux fails a write whose frame already went out when the peer
		// closes the session at once, as the host does after the report.
		// NOTE: so a host that closed before the report also counts as
		// done here. The returned status is right either way.
		return nil
	}
	if err != nil {
		return err
	}
	// serveSignals reads until the host closes the connection.
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-l.hostClosed:
		return nil
	case <-timer.C:
		return errors.New("the host did not close the connection within the report timeout; the report may be lost")
	}
}
