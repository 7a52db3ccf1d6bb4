// Package sandbox confines the host process of one VM, the process that
// runs libkrun's VMM or, in tests, the stand-in guest init.
//
// libkrun shares the guest root with the guest over virtio-fs and does not
// confine that share. The "Security model" section of its README states
// that the guest can reach other host directories through it and can fill
// the host's disk. So the VM process enters a jail before libkrun starts.
// Enter gives the process a root of its own: a tmpfs that holds a
// copy-on-write overlay of the guest root, the device nodes and unix
// sockets the VMM needs, and a /proc of its own PID namespace. Nothing else
// of the host is in it. DropCapabilities then removes the capabilities
// that the VMM does not need.
//
// The launcher sets the process up with Prepare, which puts it in new user,
// mount, PID and IPC namespaces (and a network namespace unless the guest
// gets network access), so that its mounts are private to it and vanish
// when it ends, and so that it runs as an unprivileged host user.
package sandbox

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Paths inside the jail. The guest root is RootPath; Enter returns the
// paths of the sockets and devices.
const (
	RootPath   = "/root"
	socketDir  = "/sock"
	deviceDir  = "/dev"
	procDir    = "/proc"
	upperDir   = "/upper"
	workDir    = "/work"
	oldRootDir = "/.old"
)

// Limits on the size of the writable layer.
const (
	// MinDiskMiB is the smallest writable layer Enter accepts. Overlayfs
	// needs room for its work directory, and a guest shell writes a few
	// files when it starts.
	MinDiskMiB = 1
	// MaxDiskMiB bounds the writable layer: it lives in host memory.
	MaxDiskMiB = 1 << 20
	// inodesPerMiB sets the tmpfs inode limit from its size: one inode per
	// 4 KiB page, so that a guest cannot use up host memory with empty
	// files either.
	inodesPerMiB = 256
)

// Config describes the jail of one VM process, for Prepare.
type Config struct {
	// Root is the host directory of the guest root. The guest reaches it
	// only through an overlay and never writes to it.
	Root string
	// DiskMiB is the size of the tmpfs, in MiB, that holds everything the
	// guest writes. A write beyond it fails with ENOSPC in the guest.
	DiskMiB int
	// Sockets are host unix sockets that the VM process connects to, such
	// as the host ends of vsock ports.
	Sockets []string
	// Devices are host device nodes that the VM process opens, such as
	// /dev/kvm.
	Devices []string
	// Network keeps the VM process in the host's network namespace, for
	// libkrun's socket impersonation; otherwise it gets an empty one.
	Network bool
}

// Jail lists the paths, inside the jail, of what Enter put there.
type Jail struct {
	// Root is the guest root inside the jail.
	Root string
	// Sockets are the jail paths of Config.Sockets, in the same order.
	Sockets []string
	// Devices are the jail paths of Config.Devices, in the same order.
	Devices []string
}

func (c Config) validate() error {
	var errs []error
	if !filepath.IsAbs(c.Root) {
		errs = append(errs, fmt.Errorf("sandbox: root %q: must be an absolute host path", c.Root))
	}
	if c.DiskMiB < MinDiskMiB || c.DiskMiB > MaxDiskMiB {
		errs = append(errs, fmt.Errorf("sandbox: disk size %d MiB: must be between %d and %d MiB", c.DiskMiB, MinDiskMiB, MaxDiskMiB))
	}
	for _, path := range append(append([]string(nil), c.Sockets...), c.Devices...) {
		if !filepath.IsAbs(path) {
			errs = append(errs, fmt.Errorf("sandbox: %q: sockets and devices must be absolute host paths", path))
		}
	}
	seen := map[string]bool{}
	for _, dev := range c.Devices {
		name := filepath.Base(dev)
		if seen[name] {
			errs = append(errs, fmt.Errorf("sandbox: device %q: another device has the name %q", dev, name))
		}
		seen[name] = true
	}
	return errors.Join(errs...)
}

// overlayEscape escapes a path for overlayfs's mount options, which
// separate options with ',' and lower layers with ':'.
func overlayEscape(path string) string {
	return strings.NewReplacer(`\`, `\\`, `,`, `\,`, `:`, `\:`).Replace(path)
}
