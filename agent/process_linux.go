package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

const (
	// drainIdle is how long the agent keeps reading the terminal after the
	// process exited and no output came. Background jobs can hold the
	// terminal open forever, so end of file alone cannot end the output.
	drainIdle = 200 * time.Millisecond
	// drainMaxWait bounds the time that the drain after exit spends waiting
	// for output in all, because a background job that writes now and then
	// never lets it go idle. Time spent waiting for the host to take output
	// does not count, so a slow SSH client loses nothing.
	drainMaxWait = 2 * time.Second
	// drainMaxBytes bounds the output that the drain forwards after exit, for
	// background jobs that write without pause. What the process itself wrote
	// before it exited is at most what the PTY buffers: about 20 KiB on Linux
	// 6.18, measured by writing to a slave whose master no one reads.
	drainMaxBytes = 1 << 20
	// stopGrace is how long a process may take to exit after a hangup, and
	// again after SIGKILL, when the connection ends.
	stopGrace = 2 * time.Second
	// statusWaitFailed is the exit status reported when the agent could not
	// learn the real one: 255, which the OpenSSH client also uses for
	// failures of its own.
	statusWaitFailed = 255
)

// guestProcess is one process that the agent runs in a PTY.
type guestProcess struct {
	id  uint32
	pid int
	cmd *exec.Cmd
	// terminal is the PTY master. Its fd is non-blocking and in Go's
	// poller, which read deadlines need, so use it only through os.File
	// methods and SyscallConn, never Fd (which makes it blocking).
	terminal  *os.File
	closeOnce sync.Once

	streamSlot

	exited    chan struct{} // closed when the process has been reaped
	hasExited atomic.Bool   // set with exited, for checks without select
	exitedAt  time.Time     // written before hasExited is set
	status    ExitStatus    // written before exited is closed
}

// dataStream is an attached data stream. input has already consumed the
// attach line and may hold input bytes that followed it.
type dataStream struct {
	stream io.WriteCloser
	input  io.Reader
}

// startProcess opens a PTY and starts the shell in it, in a new session
// with the PTY as controlling terminal, the way OpenSSH starts a session's
// process.
func startProcess(m *StartMsg, shell string, acct account) (*guestProcess, error) {
	terminal, tty, err := openPTY()
	if err != nil {
		return nil, fmt.Errorf("open a pty: %w", err)
	}
	// The child has its own copy of tty once started.
	defer tty.Close()

	if err := applyModes(tty, m.Modes); err != nil {
		_ = terminal.Close()
		return nil, fmt.Errorf("set terminal modes: %w", err)
	}
	p := &guestProcess{
		id:         m.ID,
		terminal:   terminal,
		streamSlot: streamSlot{streams: make(chan *dataStream, 1)},
		exited:     make(chan struct{}),
	}
	err = p.control(func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(m.Rows), Col: uint16(m.Cols)})
	})
	if err != nil {
		_ = terminal.Close()
		return nil, fmt.Errorf("set window size %dx%d: %w", m.Cols, m.Rows, err)
	}

	cmd := shellCommand(m, shell, acct)
	// As sshd sets it; after the host's entries, so a client cannot
	// replace it.
	cmd.Env = append(cmd.Env, "SSH_TTY="+tty.Name())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	// Ctty is a descriptor number in the child: 0 is tty.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		_ = terminal.Close()
		return nil, fmt.Errorf("start %s: %w", shell, err)
	}
	p.cmd = cmd
	p.pid = cmd.Process.Pid
	return p, nil
}

// openPTY opens a PTY pair. pty.Open leaves the master in blocking mode,
// because it calls Fd, and a blocking file ignores deadlines and Close
// cannot interrupt its reads. So the master is moved to a new non-blocking
// descriptor, which os.NewFile puts in Go's poller.
func openPTY() (terminal, tty *os.File, err error) {
	master, tty, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	defer master.Close()
	fd, err := unix.FcntlInt(master.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		_ = tty.Close()
		return nil, nil, fmt.Errorf("duplicate pty master: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		_ = tty.Close()
		return nil, nil, fmt.Errorf("make pty master non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fd), master.Name()), tty, nil
}

// shellCommand builds the command as OpenSSH does: a login shell (argv[0]
// "-" and the shell's base name) for an empty command, and "shell -c
// command" otherwise. The environment is only the agent's defaults and the
// host's entries, which win.
func shellCommand(m *StartMsg, shell string, acct account) *exec.Cmd {
	base := filepath.Base(shell)
	args := []string{"-" + base}
	if m.Command != "" {
		args = []string{base, "-c", m.Command}
	}
	env := []string{
		"HOME=" + acct.home,
		"USER=" + acct.name,
		"LOGNAME=" + acct.name,
		"SHELL=" + shell,
		"PATH=" + defaultPath,
	}
	if m.Term != "" {
		env = append(env, "TERM="+m.Term)
	}
	// exec.Cmd keeps the last value of a duplicated key.
	env = append(env, m.Env...)

	dir := acct.home
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		dir = "/"
	}
	return &exec.Cmd{Path: shell, Args: args, Env: env, Dir: dir}
}

// control runs fn on the terminal's fd without taking it out of the poller.
func (p *guestProcess) control(fn func(fd int) error) error {
	raw, err := p.terminal.SyscallConn()
	if err != nil {
		return err
	}
	var fnErr error
	if err := raw.Control(func(fd uintptr) { fnErr = fn(int(fd)) }); err != nil {
		return err
	}
	return fnErr
}

// streamSlot is the place in which a process waits for its one data
// stream.
type streamSlot struct {
	streams  chan *dataStream // receives the data stream once
	attached atomic.Bool      // set when a stream was offered, or the wait for one ended
}

// offerStream hands the process its data stream. It returns false when
// the process already has one or stopped waiting for it.
func (p *streamSlot) offerStream(ds *dataStream) bool {
	if !p.attached.CompareAndSwap(false, true) {
		return false
	}
	p.streams <- ds
	return true
}

// awaitStream waits for the data stream until timeout or done. It returns
// nil when none came.
func (p *streamSlot) awaitStream(timeout time.Duration, done <-chan struct{}) *dataStream {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case ds := <-p.streams:
		return ds
	case <-timer.C:
	case <-done:
	}
	if p.attached.CompareAndSwap(false, true) {
		return nil
	}
	// An offer won the race and is being sent.
	return <-p.streams
}

// waitExit reaps the process and records its exit status.
func (p *guestProcess) waitExit(logger *slog.Logger) {
	err := p.cmd.Wait()
	status := ExitStatus{Code: statusWaitFailed}
	var ws syscall.WaitStatus
	ok := false
	if p.cmd.ProcessState != nil {
		ws, ok = p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	}
	if ok {
		switch {
		case ws.Signaled():
			number := int(ws.Signal())
			status = ExitStatus{Code: 128 + number, Signal: signalName(number)}
		case ws.Exited():
			status = ExitStatus{Code: ws.ExitStatus()}
		}
	} else {
		logger.Error("wait for process", "id", p.id, "pid", p.pid, "err", err)
	}
	p.status = status
	p.exitedAt = time.Now()
	p.hasExited.Store(true)
	close(p.exited)
	// Wake a blocked read so that the drain can time out.
	_ = p.terminal.SetReadDeadline(time.Now().Add(drainIdle))
}

func (p *guestProcess) exitStatus() ExitStatus {
	<-p.exited
	return p.status
}

// copyOutput copies PTY output to the host until no process holds the
// terminal (EIO), or the stream or terminal fails, or the process exited
// and then drainIdle passed without output, or the drain reached
// drainMaxWait or drainMaxBytes.
func (p *guestProcess) copyOutput(w io.Writer) {
	buf := make([]byte, 32<<10)
	lastOutput := time.Now()
	// drainWaited and drained count, from the exit on, the time spent
	// waiting for the terminal and the bytes read from it.
	var drainWaited time.Duration
	drained := 0
	for {
		readStart := time.Now()
		n, err := p.terminal.Read(buf)
		if p.hasExited.Load() {
			// Loading hasExited makes exitedAt safe to read.
			drainWaited += time.Since(later(readStart, p.exitedAt))
			drained += n
		}
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return
			}
			lastOutput = time.Now()
		}
		if drainWaited >= drainMaxWait || drained >= drainMaxBytes {
			return
		}
		switch {
		case err == nil:
			if p.hasExited.Load() {
				_ = p.terminal.SetReadDeadline(time.Now().Add(drainIdle))
			}
		case errors.Is(err, os.ErrDeadlineExceeded):
			// Deadlines are only set after exit. A write to a slow host
			// can outlast one, so idle time counts from the later of the
			// exit and the last output. Loading hasExited makes exitedAt
			// safe to read.
			if !p.hasExited.Load() {
				continue
			}
			if time.Since(later(lastOutput, p.exitedAt)) >= drainIdle {
				return
			}
			_ = p.terminal.SetReadDeadline(time.Now().Add(drainIdle))
		default:
			// EIO once every slave fd is closed, or the terminal was closed.
			return
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// copyInput copies the host's input to the PTY until the host ends it.
// After the terminal fails it keeps reading and drops the input, so that
// the host's writes do not block on a full stream window.
func (p *guestProcess) copyInput(r io.Reader) {
	buf := make([]byte, 32<<10)
	broken := false
	for {
		n, err := r.Read(buf)
		if n > 0 && !broken {
			if _, err := p.terminal.Write(buf[:n]); err != nil {
				broken = true
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *guestProcess) resize(rows, cols uint32) error {
	return p.control(func(fd int) error {
		ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
		if err != nil {
			return err
		}
		if rows != 0 {
			ws.Row = uint16(rows)
		}
		if cols != 0 {
			ws.Col = uint16(cols)
		}
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws)
	})
}

// signal sends the named signal to the terminal's foreground process
// group, or to the process's own group when the terminal has none.
func (p *guestProcess) signal(name string) error {
	number, ok := signalNumber(name)
	if !ok {
		return fmt.Errorf("unknown signal %s", quote(name, MaxSignalNameSize))
	}
	if p.hasExited.Load() {
		return errors.New("the process has exited")
	}
	sig := unix.Signal(number)
	group := 0
	_ = p.control(func(fd int) error {
		pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
		if err == nil {
			group = pgrp
		}
		return err
	})
	if group > 0 && unix.Kill(-group, sig) == nil {
		return nil
	}
	if err := unix.Kill(-p.pid, sig); err != nil {
		return fmt.Errorf("kill process group %d: %w", p.pid, err)
	}
	return nil
}

// hangUp sends SIGHUP and SIGCONT, as a terminal hangup does, to every
// process left in the process's session.
func (p *guestProcess) hangUp() {
	for _, pid := range sessionMembers(p.pid) {
		_ = unix.Kill(pid, unix.SIGHUP)
		_ = unix.Kill(pid, unix.SIGCONT)
	}
}

func (p *guestProcess) closeTerminal() {
	p.closeOnce.Do(func() { _ = p.terminal.Close() })
}

// stopAll ends the process when the connection is gone: a hangup first,
// then SIGKILL for the whole session if the process is still there after
// stopGrace.
func (p *guestProcess) stopAll(logger *slog.Logger) {
	p.hangUp()
	p.closeTerminal()
	if waitClosed(p.exited, stopGrace) {
		return
	}
	logger.Warn("process ignored the hangup; killing its session", "id", p.id, "pid", p.pid)
	for _, pid := range sessionMembers(p.pid) {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	if !waitClosed(p.exited, stopGrace) {
		logger.Error("process did not exit after SIGKILL", "id", p.id, "pid", p.pid)
	}
}

func waitClosed(ch <-chan struct{}, timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-ch:
		return true
	case <-timer.C:
		return false
	}
}

// sessionMembers lists the live processes whose session id is sid, from
// /proc. Zombies are left out, because they are already dead and only wait
// for their parent. A process id cannot be reused while it still names a
// session, so the list cannot hold strangers.
func sessionMembers(sid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := strconv.Itoa(sid)
	var pids []int
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + entry.Name() + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) state ppid pgrp session ...", where comm may hold
		// spaces and parentheses, so fields count from the last ')'.
		end := bytes.LastIndexByte(stat, ')')
		if end < 0 {
			continue
		}
		fields := strings.Fields(string(stat[end+1:]))
		if len(fields) >= 4 && fields[3] == want && fields[0] != "Z" && fields[0] != "X" {
			pids = append(pids, pid)
		}
	}
	return pids
}
