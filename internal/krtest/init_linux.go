package krtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/throwawaysh/throwawaysh/internal/sandbox"
	"github.com/throwawaysh/throwawaysh/krun"
)

func runInit() int {
	specFile := os.NewFile(3, "spec")
	data, err := io.ReadAll(io.LimitReader(specFile, 64<<20))
	_ = specFile.Close()
	if err != nil {
		return initFailed("read spec: %v", err)
	}
	var spec krun.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return initFailed("decode spec: %v", err)
	}

	// libkrun's VMM process ends at once on SIGTERM and SIGHUP and passes
	// SIGINT to the workload. As PID 1 of its namespace, this process
	// receives only the signals it handles, so it must handle them all.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)

	// Capabilities are per thread, and the workload must be forked from
	// the thread that dropped them.
	runtime.LockOSThread()
	jail, err := enterJail(spec)
	if err != nil {
		return initFailed("%v", err)
	}
	if err := sandbox.DropCapabilities(unix.CAP_SYS_CHROOT); err != nil {
		return initFailed("%v", err)
	}

	cmd := exec.Command(spec.Exec, guestArgs(spec)...)
	cmd.Path = spec.Exec
	cmd.Args[0] = spec.Exec
	cmd.Env = slices.Clone(spec.Env)
	cmd.Dir = "/"
	if spec.Workdir != "" {
		if info, err := os.Stat(filepath.Join(jail.Root, spec.Workdir)); err == nil && info.IsDir() {
			cmd.Dir = spec.Workdir
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: jail.Root}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "init: %s: not found\n", spec.Exec)
			return initNotFound
		}
		fmt.Fprintf(os.Stderr, "init: %s: not executable\n", spec.Exec)
		return initNotExecutable
	}

	exited := make(chan int, 1)
	go func() {
		_ = cmd.Wait()
		exited <- workloadStatus(cmd.ProcessState)
	}()
	for {
		select {
		case status := <-exited:
			return status
		case sig := <-signals:
			if sig == syscall.SIGINT {
				_ = cmd.Process.Signal(sig)
				continue
			}
			return 128 + int(sig.(syscall.Signal))
		}
	}
}

// enterJail confines the init as the libkrun launcher confines a VM
// process, then emulates inside the guest root what libkrun adds to it:
// the spec's files, /dev with a PTY multiplexer, /proc, and the vsock
// ports' sockets, which the agent reaches at vsockPath.
func enterJail(spec krun.Spec) (*sandbox.Jail, error) {
	jail, err := sandbox.Enter()
	if err != nil {
		return nil, err
	}

	root := jail.Root
	for name, content := range spec.Files {
		if err := os.WriteFile(filepath.Join(root, name), content, 0o444); err != nil {
			return nil, fmt.Errorf("add file %s: %w", name, err)
		}
	}
	dev := filepath.Join(root, "dev")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return nil, err
	}
	if err := unix.Mount("dev", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=1m,mode=0755"); err != nil {
		return nil, fmt.Errorf("mount guest /dev: %w", err)
	}
	for _, node := range jail.Devices {
		target := filepath.Join(dev, filepath.Base(node))
		if err := os.WriteFile(target, nil, 0o600); err != nil {
			return nil, err
		}
		if err := unix.Mount(node, target, "", unix.MS_BIND, ""); err != nil {
			return nil, fmt.Errorf("bind guest %s: %w", node, err)
		}
	}
	pts := filepath.Join(dev, "pts")
	if err := os.Mkdir(pts, 0o755); err != nil {
		return nil, err
	}
	if err := unix.Mount("devpts", pts, "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return nil, fmt.Errorf("mount guest /dev/pts: %w", err)
	}
	if err := os.Symlink("pts/ptmx", filepath.Join(dev, "ptmx")); err != nil {
		return nil, err
	}
	proc := filepath.Join(root, "proc")
	if err := os.MkdirAll(proc, 0o555); err != nil {
		return nil, err
	}
	if err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("mount guest /proc: %w", err)
	}
	for i, port := range spec.VsockPorts {
		target := filepath.Join(root, vsockPath(port.Port))
		if err := os.WriteFile(target, nil, 0o600); err != nil {
			return nil, err
		}
		if err := unix.Mount(jail.Sockets[i], target, "", unix.MS_BIND, ""); err != nil {
			return nil, fmt.Errorf("bind vsock port %d socket: %w", port.Port, err)
		}
	}
	return jail, nil
}

// vsockPath is the guest path at which the stand-in guest reaches the host
// socket of vsock port.
func vsockPath(port uint32) string {
	return fmt.Sprintf("/.krtest-vsock-%d", port)
}

// guestArgs returns the workload's arguments with the guest agent pointed
// at the socket of its vsock port, which the stand-in guest reaches as a
// unix socket instead of over vsock.
func guestArgs(spec krun.Spec) []string {
	args := slices.Clone(spec.Args)
	if i := slices.Index(args, "--vsock-port"); i >= 0 && i+1 < len(args) {
		for _, port := range spec.VsockPorts {
			if fmt.Sprint(port.Port) == args[i+1] {
				// Flags end at "--", after which the agent's --exec
				// command follows.
				end := slices.Index(args, "--")
				if end < 0 {
					end = len(args)
				}
				args = slices.Insert(args, end, "--connect", "unix:"+vsockPath(port.Port))
			}
		}
	}
	return args
}

func workloadStatus(state *os.ProcessState) int {
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return state.ExitCode()
}
