package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// IDBase is the first host user and group id of a VM process started by
// a root launcher: ids 0 to 65535 in the process's user namespace are
// IDBase to IDBase+65535 on the host. The range sits far above the ids
// that systems give to users and to their subordinate ranges
// (/etc/subuid starts at 100000 by default), so no host account owns it.
// NOTE: every VM process gets the same range; only their separate PID
// namespaces keep them from signalling or tracing one another.
const IDBase = 0x60000000

// idRange is the number of ids mapped for a VM process started by root.
const idRange = 65536

// planEnv carries the child's part of the jail from Prepare to Enter, as
// JSON of a plan.
const planEnv = "THROWAWAYSH_SANDBOX_PLAN"

// plan is the part of the jail that Prepare hands to Enter. The VM process
// inherits its file descriptors.
type plan struct {
	// HostMounts is the launcher's mount namespace, as "device:inode" of
	// /proc/self/ns/mnt, so that Enter can tell that it runs in another.
	HostMounts string
	DiskMiB    int
	Devices    []string
	// Root and Sockets are host paths that the VM process clones itself
	// when the launcher did not: RootFD and SocketFDs are then -1 and nil.
	// A launcher running as root clones them, because the VM process then
	// runs as an unprivileged user that may not reach them by path.
	Root      string
	Sockets   []string
	RootFD    int
	SocketFDs []int
	// ReadyFD is a pipe on which the launcher writes one byte once the
	// rootfs clone is ID-mapped. It can map the clone only after the
	// process exists, because the mapping names the process's namespace.
	ReadyFD int
}

// Launch is the launcher's side of one VM process's jail. Call Started
// right after the process starts, or Close if it failed to start.
type Launch struct {
	tree     *os.File // ID-mapped rootfs clone, or nil
	ready    *os.File // write end of plan.ReadyFD
	passed   []*os.File
	root     string
	finished bool
}

// Prepare sets cmd up to start a VM process that confines itself with
// Enter. The process gets new user, mount, PID and IPC namespaces, and a
// new network namespace unless cfg.Network is set.
//
// A launcher running as root maps the process's ids 0 to 65535 to IDBase
// onwards, so the VMM runs as an unprivileged host user. It hands the
// process an ID-mapped clone of cfg.Root, in which files owned by host
// root appear owned by the namespace's root. The sockets in cfg.Sockets are given to
// IDBase so that the process can connect to them, and the groups that own
// cfg.Devices are mapped into the namespace and given to the process. The
// rootfs must be on a file system that supports ID-mapped mounts (ext4,
// xfs, btrfs and tmpfs do).
//
// A launcher without root maps its own user and group to the namespace's
// root instead, which needs unprivileged user namespaces.
//
// Prepare keeps cmd's other process attributes and appends to cmd.Env and
// cmd.ExtraFiles.
func Prepare(cmd *exec.Cmd, cfg Config) (*Launch, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	hostMounts, err := mountNamespace()
	if err != nil {
		return nil, err
	}
	l := &Launch{root: cfg.Root}
	p := plan{HostMounts: hostMounts, DiskMiB: cfg.DiskMiB, Devices: cfg.Devices, Root: cfg.Root, Sockets: cfg.Sockets, RootFD: -1}
	pass := func(f *os.File) int {
		l.passed = append(l.passed, f)
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
		return 2 + len(cmd.ExtraFiles)
	}
	fail := func(err error) (*Launch, error) {
		l.Close()
		return nil, err
	}

	readyRead, readyWrite, err := os.Pipe()
	if err != nil {
		return fail(fmt.Errorf("sandbox: create pipe: %w", err))
	}
	l.ready = readyWrite
	p.ReadyFD = pass(readyRead)

	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	attrs := cmd.SysProcAttr
	attrs.Cloneflags |= syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC
	if !cfg.Network {
		attrs.Cloneflags |= syscall.CLONE_NEWNET
	}
	if os.Geteuid() == 0 {
		if err := l.prepareAsRoot(cmd, cfg, &p, pass); err != nil {
			return fail(err)
		}
	} else {
		attrs.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attrs.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	}

	encoded, err := json.Marshal(p)
	if err != nil {
		return fail(fmt.Errorf("sandbox: encode plan: %w", err))
	}
	cmd.Env = append(cmd.Env, planEnv+"="+string(encoded))
	return l, nil
}

// prepareAsRoot sets up the ID mapping, the rootfs clone, and the owners
// of the sockets and groups of the devices for a launcher running as root.
func (l *Launch) prepareAsRoot(cmd *exec.Cmd, cfg Config, p *plan, pass func(*os.File) int) error {
	attrs := cmd.SysProcAttr
	attrs.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: IDBase, Size: idRange}}
	attrs.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: IDBase, Size: idRange}}
	// Each device's group, such as kvm for /dev/kvm, gets a namespace id
	// above the range, and the process joins it.
	var groups []uint32
	for _, dev := range cfg.Devices {
		var st unix.Stat_t
		if err := unix.Stat(dev, &st); err != nil {
			return fmt.Errorf("sandbox: device %s: %w", dev, err)
		}
		if st.Gid == 0 {
			continue
		}
		inside := idRange + len(groups)
		attrs.GidMappings = append(attrs.GidMappings, syscall.SysProcIDMap{ContainerID: inside, HostID: int(st.Gid), Size: 1})
		groups = append(groups, uint32(inside))
	}
	attrs.GidMappingsEnableSetgroups = len(groups) > 0
	attrs.Credential = &syscall.Credential{Uid: 0, Gid: 0, Groups: groups, NoSetGroups: len(groups) == 0}

	for _, socket := range cfg.Sockets {
		if err := os.Lchown(socket, IDBase, IDBase); err != nil {
			return fmt.Errorf("sandbox: give socket to the VM process's user: %w", err)
		}
		clone, err := cloneMount(socket)
		if err != nil {
			return err
		}
		p.SocketFDs = append(p.SocketFDs, pass(clone))
	}
	tree, err := cloneMount(cfg.Root)
	if err != nil {
		return err
	}
	l.tree = tree
	p.RootFD = pass(tree)
	p.Root, p.Sockets = "", nil
	return nil
}

// cloneMount returns a detached bind mount of path, which a process in
// another mount namespace can attach.
func cloneMount(path string) (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("sandbox: clone mount of %q: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// Started finishes the launcher's side once the VM process with the given
// PID runs: it ID-maps the rootfs clone into the process's user namespace
// and lets the process go on. It closes the launcher's copies of the
// descriptors that Prepare passed.
func (l *Launch) Started(pid int) error {
	defer l.Close()
	if l.tree != nil {
		userns, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", pid))
		if err != nil {
			return fmt.Errorf("sandbox: open user namespace of VM process %d: %w", pid, err)
		}
		defer userns.Close()
		attr := unix.MountAttr{
			Attr_set:  unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOSUID,
			Userns_fd: uint64(userns.Fd()),
		}
		if err := unix.MountSetattr(int(l.tree.Fd()), "", unix.AT_EMPTY_PATH, &attr); err != nil {
			return fmt.Errorf("sandbox: ID-map rootfs %q (%w); its file system must support ID-mapped mounts, as ext4, xfs, btrfs and tmpfs do", l.root, err)
		}
	}
	if _, err := l.ready.Write([]byte{1}); err != nil {
		return fmt.Errorf("sandbox: release VM process %d: %w", pid, err)
	}
	l.finished = true
	return nil
}

// Close closes the launcher's copies of the descriptors that Prepare
// passed. A VM process still waiting for Started then fails in Enter.
func (l *Launch) Close() {
	for _, f := range l.passed {
		_ = f.Close()
	}
	l.passed = nil
	if l.ready != nil {
		_ = l.ready.Close()
		l.ready = nil
	}
}

// Enter builds the jail that Prepare planned and makes it the process's
// root. Every mount is private to the process's mount namespace; Enter
// refuses to run in the launcher's. On error the process may be left
// half-confined and must exit.
//
// The jail's root is a tmpfs of the planned size. It holds the guest root
// at RootPath, an overlay whose lower layer is the rootfs and whose upper
// layer is on the same tmpfs. It also holds the devices under /dev, the
// sockets under /sock, and a new /proc that shows only the process's own
// PID namespace. The tmpfs and the overlay are mounted nodev and
// nosuid, so a device node or set-user-ID file that the guest creates, or
// that the rootfs contains, cannot be used on the host. After the switch
// the jail's own root mount is read-only: only the overlay takes writes.
//
// Enter first closes every file descriptor above 2 that neither the plan
// nor keep names, so that nothing the launcher inherited from its own
// parent, such as an open directory, reaches the jail.
func Enter(keep ...int) (*Jail, error) {
	p, err := readPlan()
	if err != nil {
		return nil, err
	}
	planned := append([]int{p.ReadyFD, p.RootFD}, p.SocketFDs...)
	if err := closeOtherFiles(append(planned, keep...)); err != nil {
		return nil, err
	}
	if err := checkPrivateMounts(p.HostMounts); err != nil {
		return nil, err
	}
	if err := waitReady(p.ReadyFD); err != nil {
		return nil, err
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("sandbox: make mounts private: %w", err)
	}
	// Clone what the launcher did not, while the host's paths are in
	// view: the jail's tmpfs may cover them.
	if err := cloneOwnMounts(&p); err != nil {
		return nil, err
	}
	if err := mountJailTmpfs(p); err != nil {
		return nil, err
	}
	for _, dir := range []string{upperDir, workDir, lowerDir, RootPath, deviceDir, socketDir, procDir, oldRootDir} {
		if err := os.Mkdir(relative(dir), 0o755); err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
	}
	if err := mountOverlay(p); err != nil {
		return nil, err
	}

	jail := &Jail{Root: RootPath}
	for _, dev := range p.Devices {
		inJail := filepath.Join(deviceDir, filepath.Base(dev))
		if err := bindFile(dev, relative(inJail)); err != nil {
			return nil, err
		}
		jail.Devices = append(jail.Devices, inJail)
	}
	for i, fd := range p.SocketFDs {
		inJail := filepath.Join(socketDir, strconv.Itoa(i)+".sock")
		if err := attachFile(fd, relative(inJail)); err != nil {
			return nil, err
		}
		jail.Sockets = append(jail.Sockets, inJail)
	}
	if err := unix.Mount("proc", relative(procDir), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("sandbox: mount /proc: %w", err)
	}

	if err := switchRoot(); err != nil {
		return nil, err
	}
	return jail, nil
}

// cloneOwnMounts clones the rootfs and the sockets from their host paths
// when the launcher passed no clones.
func cloneOwnMounts(p *plan) error {
	if p.RootFD < 0 {
		tree, err := cloneMount(p.Root)
		if err != nil {
			return err
		}
		p.RootFD = int(tree.Fd())
	}
	if p.SocketFDs == nil {
		for _, socket := range p.Sockets {
			clone, err := cloneMount(socket)
			if err != nil {
				return err
			}
			p.SocketFDs = append(p.SocketFDs, int(clone.Fd()))
		}
	}
	return nil
}

// attachFile attaches the detached mount fd onto a new empty file at to.
func attachFile(fd int, to string) error {
	f, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	_ = f.Close()
	err = unix.MoveMount(fd, "", unix.AT_FDCWD, to, unix.MOVE_MOUNT_F_EMPTY_PATH)
	_ = unix.Close(fd)
	if err != nil {
		return fmt.Errorf("sandbox: attach %s: %w", to, err)
	}
	return nil
}

// lowerDir is the jail path at which the rootfs clone is attached until
// the switch of root. The overlay keeps its own reference to it.
const lowerDir = "/lower"

// relative turns a jail path into a path relative to the jail's root,
// which is the working directory until switchRoot.
func relative(jailPath string) string {
	return "." + jailPath
}

func readPlan() (plan, error) {
	var p plan
	encoded := os.Getenv(planEnv)
	_ = os.Unsetenv(planEnv)
	if encoded == "" {
		return p, errors.New("sandbox: no jail plan in the environment; start the process with a command set up by sandbox.Prepare")
	}
	if err := json.Unmarshal([]byte(encoded), &p); err != nil {
		return p, fmt.Errorf("sandbox: decode jail plan: %w", err)
	}
	if p.DiskMiB < MinDiskMiB || p.DiskMiB > MaxDiskMiB {
		return p, fmt.Errorf("sandbox: jail plan: disk size %d MiB out of range", p.DiskMiB)
	}
	return p, nil
}

// runtimeFiles are the kinds of descriptors that the Go runtime opens for
// itself, as /proc/self/fd shows them; closing one would break it.
var runtimeFiles = []string{"anon_inode:[eventpoll]", "anon_inode:[eventfd]", "anon_inode:[pidfd]"}

// closeOtherFiles closes every descriptor above 2 except those in keep and
// those of the Go runtime.
func closeOtherFiles(keep []int) error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("sandbox: list open files: %w", err)
	}
	for _, entry := range entries {
		fd, err := strconv.Atoi(entry.Name())
		if err != nil || fd <= 2 || slices.Contains(keep, fd) {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + entry.Name())
		if err != nil {
			// The descriptor of the listing itself, closed by now.
			continue
		}
		if slices.Contains(runtimeFiles, target) {
			continue
		}
		if err := unix.Close(fd); err != nil && !errors.Is(err, unix.EBADF) {
			return fmt.Errorf("sandbox: close inherited descriptor %d (%s): %w", fd, target, err)
		}
	}
	return nil
}

// checkPrivateMounts returns an error unless the process runs in mount and
// PID namespaces of its own: Enter's mounts would otherwise change the
// launcher's view of the host.
func checkPrivateMounts(host string) error {
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

// waitReady blocks until the launcher has finished its side of the jail.
func waitReady(fd int) error {
	ready := os.NewFile(uintptr(fd), "ready")
	defer ready.Close()
	var b [1]byte
	if _, err := io.ReadFull(ready, b[:]); err != nil {
		return fmt.Errorf("sandbox: the launcher did not finish the jail: %w", err)
	}
	return nil
}

// jailMountpoint is the directory on which the jail's tmpfs is attached
// before it becomes the root. It must exist and be reachable by an
// unprivileged user. The mount is private to the VM process, so it covers
// the directory only in the process's own view, which it leaves at the
// switch of root.
const jailMountpoint = "/tmp"

// mountJailTmpfs mounts the jail's tmpfs on jailMountpoint and makes it
// the working directory.
func mountJailTmpfs(p plan) error {
	fs, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("sandbox: open tmpfs: %w", err)
	}
	defer unix.Close(fs)
	options := map[string]string{
		"size":      strconv.Itoa(p.DiskMiB) + "m",
		"nr_inodes": strconv.Itoa(p.DiskMiB * inodesPerMiB),
		"mode":      "0755",
	}
	for key, value := range options {
		if err := unix.FsconfigSetString(fs, key, value); err != nil {
			return fmt.Errorf("sandbox: tmpfs option %s=%s: %w", key, value, err)
		}
	}
	if err := unix.FsconfigCreate(fs); err != nil {
		return fmt.Errorf("sandbox: create tmpfs: %w", err)
	}
	mnt, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOSUID)
	if err != nil {
		return fmt.Errorf("sandbox: mount tmpfs: %w", err)
	}
	defer unix.Close(mnt)
	if err := unix.MoveMount(mnt, "", unix.AT_FDCWD, jailMountpoint, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("sandbox: attach tmpfs on %s: %w", jailMountpoint, err)
	}
	if err := unix.Fchdir(mnt); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	return nil
}

// mountOverlay mounts the guest root at RootPath: the rootfs as the lower
// layer, the upper and work directories on the jail's tmpfs. A kernel that
// rejects trusted.* extended attributes in a user namespace gets the
// userxattr option.
func mountOverlay(p plan) error {
	err := unix.MoveMount(p.RootFD, "", unix.AT_FDCWD, relative(lowerDir), unix.MOVE_MOUNT_F_EMPTY_PATH)
	_ = unix.Close(p.RootFD)
	if err != nil {
		return fmt.Errorf("sandbox: attach rootfs clone: %w", err)
	}
	options := "lowerdir=" + overlayEscape(relative(lowerDir)) +
		",upperdir=" + overlayEscape(relative(upperDir)) +
		",workdir=" + overlayEscape(relative(workDir))
	flags := uintptr(unix.MS_NODEV | unix.MS_NOSUID)
	err = unix.Mount("overlay", relative(RootPath), "overlay", flags, options)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EPERM) {
		err = unix.Mount("overlay", relative(RootPath), "overlay", flags, options+",userxattr")
	}
	if err != nil {
		return fmt.Errorf("sandbox: mount overlay of the rootfs: %w", err)
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

// switchRoot makes the working directory, the jail's tmpfs, the process's
// root with pivot_root, detaches the old root and the rootfs clone, and
// makes the jail's root mount read-only.
func switchRoot() error {
	if err := unix.PivotRoot(".", "."+oldRootDir); err != nil {
		return fmt.Errorf("sandbox: pivot_root into the jail: %w", err)
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
	// The overlay holds its own reference to its lower layer.
	if err := unix.Unmount(lowerDir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("sandbox: detach the rootfs clone: %w", err)
	}
	if err := unix.Rmdir(lowerDir); err != nil {
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
// files outside the jail), CAP_SYS_PTRACE and CAP_SYS_CHROOT. In the VM
// process's user namespace they act only on files whose owners the
// namespace maps.
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
