// Package krtest replaces libkrun in tests. Its Launcher runs the
// guest workload of a krun.Spec as an ordinary host process, over the same
// contract that libkrun gives the host: one child process per VM whose
// stdin, stdout and stderr are the workload's, whose exit status is the
// workload's (128+N for signal N), that ends everything it started when it
// ends, and whose vsock ports are unix sockets on the host.
//
// The child is the test binary itself, started again as a stand-in for
// the VM process and libkrun's guest init; a test binary that uses
// Launcher must call RunInitIfRequested at the top of TestMain. The child
// enters the same jail as a libkrun VM process (package sandbox), with a
// copy-on-write guest root and the same dropped capabilities, and runs the
// workload chrooted into the guest root, where it adds what libkrun's
// guest would have: /dev, /proc and the spec's files. Its PID namespace
// makes the kernel kill every process of the "guest" when it ends.
//
// Only tests import this package, so the shipped binaries never contain it.
package krtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync"

	"github.com/throwawaysh/throwawaysh/internal/sandbox"
	"github.com/throwawaysh/throwawaysh/krun"
)

// initMarker is the environment variable that makes a test binary act as
// the stand-in guest init. mountEnv names the empty directory on which the
// init mounts its jail.
const (
	initMarker = "THROWAWAYSH_KRTEST_INIT"
	mountEnv   = "THROWAWAYSH_KRTEST_MOUNT"
)

// Launcher is a krun.Launcher that runs workloads as host processes. The
// zero value is ready to use.
type Launcher struct {
	// Started, when set, is called with every spec that Start accepts, so a
	// test can check what the middlewares asked for.
	Started func(krun.Spec)
}

var _ krun.Launcher = (*Launcher)(nil)

// Start validates spec as the libkrun launcher does and starts the stand-in
// init with it.
func (l *Launcher) Start(ctx context.Context, spec krun.Spec) (krun.VM, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	encoded, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("krtest: encode spec: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("krtest: find test binary: %w", err)
	}

	// This process removes the mountpoint when the VM has ended: the init
	// cannot, because a killed VM gets no chance to.
	mountpoint, removeMountpoint, err := sandbox.MakeMountpoint(spec.RunDir)
	if err != nil {
		return nil, err
	}
	specReader, specWriter, err := os.Pipe()
	if err != nil {
		_ = removeMountpoint()
		return nil, fmt.Errorf("krtest: create spec pipe: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = []string{initMarker + "=1", mountEnv + "=" + mountpoint}
	cmd.ExtraFiles = []*os.File{specReader}
	if err := sandbox.Prepare(cmd, spec.Network); err != nil {
		_ = specReader.Close()
		_ = specWriter.Close()
		_ = removeMountpoint()
		return nil, err
	}

	started, err := krun.StartProcess(cmd)
	_ = specReader.Close()
	if err != nil {
		_ = specWriter.Close()
		_ = removeMountpoint()
		return nil, err
	}
	vm := &cleanupVM{VM: started, remove: removeMountpoint}
	_, werr := specWriter.Write(encoded)
	cerr := specWriter.Close()
	if werr != nil || cerr != nil {
		_ = vm.Kill()
		_, _ = vm.Wait()
		return nil, fmt.Errorf("krtest: send spec to init: %v %v", werr, cerr)
	}
	if l.Started != nil {
		l.Started(spec)
	}
	return vm, nil
}

// cleanupVM removes the VM's mountpoint once the VM has ended.
type cleanupVM struct {
	krun.VM
	remove func() error
	once   sync.Once
}

func (v *cleanupVM) Wait() (int, error) {
	status, err := v.VM.Wait()
	v.once.Do(func() { _ = v.remove() })
	return status, err
}
