package main

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/throwawaysh/throwawaysh/krun"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// benchTarget is one SSH server under benchmark, reached with the OpenSSH
// client and the benchmark's user key.
type benchTarget struct {
	name string
	port string
	// chachaPort is the port of a server that also offers
	// chachaCipher: the same server for sshd, a second one for
	// throwawaysh.
	chachaPort string
	user       string
	// programs is put before the transfer commands' programs: sshd runs
	// the same static busybox as the test launcher's guests, so that
	// both sides run the same cat and head.
	programs string
	// serverMemory returns the resident memory, in bytes, that counts as
	// the server's: see docs/benchmarks.md for what each target counts.
	serverMemory func() (int64, error)
	// vmMemory returns the resident memory of the VM processes in bytes,
	// or is nil where no real VM runs.
	vmMemory func() (int64, error)
	// idle returns once the server has no session left, or an error at
	// the deadline.
	idle func(deadline time.Time) error
	// logPath is the server's log file, shown when a figure fails.
	logPath string
}

// benchKey is the user key pair that every target accepts.
type benchKey struct {
	privatePath    string
	authorizedPath string
	home           string
}

// newBenchKey creates an ed25519 key pair with ssh-keygen in a new
// directory and an authorized_keys file with its public key.
func newBenchKey(tb testing.TB) benchKey {
	tb.Helper()
	dir := shortTempDir(tb)
	private := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", private).CombinedOutput(); err != nil {
		tb.Fatalf("ssh-keygen (apt-get install openssh-client): %v: %s", err, out)
	}
	public, err := os.ReadFile(private + ".pub")
	if err != nil {
		tb.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, public, 0o600); err != nil {
		tb.Fatal(err)
	}
	return benchKey{privatePath: private, authorizedPath: authorized, home: dir}
}

// chachaCipher is the cipher OpenSSH clients prefer, which throwawaysh
// offers only when --ciphers adds it.
const chachaCipher = "chacha20-poly1305@openssh.com"

// startBenchServer starts throwawaysh with launcher and rootfs as
// newServer composes the service, logging at info level to a file, with
// key authentication and limits high enough for 32 clients from loopback.
// A second server beside it also offers chachaCipher, for the figures
// that use that cipher on both targets.
func startBenchServer(tb testing.TB, name string, launcher krun.Launcher, rootfs string, key benchKey) *benchTarget {
	tb.Helper()
	cfg := testConfig(tb, rootfs)
	cfg.Password = ""
	cfg.AuthorizedKeys = key.authorizedPath
	cfg.LogLevel = "info"
	cfg.MaxStartups = 200
	cfg.PerSourceMaxStartups = 100
	cfg.MaxSessions = 0
	cfg.MaxSessionsPerIP = 0

	logPath := filepath.Join(shortTempDir(tb), "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = logFile.Close() })
	logger := newLogger(cfg, logFile)
	sessions := middleware.NewTracker()
	port := serveBench(tb, cfg, launcher, sessions, logger)

	chachaCfg := cfg
	chachaCfg.RuntimeDir = shortTempDir(tb)
	chachaCfg.Ciphers = append(slices.Clone(defaultCiphers), chachaCipher)
	chachaPort := serveBench(tb, chachaCfg, launcher, middleware.NewTracker(), logger.With("server", "chacha20"))

	target := &benchTarget{
		name:         name,
		port:         port,
		chachaPort:   chachaPort,
		user:         cfg.Username,
		serverMemory: selfResidentMemory,
		idle: func(deadline time.Time) error {
			for sessions.Len() > 0 {
				if time.Now().After(deadline) {
					return fmt.Errorf("%d sessions still open", sessions.Len())
				}
				time.Sleep(20 * time.Millisecond)
			}
			return nil
		},
		logPath: logPath,
	}
	if name == "libkrun" {
		target.vmMemory = func() (int64, error) { return processesMemory(vmProcessIDs()) }
	}
	return target
}

// serveBench serves cfg on a loopback port until tb ends and returns the
// port.
func serveBench(tb testing.TB, cfg config, launcher krun.Launcher, sessions *middleware.Tracker, logger *slog.Logger) string {
	tb.Helper()
	srv, err := newServer(cfg, launcher, sessions, logger)
	if err != nil {
		tb.Fatalf("newServer: %v", err)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// vmProcessIDs returns the ids of the VM processes below this process,
// which runs the servers under benchmark.
// NOTE: no libkrun machine has run this yet; a stand-in child tests it.
func vmProcessIDs() []int {
	var pids []int
	for _, pid := range descendants(os.Getpid()) {
		cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if err != nil {
			continue
		}
		if name, _, _ := strings.Cut(string(cmdline), "\x00"); name == krun.VMProcessName {
			pids = append(pids, pid)
		}
	}
	return pids
}

// selfResidentMemory returns this process's resident memory after a
// garbage collection that returns freed pages to the kernel, so that it
// counts live memory and not garbage waiting for the next cycle.
func selfResidentMemory() (int64, error) {
	runtime.GC()
	debug.FreeOSMemory()
	return residentMemory(os.Getpid())
}

// residentMemory returns VmRSS of process pid in bytes.
func residentMemory(pid int) (int64, error) {
	file, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	defer file.Close()
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		value, ok := strings.CutPrefix(scanner.Text(), "VmRSS:")
		if !ok {
			continue
		}
		kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(value), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmRSS of %d: %q", pid, value)
		}
		return kib << 10, nil
	}
	return 0, fmt.Errorf("no VmRSS for process %d (a kernel thread or a zombie)", pid)
}

// processesMemory returns the sum of the resident memory of pids. A
// process that ended meanwhile counts as zero.
func processesMemory(pids []int) (int64, error) {
	var total int64
	for _, pid := range pids {
		rss, err := residentMemory(pid)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		total += rss
	}
	return total, nil
}

// benchBusybox is the static busybox that internal/krtest builds the test
// guests' root from.
const benchBusybox = "/bin/busybox"

// sshdPath is where Debian's openssh-server installs the daemon.
const sshdPath = "/usr/sbin/sshd"

// sshdPrivsepDir is the directory sshd needs for privilege separation.
// Debian's ssh.service creates it; a machine where the service never ran
// lacks it.
const sshdPrivsepDir = "/run/sshd"

// startSSHD starts OpenSSH's sshd on a free loopback port with a host key
// and configuration of its own in a temporary directory, accepting key
// for the current user, and stops it when tb ends. It returns the reason
// in one line when sshd cannot run here.
func startSSHD(tb testing.TB, key benchKey) (*benchTarget, string) {
	tb.Helper()
	if _, err := os.Stat(sshdPath); err != nil {
		return nil, sshdPath + " not found; install it with 'apt-get install openssh-server'"
	}
	current, err := user.Current()
	if err != nil {
		return nil, "current user unknown: " + err.Error()
	}
	if os.Geteuid() == 0 {
		if err := os.MkdirAll(sshdPrivsepDir, 0o755); err != nil {
			return nil, "create " + sshdPrivsepDir + ": " + err.Error()
		}
	}

	dir := shortTempDir(tb)
	hostKey := filepath.Join(dir, "host_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		return nil, fmt.Sprintf("ssh-keygen for the sshd host key: %v: %s", err, firstLine(string(out)))
	}
	port, err := freePort()
	if err != nil {
		return nil, "find a free port: " + err.Error()
	}
	// The options mirror what throwawaysh does: key authentication only,
	// no banner, no per-login messages, enough startups for 32 clients.
	config := strings.Join([]string{
		"ListenAddress 127.0.0.1",
		"HostKey " + hostKey,
		"PidFile none",
		"UsePAM no",
		"AuthorizedKeysFile " + key.authorizedPath,
		"StrictModes no",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"PrintMotd no",
		"PrintLastLog no",
		"UseDNS no",
		"MaxStartups 200",
		"MaxSessions 10",
		"LogLevel ERROR",
		// Debian's bash reads ~/.bashrc when sshd starts it, unless
		// SHLVL shows that it is nested. The user's rc files are no
		// cost of sshd, and the throwawaysh guest's sh reads none.
		"SetEnv SHLVL=1",
		"",
	}, "\n")
	configPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		return nil, err.Error()
	}

	logPath := filepath.Join(dir, "sshd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err.Error()
	}
	// sshd re-executes itself for each connection and needs an absolute
	// path for that.
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", configPath, "-p", port)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// An interrupted benchmark skips its cleanup, and the sshd left behind
	// would go on accepting the benchmark key for the current user.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, "start sshd: " + err.Error()
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		_ = logFile.Close()
	})
	if err := waitForBanner("127.0.0.1:"+port, exited, 10*time.Second); err != nil {
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Sprintf("sshd did not start: %v: %s", err, firstLine(string(log)))
	}

	master := cmd.Process.Pid
	sessionProcesses := func() []int {
		var pids []int
		for _, pid := range descendants(master) {
			if processName(pid) == "sshd" {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	return &benchTarget{
		name:       "sshd",
		port:       port,
		chachaPort: port,
		user:       current.Username,
		programs:   benchBusybox + " ",
		// The listening sshd and every sshd process of a connection,
		// which are the privileged monitor and the session child. The
		// user's command is left out, as the VM processes are for
		// throwawaysh.
		serverMemory: func() (int64, error) {
			return processesMemory(append([]int{master}, sessionProcesses()...))
		},
		idle: func(deadline time.Time) error {
			for {
				left := sessionProcesses()
				if len(left) == 0 {
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("%d sshd session processes still running", len(left))
				}
				time.Sleep(20 * time.Millisecond)
			}
		},
		logPath: logPath,
	}, ""
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}

// waitForBanner polls addr until it sends an SSH version line, exited is
// closed or timeout passes.
func waitForBanner(addr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-exited:
			return errors.New("sshd exited")
		default:
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			line, readErr := bufio.NewReader(conn).ReadString('\n')
			_ = conn.Close()
			if readErr == nil && strings.HasPrefix(line, "SSH-2.0-") {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no SSH banner on %s within %s", addr, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// descendants returns the ids of every process below pid.
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		id, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if parent, ok := parentOf(id); ok {
			children[parent] = append(children[parent], id)
		}
	}
	var found []int
	queue := []int{pid}
	for len(queue) > 0 {
		next := queue[0]
		queue = queue[1:]
		for _, child := range children[next] {
			found = append(found, child)
			queue = append(queue, child)
		}
	}
	return found
}

// parentOf returns the parent process id of pid from /proc/PID/stat.
func parentOf(pid int) (int, bool) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	// The command name in brackets may contain spaces; the fields after
	// its closing bracket are state, then the parent id.
	end := strings.LastIndexByte(string(stat), ')')
	if end < 0 {
		return 0, false
	}
	fields := strings.Fields(string(stat[end+1:]))
	if len(fields) < 2 {
		return 0, false
	}
	parent, err := strconv.Atoi(fields[1])
	return parent, err == nil
}

// sshSessionProcesses returns the processes whose environment has the
// SSH_CONNECTION of a session on loopback port port, which sshd sets for
// the user's command. A remote command that outlived its session keeps it.
func sshSessionProcesses(port string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		environ, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for variable := range strings.SplitSeq(string(environ), "\x00") {
			value, ok := strings.CutPrefix(variable, "SSH_CONNECTION=")
			if ok && strings.HasSuffix(value, " 127.0.0.1 "+port) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// processName returns the command name of pid (/proc/PID/comm).
func processName(pid int) string {
	comm, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(comm))
}
