package krun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"
)

// ErrBootFailed means that the VM process reported a failure before the VM
// started, for example because libkrun could not be loaded or refused the
// configuration. The error text carries the VM process's message.
var ErrBootFailed = errors.New("vm boot failed")

const (
	// defaultStartTimeout bounds how long Start waits for the VM process to
	// read its spec when ctx has no deadline. A VM process reads it right
	// after the Go runtime starts. A whole Start and Wait of a failing VM
	// process took about 10 ms in this package's tests on a 2-core x86-64
	// machine, so 10 s leaves a wide margin for a loaded host.
	defaultStartTimeout = 10 * time.Second

	// logDrainTimeout bounds how long Wait waits for the rest of the VM
	// process's log after the process ended. Only a process that inherited
	// fd 4 could keep the pipe open longer.
	logDrainTimeout = time.Second
)

// VMProcessName is the command line of every VM process that KrunLauncher
// starts, as ps shows it.
const VMProcessName = "throwawaysh-vm"

// KrunLauncher is the Launcher that boots real libkrun VMs. Each VM runs in
// a new process of the current executable, which must call
// RunChildIfRequested first thing in main.
type KrunLauncher struct {
	lib          *Lib
	logger       *slog.Logger
	executable   string
	startTimeout time.Duration
}

var _ Launcher = (*KrunLauncher)(nil)

// LauncherOption configures a KrunLauncher.
type LauncherOption func(*KrunLauncher)

// WithExecutable sets the binary started as the VM process. It must call
// RunChildIfRequested first thing. The default is the running executable.
// A launcher running as root starts the VM process as an unprivileged
// user, which must be able to reach and run the binary, and to read the
// libkrun library.
func WithExecutable(path string) LauncherOption {
	return func(l *KrunLauncher) { l.executable = path }
}

// WithStartTimeout bounds how long Start waits for the VM process to take
// its spec when Start's ctx has no deadline. The default is 10 seconds.
func WithStartTimeout(d time.Duration) LauncherOption {
	return func(l *KrunLauncher) { l.startTimeout = d }
}

// NewLauncher returns a launcher whose VM processes load the same libkrun
// file as lib. Pass the result of Load, so that a missing libkrun shows at
// service start. lib may be nil: each VM process then runs Load itself, and
// a missing libkrun makes every VM's Wait return ErrBootFailed. A nil logger
// discards the VM processes' log lines.
//
// On Linux the default executable is /proc/self/exe. So VM processes run the
// same binary as the service even after an upgrade replaced the file on disk,
// and the spec format only has to match within one build.
func NewLauncher(lib *Lib, logger *slog.Logger, opts ...LauncherOption) (*KrunLauncher, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &KrunLauncher{lib: lib, logger: logger, startTimeout: defaultStartTimeout}
	for _, opt := range opts {
		opt(l)
	}
	if l.executable == "" {
		exe, err := currentExecutable()
		if err != nil {
			return nil, fmt.Errorf("krun: find own executable for VM processes: %w", err)
		}
		l.executable = exe
	}
	if l.startTimeout <= 0 {
		return nil, fmt.Errorf("krun: start timeout %v: must be positive", l.startTimeout)
	}
	return l, nil
}

func currentExecutable() (string, error) {
	if runtime.GOOS == "linux" {
		if _, err := os.Stat("/proc/self/exe"); err == nil {
			return "/proc/self/exe", nil
		}
	}
	return os.Executable()
}

// Start validates spec, starts a VM process and hands it the spec. It returns
// once the VM process has read the spec; the guest boots after that. Errors
// from booting (libkrun missing, configuration refused) come from the VM's
// Wait as ErrBootFailed. ctx bounds only the start: cancelling it later does
// not end the VM.
func (l *KrunLauncher) Start(ctx context.Context, spec Spec) (VM, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("krun: start vm %q: %w", spec.ID, err)
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("krun: encode spec of vm %q: %w", spec.ID, err)
	}
	if len(payload) > maxSpecBytes {
		return nil, fmt.Errorf("krun: spec of vm %q encodes to %d bytes, over the %d-byte limit; make Spec.Files smaller",
			spec.ID, len(payload), maxSpecBytes)
	}

	specIn, specOut, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("krun: create spec pipe: %w", err)
	}
	logIn, logOut, err := os.Pipe()
	if err != nil {
		_ = specIn.Close()
		_ = specOut.Close()
		return nil, fmt.Errorf("krun: create log pipe: %w", err)
	}

	closePipes := func() {
		_ = specIn.Close()
		_ = specOut.Close()
		_ = logIn.Close()
		_ = logOut.Close()
	}
	cmd := exec.Command(l.executable)
	cmd.Args = []string{VMProcessName}
	cmd.Env = l.childEnvironment()
	cmd.Dir = "/"
	cmd.ExtraFiles = []*os.File{specIn, logOut} // fds 3 and 4
	jail, err := prepareJail(cmd, spec)
	if err != nil {
		closePipes()
		return nil, fmt.Errorf("krun: vm %q: %w", spec.ID, err)
	}
	proc, err := StartProcess(cmd)
	// The VM process has its own copies of these ends now. Keeping ours
	// open would hide end of file from both pipes' readers.
	_ = specIn.Close()
	_ = logOut.Close()
	if err != nil {
		jail.Close()
		_ = specOut.Close()
		_ = logIn.Close()
		return nil, err
	}
	if err := jail.Started(proc.PID()); err != nil {
		_ = specOut.Close()
		_ = logIn.Close()
		_ = proc.Kill()
		_, _ = proc.Wait()
		return nil, fmt.Errorf("krun: vm %q: %w", spec.ID, err)
	}

	vm := &krunVM{VM: proc, id: spec.ID, log: newVMLogReader(logIn, l.logger.With("vm", spec.ID))}
	go vm.log.run()

	if err := l.handOver(ctx, vm, specOut, payload); err != nil {
		_ = vm.Kill()
		if _, waitErr := vm.Wait(); errors.Is(waitErr, ErrBootFailed) {
			err = waitErr
		}
		return nil, err
	}
	return vm, nil
}

// handOver writes the spec to the VM process and waits until the process
// acknowledges it, bounded by ctx or, without a deadline, by startTimeout.
func (l *KrunLauncher) handOver(ctx context.Context, vm *krunVM, specOut *os.File, payload []byte) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.startTimeout)
		defer cancel()
	}
	deadline, _ := ctx.Deadline()
	// A deadline in the past makes a blocked Write return at once.
	stop := context.AfterFunc(ctx, func() { _ = specOut.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()

	_ = specOut.SetWriteDeadline(deadline)
	_, err := specOut.Write(payload)
	closeErr := specOut.Close()
	if err == nil {
		err = closeErr
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("krun: send spec to vm process %d: %w", vm.PID(), err)
	}

	select {
	case <-vm.log.specReceived:
	case <-vm.log.done:
	case <-ctx.Done():
	}
	// The acknowledgement wins over a process that ended right after it,
	// whose boot failure Wait reports.
	select {
	case <-vm.log.specReceived:
		return nil
	default:
	}
	if ctx.Err() != nil {
		return fmt.Errorf("krun: vm process %d did not read its spec: %w; "+
			"check that main calls krun.RunChildIfRequested first", vm.PID(), ctx.Err())
	}
	return fmt.Errorf("krun: vm process %d ended before reading its spec", vm.PID())
}

// childEnvironment returns the whole environment of a VM process: the marker,
// and the variables that decide which libkrun it loads. Nothing else of the
// service's environment is passed on.
func (l *KrunLauncher) childEnvironment() []string {
	env := []string{childEnv + "=1"}
	for _, name := range []string{"LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", LibraryEnv} {
		if name == LibraryEnv && l.lib != nil {
			continue
		}
		if value, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+value)
		}
	}
	if l.lib != nil {
		env = append(env, LibraryEnv+"="+l.lib.Path())
	}
	return env
}

// jailLaunch is the launcher's side of a VM process's jail: Started once
// the process runs, or Close if it failed to start.
type jailLaunch interface {
	Started(pid int) error
	Close()
}

// krunVM is a VM whose process reports boot failures on its log pipe.
type krunVM struct {
	VM
	id  string
	log *vmLogReader

	waitOnce sync.Once
	status   int
	err      error
}

// Wait waits for the VM process to end and for its log to be read, then
// returns -1 and an error wrapping ErrBootFailed if the process reported a
// fatal error, or else the workload's exit status.
//
// NOTE: when the VMM fails after krun_start_enter took over (for example
// when KVM rejects the guest), libkrun exits with status 1 and no fatal line
// is written. Wait then returns 1 like a workload exit, and the "vm log"
// lines from libkrun are the only trace.
func (v *krunVM) Wait() (int, error) {
	v.waitOnce.Do(func() {
		v.status, v.err = v.VM.Wait()
		v.log.finish(logDrainTimeout)
		if fatal := v.log.fatal; fatal != "" {
			fatal = strings.TrimPrefix(fatal, "krun: ")
			v.status, v.err = -1, fmt.Errorf("krun: vm %q: %w: %s", v.id, ErrBootFailed, fatal)
		}
	})
	return v.status, v.err
}

// maxLoggedLines bounds how many log lines one VM process gets into the
// service log, because libkrun logs guest-triggered errors and the guest is
// not trusted. The rest are counted.
const maxLoggedLines = 100

// maxLogLineBytes bounds one line read from a VM process's log pipe; the
// rest of a longer line is dropped.
const maxLogLineBytes = 8 << 10

// vmLogReader reads a VM process's log pipe: it logs libkrun's lines, and
// records the spec acknowledgement and any fatal line.
type vmLogReader struct {
	pipe   *os.File
	logger *slog.Logger

	specReceived chan struct{}
	done         chan struct{}
	// fatal is set before done is closed.
	fatal string
}

func newVMLogReader(pipe *os.File, logger *slog.Logger) *vmLogReader {
	return &vmLogReader{
		pipe:         pipe,
		logger:       logger,
		specReceived: make(chan struct{}),
		done:         make(chan struct{}),
	}
}

// run reads until end of file or until finish closes the pipe.
func (r *vmLogReader) run() {
	defer close(r.done)
	defer r.pipe.Close()

	logged, dropped := 0, 0
	acknowledged := false
	readLines(r.pipe, maxLogLineBytes, func(line string) {
		var msg childMessage
		if len(line) > 0 && line[0] == '{' && json.Unmarshal([]byte(line), &msg) == nil {
			if msg.SpecReceived && !acknowledged {
				acknowledged = true
				close(r.specReceived)
			}
			if msg.Fatal != "" && r.fatal == "" {
				r.fatal = msg.Fatal
			}
			if msg.Fatal == "" {
				return
			}
		}
		if logged >= maxLoggedLines {
			dropped++
			return
		}
		logged++
		r.logger.Warn("vm log", "line", line)
	})
	if dropped > 0 {
		r.logger.Warn("vm log lines dropped", "count", dropped, "limit", maxLoggedLines)
	}
}

// finish waits for run to reach end of file, or closes the pipe after
// timeout to end it.
func (r *vmLogReader) finish(timeout time.Duration) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-r.done:
	case <-timer.C:
		_ = r.pipe.Close()
		<-r.done
	}
}

// readLines calls fn for each line of r without its line ending. A line
// longer than maxLine is cut to maxLine bytes. It returns at end of file or
// on a read error.
func readLines(r io.Reader, maxLine int, fn func(line string)) {
	buf := make([]byte, 0, maxLine)
	chunk := make([]byte, 4096)
	skipping := false // inside a line that was already cut
	for {
		n, err := r.Read(chunk)
		for _, b := range chunk[:n] {
			switch {
			case b == '\n':
				if !skipping {
					fn(trimCR(buf))
				}
				buf, skipping = buf[:0], false
			case skipping:
			case len(buf) == maxLine:
				fn(trimCR(buf))
				buf, skipping = buf[:0], true
			default:
				buf = append(buf, b)
			}
		}
		if err != nil {
			if len(buf) > 0 && !skipping {
				fn(trimCR(buf))
			}
			return
		}
	}
}

func trimCR(line []byte) string {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return string(line)
}
