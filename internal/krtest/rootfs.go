package krtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
	if agentBuild.err != nil {
		t.Fatal(agentBuild.err)
	}
	return agentBuild.path
}

// Cleanup removes what AgentBinary built.
func Cleanup() {
	if agentBuild.dir != "" {
		_ = os.RemoveAll(agentBuild.dir)
	}
}

// Rootfs returns a new guest root for Launcher: /bin/sh is a copy of the
// host's shell, which Launcher runs on the host, and with withAgent the
// guest agent is installed at its path.
func Rootfs(t testing.TB, withAgent bool) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("krtest needs Linux namespaces")
	}
	root := t.TempDir()
	for _, dir := range []string{"bin", "tmp", "usr/local/bin", "root", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, "/bin/sh", filepath.Join(root, "bin/sh"))
	if withAgent {
		copyFile(t, AgentBinary(t), filepath.Join(root, "usr/local/bin/throwawaysh-guest-agent"))
	}
	return root
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o755); err != nil {
		t.Fatal(err)
	}
}
