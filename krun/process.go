package krun

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
)

// processVM is a VM backed by one host child process whose stdin, stdout and
// stderr are the guest workload's console.
type processVM struct {
	cmd    *exec.Cmd
	stdin  *os.File
	stdout *os.File
	stderr *os.File

	waitOnce sync.Once
	reaped   atomic.Bool
	status   int
	waitErr  error
}

// StartProcess starts cmd as the host process of a VM and returns the VM.
// cmd must not have Stdin, Stdout or Stderr set: StartProcess connects them
// to pipes. The process gets its own process group, so Kill also ends
// anything it started, and on Linux it is killed if the caller's process
// dies first.
//
// Both the libkrun launcher and test launchers use it, so the host side of a
// session gets the same process, pipes and exit statuses either way.
func StartProcess(cmd *exec.Cmd) (VM, error) {
	if cmd.Stdin != nil || cmd.Stdout != nil || cmd.Stderr != nil {
		return nil, errors.New("krun: StartProcess needs a command without stdio set")
	}

	var parentEnds, childEnds []*os.File
	closeAll := func(files []*os.File) {
		for _, f := range files {
			_ = f.Close()
		}
	}
	for i := 0; i < 3; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(parentEnds)
			closeAll(childEnds)
			return nil, fmt.Errorf("krun: create stdio pipe: %w", err)
		}
		if i == 0 {
			parentEnds, childEnds = append(parentEnds, w), append(childEnds, r)
		} else {
			parentEnds, childEnds = append(parentEnds, r), append(childEnds, w)
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = childEnds[0], childEnds[1], childEnds[2]
	setProcessAttributes(cmd)

	err := cmd.Start()
	// The child has its own copies now; keeping ours open would hide end of
	// file from the reader of stdout and stderr.
	closeAll(childEnds)
	if err != nil {
		closeAll(parentEnds)
		return nil, fmt.Errorf("krun: start VM process %q: %w", cmd.Path, err)
	}
	return &processVM{cmd: cmd, stdin: parentEnds[0], stdout: parentEnds[1], stderr: parentEnds[2]}, nil
}

func (v *processVM) Stdin() io.WriteCloser { return v.stdin }
func (v *processVM) Stdout() io.Reader     { return v.stdout }
func (v *processVM) Stderr() io.Reader     { return v.stderr }
func (v *processVM) PID() int              { return v.cmd.Process.Pid }

func (v *processVM) Wait() (int, error) {
	v.waitOnce.Do(func() {
		err := v.cmd.Wait()
		v.reaped.Store(true)
		v.status, v.waitErr = exitStatus(v.cmd.ProcessState, err)
		// Anything still blocked on the pipes must not outlive the VM.
		_ = v.stdin.Close()
		_ = v.stdout.Close()
		_ = v.stderr.Close()
	})
	return v.status, v.waitErr
}

func (v *processVM) Kill() error {
	// Once reaped, the process id is free and may name an unrelated
	// process group; the VM's own processes ended with it.
	if v.reaped.Load() {
		return nil
	}
	pid := v.cmd.Process.Pid
	// The negative pid names the process group that setProcessAttributes
	// created; ESRCH means it has ended already.
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("krun: kill VM process %d: %w", pid, err)
	}
	return nil
}

// exitStatus turns the end of a VM process into the workload's exit status,
// in the form libkrun's VMM exits with: the exit code, or 128+N for death by
// signal N.
func exitStatus(state *os.ProcessState, waitErr error) (int, error) {
	if state == nil {
		return -1, fmt.Errorf("krun: wait for VM process: %w", waitErr)
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return state.ExitCode(), nil
}
