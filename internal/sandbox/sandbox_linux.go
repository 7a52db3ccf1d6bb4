package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Enter builds the jail described by cfg and makes it the process's root.
// Every mount is private to the process's mount namespace; Enter refuses
// to run in the host's. On error the process may be left half-confined
// and must exit.
//
// The jail's root is a tmpfs of cfg.DiskMiB holding: the guest root at
// RootPath, an overlay whose lower layer is cfg.Root and whose upper layer
// is on the same tmpfs; bind mounts of cfg.Devices under /dev and of
// cfg.Sockets under /sock; and a new /proc, which shows only the process's
// own PID namespace. The tmpfs and the overlay are mounted nodev and
// nosuid, so a device node or set-user-ID file that the guest creates, or
// that the rootfs contains, cannot be used on the host. After the switch
// the jail's own root mount is read-only: only the overlay takes writes.
func Enter(cfg Config) (*Jail, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := checkPrivateMounts(); err != nil {
		return nil, err
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("sandbox: make mounts private: %w", err)
	}

	base := cfg.Mountpoint
	tmpfsOptions := fmt.Sprintf("size=%dm,nr_inodes=%d,mode=0755", cfg.DiskMiB, cfg.DiskMiB*inodesPerMiB)
	if err := unix.Mount("throwawaysh", base, "tmpfs", unix.MS_NODEV|unix.MS_NOSUID, tmpfsOptions); err != nil {
		return nil, fmt.Errorf("sandbox: mount tmpfs on %q: %w", base, err)
	}
	for _, dir := range []string{upperDir, workDir, RootPath, deviceDir, socketDir, procDir, oldRootDir} {
		if err := os.Mkdir(filepath.Join(base, dir), 0o755); err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
	}
	if err := mountOverlay(cfg.Root, base); err != nil {
		return nil, err
	}

	jail := &Jail{Root: RootPath}
	for _, dev := range cfg.Devices {
		inJail := filepath.Join(deviceDir, filepath.Base(dev))
		if err := bindFile(dev, filepath.Join(base, inJail)); err != nil {
			return nil, err
		}
		jail.Devices = append(jail.Devices, inJail)
	}
	for i, socket := range cfg.Sockets {
		inJail := filepath.Join(socketDir, strconv.Itoa(i)+".sock")
		if err := bindFile(socket, filepath.Join(base, inJail)); err != nil {
			return nil, err
		}
		jail.Sockets = append(jail.Sockets, inJail)
	}
	if err := unix.Mount("proc", filepath.Join(base, procDir), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("sandbox: mount /proc (is the process in a PID namespace of its own?): %w", err)
	}

	if err := switchRoot(base); err != nil {
		return nil, err
	}
	return jail, nil
}

// hostMountsEnv carries the launcher's mount namespace to the VM process,
// as "device:inode" of /proc/self/ns/mnt, so that Enter can tell that it
// runs in another one.
const hostMountsEnv = "THROWAWAYSH_SANDBOX_HOST_MOUNTS"

// checkPrivateMounts returns an error unless the process was started by
// Prepare's command, in mount and PID namespaces of its own: Enter's
// mounts would otherwise change the launcher's view of the host.
func checkPrivateMounts() error {
	host := os.Getenv(hostMountsEnv)
	_ = os.Unsetenv(hostMountsEnv)
	self, err := mountNamespace()
	if err != nil {
		return err
	}
	if host == "" || host == self {
		return errors.New("sandbox: the process shares its launcher's mount namespace; start it with a command set up by sandbox.Prepare")
	}
	if os.Getpid() != 1 {
		return errors.New("sandbox: the process is not PID 1 of a PID namespace of its own; start it with a command set up by sandbox.Prepare")
	}
	return nil
}

func mountNamespace() (string, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/mnt", &st); err != nil {
		return "", fmt.Errorf("sandbox: inspect mount namespace: %w", err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino), nil
}

// mountOverlay mounts the guest root at base+RootPath: root as the lower
// layer, the upper and work directories on base's tmpfs. A kernel that
// rejects trusted.* extended attributes in a user namespace gets the
// userxattr option.
func mountOverlay(root, base string) error {
	options := "lowerdir=" + overlayEscape(root) +
		",upperdir=" + overlayEscape(filepath.Join(base, upperDir)) +
		",workdir=" + overlayEscape(filepath.Join(base, workDir))
	target := filepath.Join(base, RootPath)
	flags := uintptr(unix.MS_NODEV | unix.MS_NOSUID)
	err := unix.Mount("overlay", target, "overlay", flags, options)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EPERM) {
		err = unix.Mount("overlay", target, "overlay", flags, options+",userxattr")
	}
	if err != nil {
		return fmt.Errorf("sandbox: mount overlay of %q: %w", root, err)
	}
	return nil
}

// bindFile bind-mounts the host file from onto a new empty file at to.
func bindFile(from, to string) error {
	f, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	_ = f.Close()
	if err := unix.Mount(from, to, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("sandbox: bind %q into the jail: %w", from, err)
	}
	return nil
}

// switchRoot makes base the process's root with pivot_root, detaches the
// old root, and makes the jail's root mount read-only.
func switchRoot(base string) error {
	if err := unix.Chdir(base); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	if err := unix.PivotRoot(".", "."+oldRootDir); err != nil {
		return fmt.Errorf("sandbox: pivot_root to %q: %w", base, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	if err := unix.Unmount(oldRootDir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("sandbox: detach the host's root: %w", err)
	}
	if err := unix.Rmdir(oldRootDir); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY | unix.MS_NODEV | unix.MS_NOSUID)
	if err := unix.Mount("", "/", "", flags, ""); err != nil {
		return fmt.Errorf("sandbox: make the jail's root read-only: %w", err)
	}
	return nil
}

// vmmCapabilities are the capabilities the VMM keeps: those a virtio-fs
// server needs to act on files as the guest's users (the set virtiofsd
// keeps by default). Everything else goes, notably CAP_SYS_ADMIN (mount,
// leave the jail), CAP_DAC_READ_SEARCH (open_by_handle_at, which reaches
// files outside the jail), CAP_SYS_PTRACE and CAP_SYS_CHROOT.
var vmmCapabilities = []int{
	unix.CAP_CHOWN,
	unix.CAP_DAC_OVERRIDE,
	unix.CAP_FOWNER,
	unix.CAP_FSETID,
	unix.CAP_SETGID,
	unix.CAP_SETUID,
	unix.CAP_MKNOD,
	unix.CAP_SETFCAP,
}

// DropCapabilities limits the calling thread to the VMM's capabilities
// and sets no_new_privs, so no later execve gains any. extra are kept in
// the thread's effective set but not in its bounding set, so a program
// the thread executes does not get them.
//
// Linux keeps capabilities per thread. Call it from a thread locked with
// runtime.LockOSThread, and start the VMM or the workload from that
// thread: libkrun's threads and a forked child inherit its set. The Go
// runtime's other threads keep theirs but never run libkrun code.
func DropCapabilities(extra ...int) error {
	keep := map[int]bool{}
	for _, c := range vmmCapabilities {
		keep[c] = true
	}
	for c := 0; c <= unix.CAP_LAST_CAP; c++ {
		if keep[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("sandbox: drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("sandbox: clear ambient capabilities: %w", err)
	}

	header := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var current [2]unix.CapUserData
	if err := unix.Capget(&header, &current[0]); err != nil {
		return fmt.Errorf("sandbox: read capabilities: %w", err)
	}
	var reduced [2]unix.CapUserData
	for _, c := range append(append([]int(nil), vmmCapabilities...), extra...) {
		word, bit := c/32, uint32(1)<<(c%32)
		if current[word].Permitted&bit != 0 {
			reduced[word].Permitted |= bit
			reduced[word].Effective |= bit
		}
	}
	if err := unix.Capset(&header, &reduced[0]); err != nil {
		return fmt.Errorf("sandbox: set capabilities: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("sandbox: set no_new_privs: %w", err)
	}
	return nil
}

// Prepare sets cmd up to start a VM process: in new mount, PID and IPC
// namespaces, in a new network namespace unless the guest gets network
// access, and for a caller without root in a new user namespace that maps
// the caller's user and group to root, which grants the right to mount.
// It keeps cmd's other process attributes and adds to cmd.Env what Enter
// checks.
func Prepare(cmd *exec.Cmd, network bool) error {
	self, err := mountNamespace()
	if err != nil {
		return err
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	attrs := cmd.SysProcAttr
	attrs.Cloneflags |= syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC
	if !network {
		attrs.Cloneflags |= syscall.CLONE_NEWNET
	}
	if os.Geteuid() != 0 {
		attrs.Cloneflags |= syscall.CLONE_NEWUSER
		attrs.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attrs.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	}
	cmd.Env = append(cmd.Env, hostMountsEnv+"="+self)
	return nil
}
