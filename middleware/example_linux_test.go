package middleware_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"
	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/agent"
	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// The examples boot their VMs with krtest.Launcher, which runs the guest
// workload as a host process in a jail. A real server passes the launcher
// of krun.NewLauncher instead and calls krun.RunChildIfRequested first
// thing in main.

// ExampleVM composes the smallest chain that runs a command in a VM: VM
// boots it and Route connects the session to it. Route is listed first
// because it runs last.
func ExampleVM() {
	root := exampleRootfs(false)
	defer os.RemoveAll(root)
	addr, stop := startExampleServer(
		middleware.PasswordAuth("demo", "secret", nil),
		wish.WithMiddleware(
			middleware.Route(),
			middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(root)),
			middleware.Logging(nil),
		),
	)
	defer stop()

	out, status := runExample(addr, "demo", "secret", "echo hello from $(uname -s)", false)
	fmt.Printf("%q, exit status %d\n", out, status)
	// Output: "hello from Linux\n", exit status 0
}

// ExampleRoute shows the two ways Route connects a session: without a PTY
// the command is the VM's workload on its console, and with one the guest
// agent runs it in a PTY inside the VM. PTY sessions need RawPTY and a
// rootfs with the agent.
func ExampleRoute() {
	root := exampleRootfs(true)
	defer os.RemoveAll(root)
	addr, stop := startExampleServer(
		middleware.PasswordAuth("demo", "secret", nil),
		middleware.RawPTY(),
		wish.WithMiddleware(
			middleware.Route(),
			middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(root)),
		),
	)
	defer stop()

	out, _ := runExample(addr, "demo", "secret", "tty", false)
	fmt.Printf("without a PTY: %q\n", out)
	out, _ = runExample(addr, "demo", "secret", "tty", true)
	fmt.Printf("with a PTY: %v\n", strings.HasPrefix(out, "/dev/pts/"))
	// Output:
	// without a PTY: "not a tty\n"
	// with a PTY: true
}

// ExampleLimit admits one session at a time. Limit runs after Logging and
// before VM, so a rejected session never boots a VM.
func ExampleLimit() {
	root := exampleRootfs(false)
	defer os.RemoveAll(root)
	addr, stop := startExampleServer(
		middleware.PasswordAuth("demo", "secret", nil),
		wish.WithMiddleware(
			middleware.Route(),
			middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(root)),
			middleware.Limit(middleware.WithMaxSessions(1)),
			middleware.Logging(nil),
		),
	)
	defer stop()

	// The first session waits for input, so it stays active.
	client, err := dialExample(addr, "demo", "secret")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	first, err := client.NewSession()
	if err != nil {
		fmt.Println(err)
		return
	}
	stdin, _ := first.StdinPipe()
	stdout, _ := first.StdoutPipe()
	if err := first.Start("echo ready; cat"); err != nil {
		fmt.Println(err)
		return
	}
	ready := make([]byte, len("ready\n"))
	if _, err := io.ReadFull(stdout, ready); err != nil {
		fmt.Println(err)
		return
	}

	out, status := runExample(addr, "demo", "secret", "true", false)
	fmt.Printf("second session: %sexit status %d\n", out, status)
	_ = stdin.Close()
	fmt.Println("first session:", first.Wait())
	// Output:
	// second session: throwawaysh: session rejected: the server has reached its limit of 1 session; try again later
	// exit status 251
	// first session: <nil>
}

// ExamplePasswordAuth accepts one user name and password. It needs no VM,
// so this server greets with a handler of its own.
func ExamplePasswordAuth() {
	addr, stop := startExampleServer(
		middleware.PasswordAuth("demo", "secret", nil),
		wish.WithMiddleware(func(ssh.Handler) ssh.Handler {
			return func(s ssh.Session) {
				fmt.Fprintf(s, "hello %s\n", s.User())
			}
		}),
	)
	defer stop()

	if _, err := dialExample(addr, "demo", "wrong"); err != nil {
		fmt.Println("wrong password: rejected")
	}
	out, _ := runExample(addr, "demo", "secret", "", false)
	fmt.Print(out)
	// Output:
	// wrong password: rejected
	// hello demo
}

// ExampleGuestFrom reads the session's VM in a middleware of the app's own
// between VM and Route, and greets the client on stderr before Route
// connects the session.
func ExampleGuestFrom() {
	banner := func(next ssh.Handler) ssh.Handler {
		return func(s ssh.Session) {
			if guest, ok := middleware.GuestFrom(s.Context()); ok {
				fmt.Fprintf(s.Stderr(), "your VM is up, %s mode\n", guest.Mode)
			}
			next(s)
		}
	}
	root := exampleRootfs(false)
	defer os.RemoveAll(root)
	addr, stop := startExampleServer(
		middleware.PasswordAuth("demo", "secret", nil),
		wish.WithMiddleware(
			middleware.Route(),
			banner,
			middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(root)),
		),
	)
	defer stop()

	out, _ := runExample(addr, "demo", "secret", "echo hi", false)
	fmt.Print(out)
	// Output:
	// your VM is up, console mode
	// hi
}

// ExampleGuest_Agent runs a second command in a PTY session's VM through
// the guest agent, before Route starts the user's shell, to prepare a file
// that the user then finds.
func ExampleGuest_Agent() {
	prepare := func(next ssh.Handler) ssh.Handler {
		return func(s ssh.Session) {
			guest, ok := middleware.GuestFrom(s.Context())
			if !ok {
				// No VM middleware before this one: Route reports that.
				next(s)
				return
			}
			if client, err := guest.Agent(); err == nil {
				ctx, cancel := context.WithTimeout(s.Context(), 10*time.Second)
				defer cancel()
				proc, err := client.Start(ctx, agent.StartRequest{Command: "echo 'welcome' > /root/motd", TTY: true})
				if err == nil {
					_, _ = io.Copy(io.Discard, proc)
					_, _ = proc.Wait()
				}
			}
			// On an error Route reports it to the client.
			next(s)
		}
	}
	root := exampleRootfs(true)
	defer os.RemoveAll(root)
	addr, stop := startExampleServer(
		middleware.PasswordAuth("demo", "secret", nil),
		middleware.RawPTY(),
		wish.WithMiddleware(
			middleware.Route(),
			prepare,
			middleware.VM(&krtest.Launcher{}, middleware.WithRootfs(root)),
		),
	)
	defer stop()

	out, _ := runExample(addr, "demo", "secret", "cat /root/motd", true)
	fmt.Printf("%q\n", out)
	// Output: "welcome\r\n"
}

// ExampleWithSettingsFunc gives one user a bigger VM from another rootfs,
// and rejects a user name with a message of its own.
func ExampleWithSettingsFunc() {
	root := exampleRootfs(false)
	defer os.RemoveAll(root)
	bigRoot := exampleRootfs(false)
	defer os.RemoveAll(bigRoot)
	_ = os.WriteFile(filepath.Join(bigRoot, "etc/motd"), []byte("the big image\n"), 0o644)

	choose := func(ctx ssh.Context, settings *middleware.VMSettings) error {
		switch ctx.User() {
		case "root":
			return middleware.NewUserError("log in as demo or big", nil)
		case "big":
			settings.Rootfs = bigRoot
			settings.CPUs, settings.MemoryMiB = 2, 1024
		}
		return nil
	}
	addr, stop := startExampleServer(
		middleware.AllowPasswordless(nil),
		wish.WithMiddleware(
			middleware.Route(),
			middleware.VM(&krtest.Launcher{},
				middleware.WithRootfs(root),
				middleware.WithSettingsFunc(choose),
			),
		),
	)
	defer stop()

	for _, user := range []string{"demo", "big", "root"} {
		out, status := runExample(addr, user, "", "cat /etc/motd 2>/dev/null || echo the default image", false)
		fmt.Printf("%s: %s", user, out)
		if status != 0 {
			fmt.Printf("%s: exit status %d\n", user, status)
		}
	}
	// Output:
	// demo: the default image
	// big: the big image
	// root: throwawaysh: log in as demo or big
	// root: exit status 253
}

// exampleRootfs returns a new guest root, with the guest agent when
// withAgent is set, or "" after printing why it could not be built.
func exampleRootfs(withAgent bool) string {
	root, err := os.MkdirTemp("", "example-root-")
	if err != nil {
		fmt.Println(err)
		return ""
	}
	if err := krtest.BuildRootfs(root, withAgent); err != nil {
		fmt.Println(err)
	}
	return root
}

// startExampleServer starts a Wish server with options on 127.0.0.1:0.
func startExampleServer(options ...ssh.Option) (addr string, stop func()) {
	keyDir, err := os.MkdirTemp("", "example-key-")
	if err != nil {
		panic(err)
	}
	signer, _, err := middleware.LoadOrCreateHostKey(filepath.Join(keyDir, "host_key"))
	if err != nil {
		panic(err)
	}
	hostKey := func(s *ssh.Server) error {
		s.AddHostKey(signer)
		return nil
	}
	srv, err := wish.NewServer(append([]ssh.Option{hostKey}, options...)...)
	if err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), func() {
		_ = srv.Close()
		_ = os.RemoveAll(keyDir)
	}
}

func dialExample(addr, user, password string) (*gossh.Client, error) {
	return gossh.Dial("tcp", addr, &gossh.ClientConfig{
		User:            user,
		Auth:            []gossh.AuthMethod{gossh.Password(password)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	})
}

// runExample runs command as user, with a PTY when pty is set, and returns
// its stderr followed by its stdout, and its exit status.
func runExample(addr, user, password, command string, pty bool) (string, int) {
	client, err := dialExample(addr, user, password)
	if err != nil {
		return err.Error(), -1
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return err.Error(), -1
	}
	if pty {
		if err := session.RequestPty("xterm", 24, 80, nil); err != nil {
			return err.Error(), -1
		}
	}
	var stdout, stderr bytes.Buffer
	session.Stdout, session.Stderr = &stdout, &stderr
	err = session.Run(command)
	var exitErr *gossh.ExitError
	status := 0
	switch {
	case errors.As(err, &exitErr):
		status = exitErr.ExitStatus()
	case err != nil:
		return err.Error(), -1
	}
	return stderr.String() + stdout.String(), status
}
