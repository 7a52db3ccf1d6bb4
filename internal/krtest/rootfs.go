package krtest

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var agentBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// AgentBinary builds cmd/throwawaysh-guest-agent once per test binary and
// returns its path. Call Cleanup from TestMain to remove it.
func AgentBinary(t testing.TB) string {
	t.Helper()
	path, err := agentBinary()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func agentBinary() (string, error) {
	agentBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "krtest-agent-")
		if err != nil {
			agentBuild.err = err
			return
		}
		agentBuild.dir = dir
		agentBuild.path = filepath.Join(dir, "throwawaysh-guest-agent")
		cmd := exec.Command("go", "build", "-o", agentBuild.path, "github.com/throwawaysh/throwawaysh/cmd/throwawaysh-guest-agent")
		// Build inside the module whatever the test's working directory:
		// this file is internal/krtest/rootfs.go in it.
		if _, file, _, ok := runtime.Caller(0); ok {
			cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
		}
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			agentBuild.err = fmt.Errorf("build guest agent: %v\n%s", err, out.String())
		}
	})
	return agentBuild.path, agentBuild.err
}

// Cleanup removes what AgentBinary built.
func Cleanup() {
	if agentBuild.dir != "" {
		_ = os.RemoveAll(agentBuild.dir)
	}
}

// busyboxPath is the static busybox that test guest roots are built from,
// as rootfs/build.sh builds the default rootfs.
const busyboxPath = "/bin/busybox"

// Rootfs returns a new guest root for Launcher, built like the default
// rootfs: a static busybox at /bin/busybox with a link for each of its
// programs, and with withAgent the guest agent at its path. Launcher runs
// the workload chrooted into it, so it holds everything the guest runs.
func Rootfs(t testing.TB, withAgent bool) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("krtest needs Linux namespaces")
	}
	root := t.TempDir()
	if err := BuildRootfs(root, withAgent); err != nil {
		t.Fatal(err)
	}
	return root
}

// BuildRootfs builds the guest root that Rootfs returns in dir, an
// existing empty directory, for callers without a testing.TB such as
// Example functions. It needs Linux and a static busybox.
func BuildRootfs(root string, withAgent bool) error {
	if err := checkStatic(busyboxPath); err != nil {
		return fmt.Errorf("krtest: %v; install a static busybox (apt-get install busybox-static)", err)
	}
	for _, dir := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "root", "etc", "dev", "proc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o777|os.ModeSticky); err != nil {
		return err
	}
	if err := copyFile(busyboxPath, filepath.Join(root, "bin/busybox")); err != nil {
		return err
	}
	out, err := exec.Command(busyboxPath, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("krtest: list busybox programs: %v", err)
	}
	for _, program := range strings.Fields(string(out)) {
		link := filepath.Join(root, program)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink("/bin/busybox", link); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\n"), 0o644); err != nil {
		return err
	}
	if withAgent {
		agent, err := agentBinary()
		if err != nil {
			return err
		}
		return copyFile(agent, filepath.Join(root, "usr/local/bin/throwawaysh-guest-agent"))
	}
	return nil
}

// checkStatic returns an error unless path is an ELF executable without
// a program interpreter, which runs in a root without shared libraries.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked", path)
		}
	}
	return nil
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o755)
}
