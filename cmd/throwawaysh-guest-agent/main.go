// Command throwawaysh-guest-agent is the workload of a throwawaysh VM for a
// PTY or SFTP session. It dials the host over vsock and runs the host's
// requests in a pseudo-terminal, with the protocol of package agent. Its
// own log goes to stderr, the VM console, which the host logs.
//
// With --exec it is the workload of a session without a PTY instead: it
// runs the command after -- on its own stdin, stdout and stderr, which are
// the user's, reports how the command ended to the host, and exits with the
// command's status. It logs nothing in that role.
//
// It must build with CGO_ENABLED=0, because it is installed as a static
// binary into guest root filesystems.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mdlayher/vsock"
	"github.com/throwawaysh/throwawaysh/agent"
)

// dialTimeout bounds the retries of the dial to the host. The host listens
// before the VM starts, so the first dial normally succeeds.
const dialTimeout = 5 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("throwawaysh-guest-agent", flag.ContinueOnError)
	flags.SetOutput(stderr)
	port := flags.Uint("vsock-port", agent.DefaultVsockPort, "vsock `port` on which to dial the host")
	cid := flags.Uint("vsock-cid", vsock.Host, "vsock context `id` of the host")
	connect := flags.String("connect", "", "dial the unix socket `unix:PATH` instead of vsock (for tests that run the agent on the host)")
	version := flags.Bool("version", false, "print the version and exit")
	execute := flags.Bool("exec", false, "run the command given after -- on the agent's own stdin, stdout and stderr, report how it ended to the host, and exit with its status (sessions without a PTY)")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *version {
		fmt.Fprintf(stdout, "throwawaysh-guest-agent %s (protocol version %d)\n", agent.SoftwareVersion(), agent.ProtocolVersion)
		return 0
	}

	if *execute {
		return runConsole(flags.Args(), *connect, *cid, *port, stderr)
	}

	logger := slog.New(slog.NewTextHandler(stderr, nil))
	if flags.NArg() > 0 {
		logger.Error("unexpected arguments; the agent takes only flags", "args", flags.Args())
		return 2
	}
	dial, err := dialer(*connect, *cid, *port)
	if err != nil {
		logger.Error("invalid flags", "err", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	conn, err := dialWithRetry(ctx, dial)
	if err != nil {
		logger.Error("dial host", "err", err)
		return 1
	}
	if err := agent.Serve(ctx, conn, agent.ServeOptions{Logger: logger}); err != nil {
		logger.Error("serve", "err", err)
		return 1
	}
	return 0
}

// runConsole runs argv as the console command (--exec) and returns its
// exit status, 128+N for signal N. Its stdout and stderr are the user's,
// so the agent logs nothing. It writes to stderr only when the flags are
// invalid or the command cannot start, as init or a shell would.
func runConsole(argv []string, connect string, cid, port uint, stderr io.Writer) int {
	if len(argv) == 0 {
		fmt.Fprintln(stderr, "throwawaysh-guest-agent: --exec needs a command after --")
		return 2
	}
	dial, err := dialer(connect, cid, port)
	if err != nil {
		fmt.Fprintf(stderr, "throwawaysh-guest-agent: %v\n", err)
		return 2
	}
	// libkrun passes SIGINT to the workload. SIGTERM and SIGHUP go to the
	// command too, so that the command decides what they do and the agent
	// stays to report how it ended.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(signals)

	dialHost := func(ctx context.Context) (net.Conn, error) { return dialWithRetry(ctx, dial) }
	status, err := agent.RunConsole(context.Background(), argv, dialHost, agent.ConsoleOptions{Signals: signals})
	if errors.Is(err, agent.ErrConsoleStart) {
		fmt.Fprintf(stderr, "throwawaysh-guest-agent: %v\n", err)
	}
	// A missing report leaves the host with this status, as without the
	// agent.
	return status.Code
}

// dialer returns the function that dials the host: the unix socket of
// --connect, or vsock.
func dialer(connect string, cid, port uint) (func() (net.Conn, error), error) {
	if connect != "" {
		path, ok := strings.CutPrefix(connect, "unix:")
		if !ok || path == "" {
			return nil, fmt.Errorf("invalid --connect value %q: want unix:PATH", connect)
		}
		return func() (net.Conn, error) { return net.Dial("unix", path) }, nil
	}
	if port > 0xffffffff {
		return nil, fmt.Errorf("invalid --vsock-port value %d: want at most %d", port, uint32(0xffffffff))
	}
	if cid > 0xffffffff {
		return nil, fmt.Errorf("invalid --vsock-cid value %d: want at most %d", cid, uint32(0xffffffff))
	}
	return func() (net.Conn, error) { return vsock.Dial(uint32(cid), uint32(port), nil) }, nil
}

// dialWithRetry dials until it succeeds, ctx ends or dialTimeout passes.
func dialWithRetry(ctx context.Context, dial func() (net.Conn, error)) (net.Conn, error) {
	deadline := time.Now().Add(dialTimeout)
	for {
		conn, err := dial()
		if err == nil {
			return conn, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("gave up after %s: %w", dialTimeout, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last dial error: %w)", context.Cause(ctx), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
