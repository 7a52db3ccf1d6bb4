package middleware

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"

	"github.com/throwawaysh/throwawaysh/agent"
	"github.com/throwawaysh/throwawaysh/krun"
	"github.com/throwawaysh/throwawaysh/rootfs"
)

// Names under which a console session's command text and environment are
// added to the guest root. libkrun passes workload arguments and
// environment on the guest kernel command line, quoted without escaping
// and a few KiB long at most, so text from the client travels as files.
const (
	commandFile = ".throwawaysh-command"
	envFile     = ".throwawaysh-env"
)

// guestEnv is the environment of every guest workload. The host's own
// environment never reaches the guest.
var guestEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"USER=root",
	"LOGNAME=root",
	"SHELL=" + rootfs.ShellPath,
}

// Guest is the VM of a session, as the VM middleware stores it for the
// middlewares and handlers after it. Its Agent method gives them the guest
// agent of a PTY or SFTP session, to run more processes in the VM.
type Guest struct {
	// VM is the running microVM. The VM middleware kills it when the
	// handlers after it return.
	VM krun.VM
	// Mode is the way the session is connected to the VM.
	Mode Mode
	// Booted is when the VM's host process started.
	Booted time.Time

	// agentListener is the host end of the guest agent's vsock port, in
	// ModePTY and ModeSubsystem, and in ModeConsole when the rootfs has
	// the agent.
	agentListener net.Listener
	bootTimeout   time.Duration
	// ctx is the session's context, which bounds the wait in Agent.
	ctx       ssh.Context
	agentConn agentConnection

	// killing is set once the host kills the VM on purpose. agents are the
	// session's agent clients, which killVM marks with ExpectLoss.
	killing  atomic.Bool
	agentsMu sync.Mutex
	agents   []*agent.Client
}

// trackAgent records client as one of the session's agent clients, and
// marks it with ExpectLoss at once when the VM is already being killed.
func (g *Guest) trackAgent(client *agent.Client) {
	g.agentsMu.Lock()
	defer g.agentsMu.Unlock()
	g.agents = append(g.agents, client)
	if g.killing.Load() {
		client.ExpectLoss()
	}
}

// killVM kills the VM on purpose: a timeout, a shutdown, a client that went
// away or the end of the session. The agent clients then log the lost
// connection as expected rather than as a warning.
func (g *Guest) killVM() error {
	g.agentsMu.Lock()
	g.killing.Store(true)
	for _, client := range g.agents {
		client.ExpectLoss()
	}
	g.agentsMu.Unlock()
	return g.VM.Kill()
}

// GuestFrom returns the session's VM as stored by the VM middleware, and
// whether there is one. Call it in a middleware or handler that runs after
// VM, that is, one listed before VM in wish.WithMiddleware. The Guest is
// valid until VM's handler returns.
func GuestFrom(ctx ssh.Context) (*Guest, bool) {
	g, ok := ctx.Value(guestKey).(*Guest)
	return g, ok
}

// VMOption configures the VM middleware.
type VMOption func(*vmConfig)

type vmConfig struct {
	rootfs      string
	cpus        int
	memoryMiB   int
	diskMiB     int
	runtimeDir  string
	bootTimeout time.Duration
	network     bool
	// chooseSettings is set by WithSettingsFunc.
	chooseSettings func(ssh.Context, *VMSettings) error
}

// WithRootfs sets the host directory that every VM boots from. Each
// session sees it through a copy-on-write layer of its own (see
// krun.Spec.Root), so sessions never see each other's writes and the
// directory never changes.
func WithRootfs(dir string) VMOption {
	return func(c *vmConfig) { c.rootfs = dir }
}

// WithResources sets each VM's virtual CPUs and memory in MiB. Zero keeps
// the default (krun.DefaultCPUs, krun.DefaultMemoryMiB).
func WithResources(cpus, memoryMiB int) VMOption {
	return func(c *vmConfig) {
		if cpus > 0 {
			c.cpus = cpus
		}
		if memoryMiB > 0 {
			c.memoryMiB = memoryMiB
		}
	}
}

// WithSessionDisk caps, in MiB, what each session writes to its root; a
// write beyond it fails in the guest with ENOSPC. The writes take host
// memory. Zero keeps the default, krun.DefaultDiskMiB.
func WithSessionDisk(mib int) VMOption {
	return func(c *vmConfig) {
		if mib > 0 {
			c.diskMiB = mib
		}
	}
}

// WithRuntimeDir sets the directory for per-session files such as the
// guest agent's socket; the default is
// os.TempDir(). A server should open it with OpenRuntimeDir first, which
// removes what a crashed run left there. Keep the path short: unix socket
// paths must stay under about 100 bytes.
func WithRuntimeDir(dir string) VMOption {
	return func(c *vmConfig) { c.runtimeDir = dir }
}

// WithBootTimeout sets how long a PTY or SFTP session waits for the guest agent to
// connect after the VM starts. The default is 30 seconds.
func WithBootTimeout(d time.Duration) VMOption {
	return func(c *vmConfig) {
		if d > 0 {
			c.bootTimeout = d
		}
	}
}

// WithGuestNetwork turns on libkrun's socket impersonation, which gives the
// guest the host's network reach, host loopback included. Off by default.
func WithGuestNetwork(on bool) VMOption {
	return func(c *vmConfig) { c.network = on }
}

// VM returns a middleware that boots a microVM for each session with
// launcher, stores it for the handlers after it (see GuestFrom), and kills
// it and removes the session's files when they return. It must run after
// Logging, Limit and Tracker.Middleware, if used, and before Timeout and
// Route. So in wish.WithMiddleware, list it after Route and Timeout and
// before the others. The VM boots only when the shell, exec or subsystem
// request arrives, because the middleware chain runs then. WithRootfs, or
// WithSettingsFunc setting VMSettings.Rootfs, is required. When the VM
// cannot boot, the session ends with ExitVMFailed and one line on stderr,
// and the handlers after VM do not run.
//
// launcher may be krun.NewLauncher's libkrun launcher or any other
// krun.Launcher, for example one that wraps it to add to each krun.Spec.
func VM(launcher krun.Launcher, opts ...VMOption) wish.Middleware {
	cfg := vmConfig{
		cpus:        krun.DefaultCPUs,
		memoryMiB:   krun.DefaultMemoryMiB,
		runtimeDir:  os.TempDir(),
		bootTimeout: 30 * time.Second,
	}
	for _, opt := range opts {
		opt(&cfg)
	}

	return func(next ssh.Handler) ssh.Handler {
		return func(s ssh.Session) {
			s = SessionContext(s)
			if _, exists := GuestFrom(s.Context()); exists {
				fail(s, ExitVMFailed, errors.New("VM middleware: the session has a VM already; list VM once in the chain"),
					"the server is misconfigured; tell the operator")
				return
			}
			guest, cleanup, err := bootGuest(s, launcher, cfg)
			if err != nil {
				var userErr *userError
				if errors.As(err, &userErr) {
					fail(s, ExitVMFailed, err, userErr.message)
				} else {
					fail(s, ExitVMFailed, err, "the VM failed to start; try again, and tell the operator if it keeps failing")
				}
				return
			}
			defer cleanup()
			defer endUnfinished(s)

			s.Context().SetValue(guestKey, guest)
			next(s)
		}
	}
}

// endUnfinished ends a session that the handlers after VM left without an
// exit status, because one of them panicked or because no Route follows
// VM, with ExitVMFailed. The SSH library would otherwise close the channel
// without a status, which clients report as success or as nothing at all.
func endUnfinished(s ssh.Session) {
	logger := Logger(s.Context())
	if r := recover(); r != nil {
		logger.Error("panic in a handler after the VM middleware", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		fail(s, ExitVMFailed, fmt.Errorf("panic: %v", r), "the server hit an internal error; tell the operator")
		return
	}
	if _, ended := SessionResult(s.Context()); !ended {
		fail(s, ExitVMFailed, errors.New("VM middleware: no handler after VM ended the session; put Route after VM in the chain"),
			"the server is misconfigured; tell the operator")
	}
}

// userError is an error with a sentence for the SSH user, which must not
// reveal host paths or other details that only the operator needs.
type userError struct {
	err     error
	message string
}

func (e *userError) Error() string { return e.err.Error() }
func (e *userError) Unwrap() error { return e.err }

func bootGuest(s ssh.Session, launcher krun.Launcher, cfg vmConfig) (*Guest, func(), error) {
	logger := Logger(s.Context())
	cfg, err := sessionConfig(s.Context(), cfg)
	if err != nil {
		return nil, nil, err
	}
	// A settings function can take a while, and a Tracker's Shutdown that
	// came meanwhile must not cost a VM boot. fail reports the shutdown.
	if _, stopped := stopMessage(s.Context()); stopped {
		return nil, nil, errors.New("VM middleware: the session was stopped before its VM booted")
	}
	if launcher == nil || cfg.rootfs == "" {
		return nil, nil, errors.New("VM middleware: no launcher, or no rootfs from WithRootfs or WithSettingsFunc")
	}

	mode := ModeOf(s)
	if mode == ModeConsole && isLegacySCP(s.RawCommand()) && !hasProgram(cfg.rootfs, "scp") {
		return nil, nil, &userError{
			err:     errors.New("legacy scp requested and the rootfs has no scp"),
			message: "legacy scp (scp -O) needs scp in the VM, and this server's rootfs has none; run scp without -O, which uses SFTP",
		}
	}
	spec := krun.Spec{
		ID:        SessionID(s.Context()),
		Root:      cfg.rootfs,
		Env:       append([]string(nil), guestEnv...),
		CPUs:      cfg.cpus,
		MemoryMiB: cfg.memoryMiB,
		DiskMiB:   cfg.diskMiB,
		Network:   cfg.network,
	}
	guest := &Guest{Mode: mode, bootTimeout: cfg.bootTimeout, ctx: s.Context()}
	spec.Env = append(spec.Env, connectionEnv(s)...)
	// sshd starts sessions in the user's home directory.
	if info, err := os.Stat(filepath.Join(cfg.rootfs, "root")); err == nil && info.IsDir() {
		spec.Workdir = "/root"
	}

	sessionDir, err := os.MkdirTemp(cfg.runtimeDir, sessionDirPrefix)
	if err != nil {
		return nil, nil, fmt.Errorf("create session directory in %q: %w", cfg.runtimeDir, err)
	}
	removeDir := func() {
		if err := os.RemoveAll(sessionDir); err != nil {
			logger.Error("remove session directory", "dir", sessionDir, "err", err)
		}
	}

	switch mode {
	case ModePTY, ModeSubsystem:
		if err := checkAgent(cfg.rootfs, mode); err != nil {
			removeDir()
			return nil, nil, err
		}
		if err := listenAgent(guest, &spec, sessionDir); err != nil {
			removeDir()
			return nil, nil, err
		}
	default:
		shellArgs, files := consoleWorkload(s.RawCommand(), clientEnv(s, logger))
		spec.Exec, spec.Args, spec.Files = rootfs.ShellPath, shellArgs, files
		hasAgent, err := rootfs.HasAgent(cfg.rootfs)
		if err != nil {
			logger.Warn("guest agent cannot run; console session reports signals as 128+N", "err", err)
		}
		if hasAgent {
			// The agent runs the same shell on the console and reports
			// a signal by name, which the VM's exit status cannot.
			// NOTE: tested only with the krtest launcher here, not on a
			// libkrun VM, where the report travels over vsock.
			if err := listenAgent(guest, &spec, sessionDir); err != nil {
				removeDir()
				return nil, nil, err
			}
			spec.Args = append(spec.Args, "--exec", "--", rootfs.ShellPath)
			spec.Args = append(spec.Args, shellArgs...)
		}
	}

	start := time.Now()
	vm, err := launcher.Start(s.Context(), spec)
	if err != nil {
		if guest.agentListener != nil {
			_ = guest.agentListener.Close()
		}
		removeDir()
		return nil, nil, fmt.Errorf("boot vm: %w", err)
	}
	guest.VM = vm
	guest.Booted = time.Now()
	logger = logger.With("vm", vm.PID())
	if err := writeVMPID(sessionDir, vm.PID()); err != nil {
		logger.Warn("vm pid not recorded; a crash of the server could leave this vm running", "err", err)
	}
	s.Context().SetValue(loggerKey, logger)
	logger.Info("vm boot", "duration", guest.Booted.Sub(start), "mode", mode.String(), "cpus", spec.CPUs, "memory_mib", spec.MemoryMiB)
	observeVMStarted(s.Context(), guest.Booted.Sub(start))

	cleanup := func() {
		if err := guest.killVM(); err != nil {
			logger.Error("kill vm", "err", err)
		}
		guest.closeAgent()
		status, werr := vm.Wait()
		if guest.agentListener != nil {
			_ = guest.agentListener.Close()
		}
		removeDir()
		logger.Info("vm stop", "status", status, "lifetime", time.Since(guest.Booted), "err", werr)
		observeTornDown(s.Context())
	}
	return guest, cleanup, nil
}

// listenAgent creates the socket of the guest agent's vsock port in
// sessionDir and sets spec to run the agent, with the vsock flag as its only
// arguments.
func listenAgent(guest *Guest, spec *krun.Spec, sessionDir string) error {
	socketPath := filepath.Join(sessionDir, "agent.sock")
	ln, err := agent.Listen(socketPath)
	if err != nil {
		return fmt.Errorf("listen for guest agent: %w", err)
	}
	guest.agentListener = ln
	spec.Exec = rootfs.AgentPath
	spec.Args = []string{"--vsock-port", strconv.FormatUint(uint64(agent.DefaultVsockPort), 10)}
	spec.VsockPorts = []krun.VsockPort{{Port: agent.DefaultVsockPort, Path: socketPath}}
	return nil
}

// agentNeed starts the sentence that explains to the user why mode needs the
// guest agent, and agentAlternative ends it with what the user can do
// without the agent.
func agentNeed(mode Mode) (need, alternative string) {
	if mode == ModeSubsystem {
		return "SFTP and scp need the guest agent", ""
	}
	return "PTY sessions need the guest agent", ", or connect without a PTY (ssh -T)"
}

// checkAgent returns a *userError when the guest agent that mode needs is
// missing from the rootfs at dir or cannot run.
func checkAgent(dir string, mode Mode) error {
	need, alternative := agentNeed(mode)
	ok, err := rootfs.HasAgent(dir)
	if err != nil {
		return &userError{
			err:     fmt.Errorf("guest agent in rootfs %q cannot run: %w", dir, err),
			message: fmt.Sprintf("%s, and %s in this server's rootfs cannot run; ask the operator to reinstall it with ./install_guest_agent.sh%s", need, rootfs.AgentPath, alternative),
		}
	}
	if !ok {
		return &userError{
			err:     rootfs.AgentMissingError(dir),
			message: fmt.Sprintf("%s, and %s is missing from this server's rootfs; ask the operator to run ./install_guest_agent.sh on it%s", need, rootfs.AgentPath, alternative),
		}
	}
	return nil
}

// connectionEnv returns SSH_CONNECTION and SSH_CLIENT as sshd sets them:
// client address and port, then server address and port.
func connectionEnv(s ssh.Session) []string {
	clientHost, clientPort, err1 := net.SplitHostPort(s.RemoteAddr().String())
	serverHost, serverPort, err2 := net.SplitHostPort(s.LocalAddr().String())
	if err1 != nil || err2 != nil {
		return nil
	}
	return []string{
		"SSH_CONNECTION=" + clientHost + " " + clientPort + " " + serverHost + " " + serverPort,
		"SSH_CLIENT=" + clientHost + " " + clientPort + " " + serverPort,
	}
}

// consoleWorkload returns the shell arguments and files that run command
// with env exported. "." runs a file in the shell itself, so $0 is the
// shell's name and "exit 3" ends the shell, as with OpenSSH's
// "sh -c command". Without a command, a login shell (sh -l, which reads
// /etc/profile) reads commands from stdin, as sshd starts the user's shell
// when the client sends no command and no PTY.
func consoleWorkload(command string, env []string) ([]string, map[string][]byte) {
	files := map[string][]byte{}
	var steps []string
	if len(env) > 0 {
		var script strings.Builder
		for _, kv := range env {
			name, value, _ := strings.Cut(kv, "=")
			script.WriteString("export " + name + "=" + shellQuote(value) + "\n")
		}
		files[envFile] = []byte(script.String())
		steps = append(steps, ". /"+envFile)
	}
	switch {
	case command != "":
		files[commandFile] = []byte(command)
		steps = append(steps, ". /"+commandFile)
	case len(steps) > 0:
		steps = append(steps, "exec "+rootfs.ShellPath+" -l")
	}
	if len(steps) == 0 {
		return []string{"-l"}, nil
	}
	return []string{"-c", strings.Join(steps, "; ")}, files
}

// clientEnv returns the session's environment from the client's env
// requests, leaving out names a shell cannot export. Which names reach
// this point is up to FilterRequests.
func clientEnv(s ssh.Session, logger *slog.Logger) []string {
	var env []string
	for _, kv := range s.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !validEnvName(name) {
			logger.Info("env variable dropped", "reason", "not a shell variable name")
			continue
		}
		env = append(env, kv)
	}
	return env
}

// validEnvName reports whether name is a POSIX shell variable name.
func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i, r := range name {
		letter := r == '_' || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z')
		digit := r >= '0' && r <= '9'
		if !letter && !(digit && i > 0) {
			return false
		}
	}
	return true
}

// shellQuote quotes value for a POSIX shell. Inside single quotes every
// byte stands for itself except the quote itself, which becomes: quote,
// backslash, quote, quote.
func shellQuote(value string) string {
	return "'" + strings.ReplaceAll(value, "'", `'\''`) + "'"
}

// isLegacySCP reports whether command is the server side of the legacy
// scp protocol, which the OpenSSH client runs for "scp -O".
func isLegacySCP(command string) bool {
	fields := strings.Fields(command)
	if len(fields) < 2 || fields[0] != "scp" {
		return false
	}
	for _, arg := range fields[1:] {
		if strings.HasPrefix(arg, "-") && (strings.Contains(arg, "t") || strings.Contains(arg, "f")) {
			return true
		}
	}
	return false
}

// hasProgram reports whether the rootfs has name in a standard bin
// directory. It follows symbolic links on the host, so it can err towards
// yes, which only leaves the guest shell to report the missing program.
func hasProgram(root, name string) bool {
	for _, dir := range []string{"usr/local/bin", "usr/bin", "bin", "usr/sbin", "sbin"} {
		if info, err := os.Stat(filepath.Join(root, dir, name)); err == nil && !info.IsDir() {
			return true
		}
	}
	return false
}
