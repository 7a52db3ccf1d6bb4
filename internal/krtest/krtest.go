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
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"

	"github.com/throwawaysh/throwawaysh/internal/sandbox"
	"github.com/throwawaysh/throwawaysh/krun"
)

// initMarker is the environment variable that makes a test binary act as
// the stand-in guest init.
const initMarker = "THROWAWAYSH_KRTEST_INIT"

// guestDevices are the device nodes of the stand-in guest's /dev, which
// libkrun's guest kernel would provide.
var guestDevices = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}

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

	specReader, specWriter, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("krtest: create spec pipe: %w", err)
	}
	// A jailed process started by root runs as an unprivileged user, which
	// cannot reach the test binary through the build's private
	// directories. Its own /proc/self/exe reaches it without a path walk.
	cmd := exec.Command("/proc/self/exe")
	// The test binary's path as argv[0] lets tests find the VM processes.
	if exe, err := os.Executable(); err == nil {
		cmd.Args[0] = exe
	}
	cmd.Env = []string{initMarker + "=1"}
	cmd.ExtraFiles = []*os.File{specReader}
	jail := sandbox.Config{
		Root:    spec.Root,
		DiskMiB: cmp.Or(spec.DiskMiB, krun.DefaultDiskMiB),
		Devices: guestDevices,
		Network: spec.Network,
	}
	for _, port := range spec.VsockPorts {
		jail.Sockets = append(jail.Sockets, port.Path)
	}
	launch, err := sandbox.Prepare(cmd, jail)
	if err != nil {
		_ = specReader.Close()
		_ = specWriter.Close()
		return nil, err
	}

	started, err := krun.StartProcess(cmd)
	_ = specReader.Close()
	if err != nil {
		launch.Close()
		_ = specWriter.Close()
		return nil, err
	}
	if err := launch.Started(started.PID()); err != nil {
		_ = specWriter.Close()
		_ = started.Kill()
		_, _ = started.Wait()
		return nil, err
	}
	vm := started
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
