package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// probeEnv makes the test binary act as a jailed VM process. It enters a
// jail, tries the attempts of the JSON probeRequest in the variable to
// reach the host as a VMM with a hostile guest might, and prints a
// probeReport.
const probeEnv = "THROWAWAYSH_SANDBOX_PROBE"

type probeRequest struct {
	DiskMiB    int
	HostSecret string // host path of a file the jail must not reach
	Listener   string // host TCP address the jail must not reach
}

// probeReport holds the error text of each attempt, or "" when it worked.
type probeReport struct {
	EnterError    string
	DropError     string
	HostUID       string // the process's uid on the host, from its uid_map
	NamespaceUID  int
	InheritedFile string // fcntl on the descriptor inherited past Prepare

	ReadRootfs      string // must work: the guest root is in the jail
	ReadSecret      string
	ReadSecretProc1 string
	Mount           string
	Chroot          string
	OpenByHandle    string
	DeviceOpen      string
	WriteGuest      string // must work, into the overlay
	WriteJailRoot   string
	FillDisk        string
	DialHost        string
	Socket          string // must work: the bound socket is reachable
}

func TestMain(m *testing.M) {
	if request := os.Getenv(probeEnv); request != "" {
		runProbe(request)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func runProbe(encoded string) {
	var req probeRequest
	var report probeReport
	defer func() { _ = json.NewEncoder(os.Stdout).Encode(report) }()
	if err := json.Unmarshal([]byte(encoded), &req); err != nil {
		report.EnterError = err.Error()
		return
	}
	runtime.LockOSThread()
	jail, err := Enter()
	if err != nil {
		report.EnterError = err.Error()
		return
	}
	report.DropError = errText(DropCapabilities())
	_, err = unix.FcntlInt(3, unix.F_GETFD, 0)
	report.InheritedFile = errText(err)
	report.NamespaceUID = os.Getuid()
	if data, err := os.ReadFile("/proc/self/uid_map"); err == nil {
		if fields := strings.Fields(string(data)); len(fields) >= 2 {
			report.HostUID = fields[1]
		}
	}

	_, err = os.ReadFile(filepath.Join(jail.Root, "etc/probe"))
	report.ReadRootfs = errText(err)
	_, err = os.ReadFile(req.HostSecret)
	report.ReadSecret = errText(err)
	_, err = os.ReadFile("/proc/1/root" + req.HostSecret)
	report.ReadSecretProc1 = errText(err)
	report.Mount = errText(unix.Mount("tmpfs", jail.Root, "tmpfs", 0, ""))
	report.Chroot = errText(unix.Chroot(jail.Root))
	report.OpenByHandle = errText(openByHandle(jail.Sockets[0]))
	report.DeviceOpen = errText(openNewDevice(filepath.Join(jail.Root, "disk")))
	report.WriteGuest = errText(os.WriteFile(filepath.Join(jail.Root, "etc/probe"), []byte("changed"), 0o644))
	report.WriteJailRoot = errText(os.WriteFile("/escape", nil, 0o644))
	report.FillDisk = errText(fill(filepath.Join(jail.Root, "big"), 2*req.DiskMiB))
	conn, err := net.Dial("tcp", req.Listener)
	if err == nil {
		_ = conn.Close()
	}
	report.DialHost = errText(err)
	conn, err = net.Dial("unix", jail.Sockets[0])
	if err == nil {
		_ = conn.Close()
	}
	report.Socket = errText(err)
}

// openByHandle tries open_by_handle_at, which opens a file by its inode
// handle and so can reach files of the same file system outside the jail.
func openByHandle(path string) error {
	handle, mountID, err := unix.NameToHandleAt(unix.AT_FDCWD, path, 0)
	if err != nil {
		return fmt.Errorf("name_to_handle_at: %w", err)
	}
	_ = mountID
	dir, err := unix.Open(filepath.Dir(path), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	fd, err := unix.OpenByHandleAt(dir, handle, unix.O_PATH)
	if err != nil {
		return err
	}
	_ = unix.Close(fd)
	return nil
}

// openNewDevice creates a block device node for the host's first disk and
// opens it.
func openNewDevice(path string) error {
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0))); err != nil {
		return fmt.Errorf("mknod: %w", err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	_ = unix.Close(fd)
	return nil
}

// fill writes mib MiB of zeros to path.
func fill(path string, mib int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	block := make([]byte, 1<<20)
	for range mib {
		if _, err := f.Write(block); err != nil {
			return err
		}
	}
	return f.Sync()
}

// startProbe runs the probe in a jail for cfg, as a launcher starts a VM
// process, and returns its report.
func startProbe(t *testing.T, cfg Config, req probeRequest) probeReport {
	t.Helper()
	req.DiskMiB = cfg.DiskMiB
	encoded, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	// A jailed process started by root runs as IDBase, which cannot reach
	// the test binary through the build's private directories. The
	// process's own /proc/self/exe reaches it without a path walk.
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = []string{probeEnv + "=" + string(encoded)}
	// A host directory the launcher passes on by mistake, as fd 3.
	inherited, err := os.Open(filepath.Dir(req.HostSecret))
	if err != nil {
		t.Fatal(err)
	}
	defer inherited.Close()
	cmd.ExtraFiles = []*os.File{inherited}
	launch, err := Prepare(cmd, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		launch.Close()
		t.Fatal(err)
	}
	if err := launch.Started(cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("Started: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("probe failed: %v; stderr: %s", err, stderr.String())
	}
	out := []byte(stdout.String())
	var report probeReport
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("decode probe report %q: %v", out, err)
	}
	return report
}

// requireNamespaces skips the test where the kernel or the sandbox of the
// test run does not allow the namespaces a jail needs.
func requireNamespaces(t *testing.T) {
	t.Helper()
	cmd := exec.Command("/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWNET}
	if os.Geteuid() != 0 {
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
	}
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot create mount, PID and network namespaces here: %v", err)
	}
}

func TestJailConfinesVMProcess(t *testing.T) {
	requireNamespaces(t)
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/probe"), []byte("original"), 0o644); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	runDir := t.TempDir()
	socketPath := filepath.Join(runDir, "agent.sock")
	socket, err := net.Listen("unix", socketPath)
	if err != nil {
		t.Fatal(err)
	}
	defer socket.Close()
	go func() {
		for {
			conn, err := socket.Accept()
			if err != nil {
				return
			}
			_ = conn.Close()
		}
	}()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()

	cfg := Config{Root: root, DiskMiB: 8, Sockets: []string{socketPath}, Devices: []string{"/dev/null"}}
	report := startProbe(t, cfg, probeRequest{HostSecret: secret, Listener: tcp.Addr().String()})
	t.Logf("probe report: %+v", report)
	if report.EnterError != "" {
		t.Fatalf("Enter: %s", report.EnterError)
	}
	if report.DropError != "" {
		t.Fatalf("DropCapabilities: %s", report.DropError)
	}
	if !strings.Contains(report.InheritedFile, "bad file descriptor") {
		t.Errorf("a host directory inherited as fd 3 is still open in the jail (fcntl: %q)", report.InheritedFile)
	}
	if report.NamespaceUID != 0 {
		t.Errorf("uid in the jail = %d, want 0, the namespace's root", report.NamespaceUID)
	}
	wantHostUID := strconv.Itoa(os.Geteuid())
	if os.Geteuid() == 0 {
		wantHostUID = strconv.Itoa(IDBase)
	}
	if report.HostUID != wantHostUID {
		t.Errorf("host uid of the jailed process = %s, want %s: an unprivileged user", report.HostUID, wantHostUID)
	}

	mustWork := map[string]string{
		"read a rootfs file in the jail": report.ReadRootfs,
		"write to the guest root":        report.WriteGuest,
		"connect to the bound socket":    report.Socket,
	}
	for what, got := range mustWork {
		if got != "" {
			t.Errorf("%s failed: %s", what, got)
		}
	}
	// Each attempt must fail for a reason the jail gives, not by chance. A
	// device node cannot even be made in a user namespace, and where it
	// can (a launcher's own namespace), nodev keeps it from opening.
	mustFail := []struct {
		what, got string
		want      []string
	}{
		{"read the host file by its path", report.ReadSecret, []string{"no such file"}},
		{"read the host file via /proc/1/root", report.ReadSecretProc1, []string{"no such file"}},
		{"mount a file system", report.Mount, []string{"operation not permitted"}},
		{"chroot", report.Chroot, []string{"operation not permitted"}},
		{"open_by_handle_at", report.OpenByHandle, []string{"operation not permitted"}},
		{"open a device node made in the guest root", report.DeviceOpen, []string{"mknod: operation not permitted", "permission denied"}},
		{"write to the jail's own root", report.WriteJailRoot, []string{"read-only file system"}},
		{"dial a TCP listener on host loopback", report.DialHost, []string{"network is unreachable"}},
	}
	for _, attempt := range mustFail {
		if !slices.ContainsFunc(attempt.want, func(want string) bool { return strings.Contains(attempt.got, want) }) {
			t.Errorf("%s: err = %q, want one of %q", attempt.what, attempt.got, attempt.want)
		}
	}
	if !strings.Contains(report.FillDisk, "no space left on device") {
		t.Errorf("writing twice the disk size: err = %q, want ENOSPC", report.FillDisk)
	}

	data, err := os.ReadFile(filepath.Join(root, "etc/probe"))
	if err != nil || string(data) != "original" {
		t.Errorf("rootfs file after the jailed write = %q, %v; want it unchanged", data, err)
	}
	for _, name := range []string{"big", "disk"} {
		if _, err := os.Lstat(filepath.Join(root, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s reached the rootfs on the host (err = %v)", name, err)
		}
	}
}

// Enter must refuse to mount anything in a process that a launcher did not
// set up with Prepare, or that shares the launcher's mount namespace.
func TestEnterRejectsSharedMountNamespace(t *testing.T) {
	t.Setenv(planEnv, "")
	if _, err := Enter(); err == nil || !strings.Contains(err.Error(), "sandbox.Prepare") {
		t.Errorf("Enter without a plan: err = %v, want a refusal naming sandbox.Prepare", err)
	}
	self, err := mountNamespace()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(planEnv, `{"HostMounts":"`+self+`","DiskMiB":1,"RootFD":-1,"ReadyFD":-1}`)
	if _, err := Enter(); err == nil || !strings.Contains(err.Error(), "shares its launcher's mount namespace") {
		t.Errorf("Enter in the launcher's namespace: err = %v, want a refusal", err)
	}
	t.Setenv(planEnv, `{"HostMounts":"0:0","DiskMiB":1,"RootFD":-1,"ReadyFD":-1}`)
	if _, err := Enter(); err == nil || !strings.Contains(err.Error(), "not PID 1") {
		t.Errorf("Enter outside a PID namespace: err = %v, want a refusal", err)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Root: "/srv/root", DiskMiB: 64}
	if err := good.validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	cases := map[string]struct {
		change func(*Config)
		want   string
	}{
		"relative root":    {func(c *Config) { c.Root = "root" }, `root "root": must be an absolute host path`},
		"zero disk":        {func(c *Config) { c.DiskMiB = 0 }, "disk size 0 MiB"},
		"huge disk":        {func(c *Config) { c.DiskMiB = MaxDiskMiB + 1 }, "disk size"},
		"relative socket":  {func(c *Config) { c.Sockets = []string{"a.sock"} }, `"a.sock"`},
		"same device name": {func(c *Config) { c.Devices = []string{"/dev/kvm", "/x/kvm"} }, `another device has the name "kvm"`},
	}
	for name, tc := range cases {
		cfg := good
		tc.change(&cfg)
		err := cfg.validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", name, err, tc.want)
		}
	}
}

func TestOverlayEscape(t *testing.T) {
	got := overlayEscape(`/a,b:c\d`)
	if want := `/a\,b\:c\\d`; got != want {
		t.Errorf("overlayEscape = %q, want %q", got, want)
	}
}
