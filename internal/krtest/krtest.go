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
	"path/filepath"
	"sync"
	"syscall"

	"github.com/throwawaysh/throwawaysh/krun"
)

// initMarker is the environment variable that makes a test binary act as
// the stand-in guest init. filesEnv names the directory that holds the
// spec's files for it.
const (
	initMarker = "THROWAWAYSH_KRTEST_INIT"
	filesEnv   = "THROWAWAYSH_KRTEST_FILES"
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

	// The files live in a directory this process removes when the VM has
	// ended: the init cannot, because a killed VM gets no chance to.
	filesDir, err := writeFiles(spec.Files)
	if err != nil {
		return nil, err
	}
	specReader, specWriter, err := os.Pipe()
	if err != nil {
		_ = os.RemoveAll(filesDir)
		return nil, fmt.Errorf("krtest: create spec pipe: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = []string{initMarker + "=1", filesEnv + "=" + filesDir}
	cmd.ExtraFiles = []*os.File{specReader}
	cmd.SysProcAttr = namespaceAttributes()

	started, err := krun.StartProcess(cmd)
	_ = specReader.Close()
	if err != nil {
		_ = specWriter.Close()
		_ = os.RemoveAll(filesDir)
		return nil, err
	}
	vm := &cleanupVM{VM: started, dir: filesDir}
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

// writeFiles writes the spec's files into a new directory and returns it.
func writeFiles(files map[string][]byte) (string, error) {
	dir, err := os.MkdirTemp("", "krtest-files-")
	if err != nil {
		return "", fmt.Errorf("krtest: create files directory: %w", err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o444); err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("krtest: write %s: %w", name, err)
		}
	}
	return dir, nil
}

// cleanupVM removes the VM's files directory once the VM has ended.
type cleanupVM struct {
	krun.VM
	dir  string
	once sync.Once
}

func (v *cleanupVM) Wait() (int, error) {
	status, err := v.VM.Wait()
	v.once.Do(func() { _ = os.RemoveAll(v.dir) })
	return status, err
}
