// Package krun starts libkrun microVMs, one host process per VM.
//
// libkrun's krun_start_enter never returns once the guest runs: when the
// guest workload ends, libkrun calls _exit in the calling process with the
// workload's status. So each VM gets a child process of its own, and the
// parent talks to it through the child's stdin, stdout and stderr (which
// libkrun wires to the guest workload's console ports) and through unix
// sockets that libkrun bridges to guest vsock ports.
//
// libkrun is loaded with dlopen at run time, so this package builds and its
// tests run on hosts without libkrun.
package krun

import (
	"context"
	"io"
)

// Launcher starts VMs. Implementations must make Start safe for concurrent
// use, because every SSH session starts its VM from its own goroutine.
type Launcher interface {
	// Start boots a VM for spec and returns once its host process runs. The
	// VM is not ready yet: the guest workload starts some time later. ctx
	// bounds only the start itself; use VM.Kill to end the VM.
	Start(ctx context.Context, spec Spec) (VM, error)
}

// VM is a running microVM, seen from the host.
type VM interface {
	// Stdin is connected to the guest workload's standard input. Closing it
	// gives the workload end of file.
	Stdin() io.WriteCloser

	// Stdout and Stderr carry the guest workload's standard output and
	// standard error, separate and byte for byte. They reach end of file
	// once the VM has ended.
	Stdout() io.Reader
	Stderr() io.Reader

	// Wait waits for the VM to end and returns the guest workload's exit
	// status: its exit code, or 128+N when signal N killed it. Read Stdout
	// and Stderr to end of file before calling Wait, or output may be lost.
	Wait() (int, error)

	// Kill ends the VM at once. It is safe to call more than once and after
	// the VM has ended.
	Kill() error

	// PID returns the host process id of the VM, for logs.
	PID() int
}

// Spec describes one VM: its root, the workload it runs and what it may
// reach.
type Spec struct {
	// ID names the VM in logs; the session id is a good choice.
	ID string

	// Root is the host directory of the guest's root filesystem. On Linux
	// the guest sees it through a copy-on-write overlay that lives as long
	// as the VM, so the directory itself never changes and VMs can share
	// it. A launcher running as root needs it on a file system with
	// ID-mapped mounts (ext4, xfs, btrfs, tmpfs). Elsewhere the guest
	// writes to it directly.
	Root string

	// DiskMiB caps, in MiB, what the guest writes to its root: a write
	// beyond it fails in the guest with ENOSPC. The writes are kept in
	// host memory (tmpfs). 0 means DefaultDiskMiB.
	DiskMiB int

	// Exec is the guest path of the workload, for example "/bin/sh".
	Exec string

	// Args are the workload's arguments, without argv[0]. libkrun passes
	// them on the guest kernel command line, wrapped in double quotes and
	// without escaping, so they must not contain '"' and must stay short.
	// Put user-supplied text in Files instead.
	Args []string

	// Env is the workload's whole environment as "KEY=value" strings. The
	// host environment is never passed on. The same limits as Args apply.
	Env []string

	// Workdir is the workload's working directory in the guest. Empty
	// means "/".
	Workdir string

	// Files are read-only files added to the guest root by name (relative
	// to "/", without slashes), for example the user's command text. They
	// do not appear in directory listings and the guest cannot change
	// them.
	Files map[string][]byte

	// CPUs is the number of virtual CPUs; 0 means 1.
	CPUs int

	// MemoryMiB is the guest memory in MiB; 0 means 256.
	MemoryMiB int

	// VsockPorts connect guest vsock ports to host unix sockets. A guest
	// connection to CID 2 on Port reaches the unix socket at Path, which
	// the host must already be listening on.
	VsockPorts []VsockPort

	// Network turns on libkrun's transparent socket impersonation (TSI),
	// which opens guest sockets in the host process and so gives the guest
	// the host's network reach, host loopback included. Off by default.
	Network bool
}

// VsockPort maps a guest vsock port to a host unix socket.
type VsockPort struct {
	// Port is the vsock port that the guest connects to on CID 2, the host.
	Port uint32
	// Path is the host unix socket. Keep it under about 100 bytes: longer
	// paths do not fit in a sockaddr_un.
	Path string
}

// Defaults for Spec fields left at zero.
const (
	DefaultCPUs      = 1
	DefaultMemoryMiB = 256
	DefaultDiskMiB   = 256
)
