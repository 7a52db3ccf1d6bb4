// Package krtest replaces libkrun in tests. Its Launcher runs the
// guest workload of a krun.Spec as an ordinary host process, over the same
// contract that libkrun gives the host: one child process per VM whose
// stdin, stdout and stderr are the workload's, whose exit status is the
// workload's (128+N for signal N), that ends everything it started when it
// ends, and whose vsock ports are unix sockets on the host.
//
// The child is the test binary itself, started again as a stand-in for
// libkrun's guest init; a test binary that uses Launcher must call
// RunInitIfRequested at the top of TestMain. The init runs in a PID
// namespace of its own, like a guest's PID 1, so the kernel kills every
// process of the "guest" when it ends.
//
// Only tests import this package, so the shipped binaries never contain it.
package krtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/throwawaysh/throwawaysh/krun"
)

// initMarker is the environment variable that makes a test binary act as
// the stand-in guest init.
const initMarker = "THROWAWAYSH_KRTEST_INIT"

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

	specReader, specWriter, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("krtest: create spec pipe: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = []string{initMarker + "=1"}
	cmd.ExtraFiles = []*os.File{specReader}
	cmd.SysProcAttr = namespaceAttributes()

	vm, err := krun.StartProcess(cmd)
	_ = specReader.Close()
	if err != nil {
		_ = specWriter.Close()
		return nil, err
	}
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

// namespaceAttributes puts the init in a new PID namespace; without root,
// in a new user namespace too, which grants the right to make one.
func namespaceAttributes() *syscall.SysProcAttr {
	attrs := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if os.Geteuid() != 0 {
		attrs.Cloneflags |= syscall.CLONE_NEWUSER
		attrs.UidMappings = []syscall.SysProcIDMap{{ContainerID: os.Geteuid(), HostID: os.Geteuid(), Size: 1}}
		attrs.GidMappings = []syscall.SysProcIDMap{{ContainerID: os.Getegid(), HostID: os.Getegid(), Size: 1}}
	}
	return attrs
}
