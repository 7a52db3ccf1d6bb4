// Package sandbox confines the host process of one VM, the process that
// runs libkrun's VMM or, in tests, the stand-in guest init.
//
// libkrun shares the guest root with the guest over virtio-fs and does not
// confine that share: its README's security model says the guest can reach
// other host directories through it and can fill the host's disk. So the
// VM process enters a jail before libkrun starts. Enter gives the process
// a root of its own, a tmpfs that holds a copy-on-write overlay of the
// guest root, the device nodes and unix sockets the VMM needs and a /proc
// of its own PID namespace, and nothing else of the host. DropCapabilities
// then removes the capabilities that the VMM does not need.
//
// The caller must have started the process in new mount and PID
// namespaces (and a new user namespace when it is not root), so that the
// mounts are private to it and vanish when it ends.
package sandbox

import (
	"errors"
	"fmt"
	"os"
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

// Config describes the jail of one VM process.
type Config struct {
	// Root is the host directory of the guest root. The guest sees it
	// through an overlay and never writes to it.
	Root string
	// Mountpoint is an existing empty host directory. Enter mounts the
	// jail's tmpfs on it, inside the process's own mount namespace, so the
	// host sees only the empty directory.
	Mountpoint string
	// DiskMiB is the size of the tmpfs, in MiB, that holds everything the
	// guest writes. A write beyond it fails with ENOSPC in the guest.
	DiskMiB int
	// Sockets are host unix sockets that the VM process connects to, such
	// as the host ends of vsock ports.
	Sockets []string
	// Devices are host device nodes that the VM process opens, such as
	// /dev/kvm.
	Devices []string
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
	if !filepath.IsAbs(c.Mountpoint) {
		errs = append(errs, fmt.Errorf("sandbox: mountpoint %q: must be an absolute host path", c.Mountpoint))
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

// MakeMountpoint creates an empty directory for Config.Mountpoint in dir,
// or in os.TempDir() when dir is empty, and returns it with a function
// that removes it once the VM process has ended.
func MakeMountpoint(dir string) (string, func() error, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	path, err := os.MkdirTemp(dir, "vm-")
	if err != nil {
		return "", nil, fmt.Errorf("sandbox: create mountpoint: %w", err)
	}
	return path, func() error { return os.Remove(path) }, nil
}
