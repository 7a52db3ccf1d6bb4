package middleware_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"
	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/krun"
	"github.com/throwawaysh/throwawaysh/middleware"
)

func TestMain(m *testing.M) {
	krtest.RunInitIfRequested()
	code := m.Run()
	krtest.Cleanup()
	os.Exit(code)
}

// lockedBuffer is a log destination shared by the server's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// serve starts a Wish server with options on 127.0.0.1:0 and returns its
// address.
func serve(t *testing.T, options ...ssh.Option) string {
	t.Helper()
	srv, err := wish.NewServer(append([]ssh.Option{wish.WithHostKeyPEM(testHostKey(t))}, options...)...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func testHostKey(t *testing.T) []byte {
	t.Helper()
	path := t.TempDir() + "/key"
	if _, _, err := middleware.LoadOrCreateHostKey(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func dial(t *testing.T, addr, user, password string) *gossh.Client {
	t.Helper()
	client, err := gossh.Dial("tcp", addr, &gossh.ClientConfig{
		User:            user,
		Auth:            []gossh.AuthMethod{gossh.Password(password)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// fullChain is the service's own composition around launcher.
func fullChain(root string, launcher krun.Launcher, logger *slog.Logger) []ssh.Option {
	return []ssh.Option{
		middleware.PasswordAuth("u", "p", logger),
		middleware.RawPTY(),
		wish.WithMiddleware(
			middleware.Route(),
			middleware.VM(launcher, middleware.WithRootfs(root)),
			middleware.Logging(logger),
		),
	}
}

func TestVMConsoleSpec(t *testing.T) {
	var mu sync.Mutex
	var specs []krun.Spec
	launcher := &krtest.Launcher{Started: func(s krun.Spec) {
		mu.Lock()
		specs = append(specs, s)
		mu.Unlock()
	}}
	t.Setenv("THROWAWAYSH_HOST_SECRET", "must-not-leak")
	root := krtest.Rootfs(t, false)
	addr := serve(t, fullChain(root, launcher, nil)...)

	session, err := dial(t, addr, "u", "p").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	command := "echo \"quoted\" 'x'"
	out, err := session.Output(command)
	if err != nil {
		t.Fatalf("run: %v (output %q)", err, out)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(specs) != 1 {
		t.Fatalf("launcher started %d VMs, want 1", len(specs))
	}
	spec := specs[0]
	if spec.Root != root {
		t.Errorf("root = %q, want %q", spec.Root, root)
	}
	if spec.Exec != "/bin/sh" {
		t.Errorf("exec = %q, want /bin/sh", spec.Exec)
	}
	for _, arg := range spec.Args {
		if strings.Contains(arg, "quoted") {
			t.Errorf("the command text travels in the arguments %q", spec.Args)
		}
	}
	var fileContent string
	for _, content := range spec.Files {
		fileContent = string(content)
	}
	if fileContent != command {
		t.Errorf("command file = %q, want %q", fileContent, command)
	}
	if spec.Network {
		t.Error("guest network is on by default")
	}
	if len(spec.VsockPorts) != 0 {
		t.Errorf("console session has vsock ports %v", spec.VsockPorts)
	}
	for _, kv := range spec.Env {
		if strings.Contains(kv, "must-not-leak") {
			t.Errorf("host environment reached the guest: %q", kv)
		}
	}
	if spec.CPUs != krun.DefaultCPUs || spec.MemoryMiB != krun.DefaultMemoryMiB {
		t.Errorf("resources = %d CPUs, %d MiB, want the defaults", spec.CPUs, spec.MemoryMiB)
	}
}

func TestVMPTYSpecUsesAgentOverVsock(t *testing.T) {
	var mu sync.Mutex
	var specs []krun.Spec
	launcher := &krtest.Launcher{Started: func(s krun.Spec) {
		mu.Lock()
		specs = append(specs, s)
		mu.Unlock()
	}}
	addr := serve(t, fullChain(krtest.Rootfs(t, true), launcher, nil)...)

	session, err := dial(t, addr, "u", "p").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := session.RequestPty("xterm", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	if out, err := session.CombinedOutput("true"); err != nil {
		t.Fatalf("run: %v (output %q)", err, out)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(specs) != 1 {
		t.Fatalf("launcher started %d VMs, want 1", len(specs))
	}
	spec := specs[0]
	if spec.Exec != "/usr/local/bin/throwawaysh-guest-agent" {
		t.Errorf("exec = %q, want the guest agent", spec.Exec)
	}
	if len(spec.VsockPorts) != 1 || !strings.HasSuffix(spec.VsockPorts[0].Path, ".sock") {
		t.Fatalf("vsock ports = %+v, want one unix socket", spec.VsockPorts)
	}
	if len(spec.VsockPorts[0].Path) >= 100 {
		t.Errorf("socket path %q is too long for sockaddr_un", spec.VsockPorts[0].Path)
	}
	if _, err := os.Stat(spec.VsockPorts[0].Path); !os.IsNotExist(err) {
		t.Errorf("the agent socket %s is left after the session (stat err %v)", spec.VsockPorts[0].Path, err)
	}
}

func TestLoggingStartAndEndCarrySessionID(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	addr := serve(t, fullChain(krtest.Rootfs(t, false), &krtest.Launcher{}, logger)...)

	session, err := dial(t, addr, "u", "p").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	_ = session.Run("exit 6")

	// "session end" is written after the client has its exit status.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), `"session end"`) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	records := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		records[rec["msg"].(string)] = rec
	}
	start, end, boot := records["session start"], records["session end"], records["vm boot"]
	if start == nil || end == nil || boot == nil {
		t.Fatalf("missing session start, vm boot or session end in log:\n%s", logs.String())
	}
	id, _ := start["session"].(string)
	if id == "" || end["session"] != id || boot["session"] != id {
		t.Errorf("session ids differ or are empty: start %v, boot %v, end %v", start["session"], boot["session"], end["session"])
	}
	if start["user"] != "u" || start["mode"] != "console" || start["remote"] == nil {
		t.Errorf("session start = %v, want user, remote and mode console", start)
	}
	if end["status"] != float64(6) || end["duration"] == nil {
		t.Errorf("session end = %v, want status 6 and a duration", end)
	}
	if boot["duration"] == nil {
		t.Errorf("vm boot = %v, want a duration", boot)
	}
}

func TestRouteWithoutVMFailsClearly(t *testing.T) {
	addr := serve(t,
		middleware.PasswordAuth("u", "p", nil),
		wish.WithMiddleware(middleware.Route()),
	)
	session, err := dial(t, addr, "u", "p").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	session.Stderr = &stderr
	err = session.Run("true")
	exitErr, ok := err.(*gossh.ExitError)
	if !ok || exitErr.ExitStatus() != middleware.ExitVMFailed {
		t.Fatalf("err = %v, want exit status %d", err, middleware.ExitVMFailed)
	}
	if !strings.HasPrefix(stderr.String(), "throwawaysh: ") || !strings.Contains(stderr.String(), "operator") {
		t.Errorf("stderr = %q, want a throwawaysh message for the user", stderr.String())
	}
}

func TestPasswordAuthChecksUserAndPassword(t *testing.T) {
	addr := serve(t, middleware.PasswordAuth("alice", "open sesame", nil),
		wish.WithMiddleware(func(ssh.Handler) ssh.Handler { return func(s ssh.Session) { _ = s.Exit(0) } }))

	tests := []struct {
		user, password string
		ok             bool
	}{
		{"alice", "open sesame", true},
		{"alice", "open sesam", false},
		{"alice", "open sesame ", false},
		{"alic", "open sesame", false},
		{"", "", false},
	}
	for _, tt := range tests {
		client, err := gossh.Dial("tcp", addr, &gossh.ClientConfig{
			User:            tt.user,
			Auth:            []gossh.AuthMethod{gossh.Password(tt.password)},
			HostKeyCallback: gossh.InsecureIgnoreHostKey(),
			Timeout:         10 * time.Second,
		})
		if (err == nil) != tt.ok {
			t.Errorf("user %q password %q: err = %v, want ok=%v", tt.user, tt.password, err, tt.ok)
		}
		if client != nil {
			_ = client.Close()
		}
	}
}

// runPTY runs command in a PTY session on addr and returns its exit status
// and what the client received on stdout and stderr together.
func runPTY(t *testing.T, addr, command string) (int, string) {
	t.Helper()
	session, err := dial(t, addr, "u", "p").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := session.RequestPty("xterm", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	session.Stdout, session.Stderr = &out, &out
	err = session.Run(command)
	exitErr, ok := err.(*gossh.ExitError)
	if err != nil && !ok {
		t.Fatalf("session ended without an exit status: %v", err)
	}
	if err == nil {
		return 0, out.String()
	}
	return exitErr.ExitStatus(), out.String()
}

// rootfsWithAgent returns a test root whose agent file holds content.
func rootfsWithAgent(t *testing.T, content string) string {
	t.Helper()
	root := krtest.Rootfs(t, false)
	if err := os.WriteFile(root+"/usr/local/bin/throwawaysh-guest-agent", []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestPTYAgentThatCannotRunFails(t *testing.T) {
	// Not an ELF binary and no "#!": the guest's exec fails, and init
	// reports 126 before any agent could connect.
	root := rootfsWithAgent(t, "this is not a program\n")
	addr := serve(t, fullChain(root, &krtest.Launcher{}, nil)...)

	status, out := runPTY(t, addr, "true")
	if status != middleware.ExitVMFailed {
		t.Errorf("exit status = %d, want %d", status, middleware.ExitVMFailed)
	}
	if !strings.Contains(out, "cannot run in the VM") || !strings.Contains(out, "install_guest_agent.sh") {
		t.Errorf("client output = %q, want the reason and the fix", out)
	}
}

func TestPTYAgentThatNeverConnectsTimesOut(t *testing.T) {
	root := rootfsWithAgent(t, "#!/bin/sh\nexec sleep 31337\n")
	addr := serve(t,
		middleware.PasswordAuth("u", "p", nil),
		middleware.RawPTY(),
		wish.WithMiddleware(
			middleware.Route(),
			middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(root), middleware.WithBootTimeout(300*time.Millisecond)),
		),
	)

	status, out := runPTY(t, addr, "true")
	if status != middleware.ExitVMFailed {
		t.Errorf("exit status = %d, want %d", status, middleware.ExitVMFailed)
	}
	if !strings.Contains(out, "did not become ready within 300ms") {
		t.Errorf("client output = %q, want the timeout", out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for sleeperAlive(t, "sleep 31337") {
		if time.Now().After(deadline) {
			t.Fatal("the VM of a timed-out session is still running")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sleeperAlive reports whether a live process has command line cmdline.
func sleeperAlive(t *testing.T, cmdline string) bool {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || strings.ReplaceAll(strings.TrimRight(string(data), "\x00"), "\x00", " ") != cmdline {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		// A zombie has ended; only its parent has not reaped it yet.
		if err == nil && !strings.Contains(string(stat), ") Z ") {
			return true
		}
	}
	return false
}

// The SSH library hands window changes over on a channel with room for
// one and blocks the connection's request handling until someone reads.
// A client that resizes before it starts a shell, or after its session
// failed early, must not wedge the connection.
func TestWindowChangesBeforeShellDoNotWedge(t *testing.T) {
	for _, withAgent := range []bool{true, false} {
		addr := serve(t, fullChain(krtest.Rootfs(t, withAgent), &krtest.Launcher{}, nil)...)
		client := dial(t, addr, "u", "p")

		session, err := client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := session.RequestPty("xterm", 24, 80, nil); err != nil {
			t.Fatal(err)
		}
		if !withAgent {
			// The session fails in the VM middleware, before Route.
			_ = session.Start("true")
		}
		for i := 0; i < 100; i++ {
			if err := session.WindowChange(30, 100+i); err != nil && withAgent {
				t.Fatalf("window-change %d: %v", i, err)
			}
		}

		opened := make(chan error, 1)
		go func() {
			second, err := client.NewSession()
			if err == nil {
				_, err = second.Output("echo second")
			}
			opened <- err
		}()
		select {
		case err := <-opened:
			if err != nil {
				t.Errorf("agent=%v: second session: %v", withAgent, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("agent=%v: the connection is wedged after window changes", withAgent)
		}
	}
}

func TestPasswordAuthRejectsEmptyPassword(t *testing.T) {
	addr := serve(t, middleware.PasswordAuth("demo", "", nil),
		wish.WithMiddleware(func(ssh.Handler) ssh.Handler { return func(s ssh.Session) { _ = s.Exit(0) } }))
	client, err := gossh.Dial("tcp", addr, &gossh.ClientConfig{
		User:            "demo",
		Auth:            []gossh.AuthMethod{gossh.Password("")},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	})
	if err == nil {
		_ = client.Close()
		t.Fatal("an empty password was accepted")
	}
}
