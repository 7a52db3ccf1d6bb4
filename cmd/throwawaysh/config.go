package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/throwawaysh/throwawaysh/internal/sandbox"
	"github.com/throwawaysh/throwawaysh/krun"
	"github.com/throwawaysh/throwawaysh/middleware"
	"github.com/throwawaysh/throwawaysh/rootfs"
)

// config is the service's configuration. Every flag has an environment
// variable; kong applies the variable first and a flag given on the command
// line replaces it.
type config struct {
	ListenAddr  string `name:"listen-addr" env:"SSH_ADDR" default:":2222" help:"Address to listen on for SSH connections, HOST:PORT or :PORT."`
	HostKeyPath string `name:"host-key-path" env:"SSH_HOST_KEY_PATH" default:"server_key" help:"SSH host key file (ed25519 created there, mode 0600, when missing)."`
	Rootfs      string `name:"rootfs" env:"SSH_ROOTFS" placeholder:"DIR" help:"Guest root directory that every VM boots from (required; build one with 'make rootfs')."`
	Username    string `name:"username" env:"SSH_USERNAME" default:"test" help:"User name accepted by password and public key authentication."`
	// Password is read from PasswordFlag by parseConfig, because its
	// default depends on whether AuthorizedKeys is set.
	Password       string  `kong:"-"`
	PasswordFlag   *string `name:"password" env:"SSH_PASSWORD" help:"Password accepted by password authentication. Default: test, or none (keys only) when --authorized-keys is set. Prefer the variable: flags show up in ps."`
	AuthorizedKeys string  `name:"authorized-keys" env:"SSH_AUTHORIZED_KEYS" placeholder:"PATH" help:"OpenSSH authorized_keys file whose keys may log in as --username (public key authentication). Key options such as from= are not supported."`
	// AllowPasswordless is read from the flag, else from its variable by
	// parseConfig: kong would reject an invalid variable even when the
	// flag given on the command line replaces it.
	AllowPasswordless     bool     `kong:"-"`
	AllowPasswordlessFlag *bool    `name:"allow-passwordless" help:"Accept any user without a password (SSH 'none' authentication). Variable: SSH_ALLOW_PASSWORDLESS."`
	LogLevel              string   `name:"log-level" env:"SSH_LOG_LEVEL" default:"info" help:"Log level: debug, info, warn or error."`
	LogFormat             string   `name:"log-format" env:"SSH_LOG_FORMAT" default:"text" help:"Log format: text or json."`
	RuntimeDir            string   `name:"runtime-dir" env:"SSH_RUNTIME_DIR" placeholder:"DIR" help:"Directory for per-session agent sockets and VM process ids, cleaned at start after a crash (default /run/throwawaysh for root, else $XDG_RUNTIME_DIR/throwawaysh or the temporary directory)."`
	AcceptEnv             []string `name:"accept-env" env:"SSH_ACCEPT_ENV" sep:"," placeholder:"NAME" help:"Environment variables a client may send into the guest, beside LANG, LC_*, TZ and COLORTERM; shell patterns allowed. LD_* is never accepted."`
	GuestNetwork          string   `name:"guest-network" env:"SSH_GUEST_NETWORK" default:"off" help:"Guest networking: off, or tsi, which gives every guest the host's network reach, host loopback included."`

	// parseNumbers sets the numbers and the duration below from the
	// *Flag strings. kong would reject an invalid variable even when the
	// flag replaces it, and its message names neither the variable nor
	// the accepted range.
	VMCPUs                   int           `kong:"-"`
	VMCPUsFlag               string        `name:"vm-cpus" env:"SSH_VM_CPUS" default:"1" placeholder:"N" help:"Virtual CPUs of each VM, 1 to 255 (default ${default})."`
	VMMemoryMiB              int           `kong:"-"`
	VMMemoryMiBFlag          string        `name:"vm-memory-mib" env:"SSH_VM_MEMORY_MIB" default:"256" placeholder:"MIB" help:"Memory of each VM in MiB, 32 to 65536 (default ${default})."`
	SessionDiskMiB           int           `kong:"-"`
	SessionDiskMiBFlag       string        `name:"session-disk-mib" env:"SSH_SESSION_DISK_MIB" default:"256" placeholder:"MIB" help:"MiB each session may write to its copy of the rootfs, 1 to 1048576 (default ${default}); the writes take host memory and vanish with the session."`
	HandshakeTimeout         time.Duration `kong:"-"`
	HandshakeTimeoutFlag     string        `name:"handshake-timeout" env:"SSH_HANDSHAKE_TIMEOUT" default:"30s" placeholder:"DURATION" help:"Time a client has to finish the SSH handshake and authentication, 1s to 10m (default ${default})."`
	MaxStartups              int           `kong:"-"`
	MaxStartupsFlag          string        `name:"max-startups" env:"SSH_MAX_STARTUPS" default:"100" placeholder:"N" help:"Maximum number of connections that have not finished authentication, in all; further ones are closed at once (default ${default})."`
	PerSourceMaxStartups     int           `kong:"-"`
	PerSourceMaxStartupsFlag string        `name:"per-source-max-startups" env:"SSH_PER_SOURCE_MAX_STARTUPS" default:"10" placeholder:"N" help:"Maximum number of connections that have not finished authentication from one IPv4 address or IPv6 /64 prefix; further ones are closed at once (default ${default})."`

	// authFailures configures how repeated failed logins are slowed
	// down. The service uses the defaults; tests record the delays.
	authFailures middleware.FailureTrackerConfig `kong:"-"`

	// The limits, timeouts and keepalive settings below are read as text
	// and parsed by resolveLimits into the fields after them: kong would
	// reject an invalid or empty variable even when a flag replaces it,
	// and its message would name neither the variable nor what is accepted.
	MaxSessionsText              string `name:"max-sessions" env:"SSH_MAX_SESSIONS" default:"${max_sessions}" placeholder:"N" help:"Maximum active sessions on the server, each with its own VM. Size it to the host's memory: each VM reserves its guest memory (256 MiB by default), so 32 sessions reserve 8 GiB. 0 means no limit. Default: ${default}."`
	MaxSessionsPerIPText         string `name:"max-sessions-per-ip" env:"SSH_MAX_SESSIONS_PER_IP" default:"${max_sessions_per_ip}" placeholder:"N" help:"Maximum active sessions from one client IP address. Clients behind one NAT share an address; raise it for a class on one network. 0 means no limit. Default: ${default}."`
	MaxSessionsPerConnectionText string `name:"max-sessions-per-connection" env:"SSH_MAX_SESSIONS_PER_CONNECTION" default:"${max_sessions_per_connection}" placeholder:"N" help:"Maximum active sessions on one SSH connection (connection sharing with ControlMaster), as OpenSSH's MaxSessions, which is 10 by default. 0 means no limit. Default: ${default}."`
	SessionTimeoutText           string `name:"session-timeout" env:"SSH_SESSION_TIMEOUT" default:"${session_timeout}" placeholder:"DURATION" help:"Maximum wall-clock time of a session, such as 30m or 2h. The VM is then killed and the client gets exit status 250. 0 means no limit. Default: ${default}."`
	IdleTimeoutText              string `name:"idle-timeout" env:"SSH_IDLE_TIMEOUT" default:"${idle_timeout}" placeholder:"DURATION" help:"End a session after this long without input from the client or output to it; exit status 250. The default, 15m, leaves time to read or think, but frees an abandoned session's VM long before the session timeout. A command that runs this long without output ends too. 0 turns it off."`
	KeepaliveIntervalText        string `name:"keepalive-interval" env:"SSH_KEEPALIVE_INTERVAL" default:"${keepalive_interval}" placeholder:"DURATION" help:"Send each client a keepalive this often, as OpenSSH's ClientAliveInterval, and close connections that stop replying. 0 turns keepalives off; otherwise at least 1s. Default: ${default}."`
	KeepaliveCountMaxText        string `name:"keepalive-count-max" env:"SSH_KEEPALIVE_COUNT_MAX" default:"${keepalive_count_max}" placeholder:"N" help:"Close a connection whose keepalive has gone unanswered for this many intervals, as OpenSSH's ClientAliveCountMax; at least 1. Default: ${default}."`

	MaxSessions              int           `kong:"-"`
	MaxSessionsPerIP         int           `kong:"-"`
	MaxSessionsPerConnection int           `kong:"-"`
	SessionTimeout           time.Duration `kong:"-"`
	IdleTimeout              time.Duration `kong:"-"`
	KeepaliveInterval        time.Duration `kong:"-"`
	KeepaliveCountMax        int           `kong:"-"`

	CiphersText string   `name:"ciphers" env:"SSH_CIPHERS" placeholder:"LIST" help:"Ciphers the server offers, comma-separated, as sshd_config's Ciphers: a list replaces the default, +LIST adds to it, -LIST takes from it. The default leaves out chacha20-poly1305@openssh.com, which Go runs slowly on amd64 (see README)."`
	Ciphers     []string `kong:"-"`

	MetricsAddr string `name:"metrics-addr" env:"SSH_METRICS_ADDR" placeholder:"HOST:PORT" help:"Serve Prometheus metrics over HTTP at /metrics on this address, HOST:PORT or :PORT (default off)."`

	Version bool `name:"version" help:"Print the version and exit."`
	Help    bool `name:"help" short:"h" help:"Show this help and exit."`
}

var (
	logLevels     = []string{"debug", "info", "warn", "error"}
	logFormats    = []string{"text", "json"}
	guestNetworks = []string{"off", "tsi"}
)

// Ranges of the numeric flags.
const (
	// maxVMMemoryMiB is far above what a throwaway session needs, and low
	// enough to catch a value given in KiB by mistake. libkrun itself
	// accepts up to 2^32-1 MiB.
	maxVMMemoryMiB = 64 << 10

	minHandshakeTimeout = time.Second
	maxHandshakeTimeout = 10 * time.Minute
)

// maxRuntimeDirBytes bounds --runtime-dir so that a session's agent socket,
// DIR/session-NNNNNNNNNN/agent.sock, stays under the 100 bytes that
// krun.Spec.Validate accepts for a unix socket path.
const maxRuntimeDirBytes = 64

// defaultRuntimeDir returns the runtime directory for an unset
// --runtime-dir. Root gets /run/throwawaysh, as other system services do.
// Another user gets a directory in their XDG runtime directory, or one
// named after the user id in the temporary directory.
func defaultRuntimeDir() string {
	if os.Geteuid() == 0 {
		return "/run/throwawaysh"
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" && filepath.IsAbs(dir) {
		return filepath.Join(dir, "throwawaysh")
	}
	return filepath.Join(os.TempDir(), "throwawaysh-"+strconv.Itoa(os.Geteuid()))
}

// usageError is an invalid flag or variable; the service exits with
// status 2 for it.
type usageError struct{ message string }

func (e *usageError) Error() string { return e.message }

// parseConfig reads flags from args and variables from the environment.
// When --help or --version is given it writes the help or version to stdout
// and returns done=true.
func parseConfig(args []string, stdout io.Writer) (cfg config, done bool, err error) {
	parser, err := kong.New(&cfg,
		kong.Name("throwawaysh"),
		kong.Description("SSH server that gives every session its own throwaway libkrun microVM."),
		kong.NoDefaultHelp(),
		limitDefaults,
		kong.Writers(stdout, stdout),
	)
	if err != nil {
		return cfg, false, fmt.Errorf("build flag parser: %w", err)
	}
	ctx, err := parser.Parse(args)
	if err != nil {
		return cfg, false, &usageError{describeParseError(err)}
	}
	if cfg.Help {
		err := ctx.PrintUsage(false)
		return cfg, true, err
	}
	if cfg.Version {
		_, err := fmt.Fprintf(stdout, "throwawaysh %s\n", version)
		return cfg, true, err
	}
	if err := cfg.resolvePasswordless(); err != nil {
		return cfg, false, &usageError{err.Error()}
	}
	if cfg.RuntimeDir == "" {
		cfg.RuntimeDir = defaultRuntimeDir()
	}
	if err := cfg.parseNumbers(); err != nil {
		return cfg, false, &usageError{err.Error()}
	}
	cfg.resolvePassword()
	if err := cfg.resolveLimits(); err != nil {
		return cfg, false, &usageError{err.Error()}
	}
	if cfg.Ciphers, err = parseCiphers(cfg.CiphersText); err != nil {
		return cfg, false, &usageError{err.Error()}
	}
	cfg.CiphersText = ""
	if err := cfg.validate(); err != nil {
		return cfg, false, &usageError{err.Error()}
	}
	return cfg, false, nil
}

// describeParseError adds the way to the full usage to kong's errors.
func describeParseError(err error) string {
	return err.Error() + " (see --help)"
}

// resolvePasswordless sets AllowPasswordless from the flag if it was
// given, else from SSH_ALLOW_PASSWORDLESS; an empty variable counts as
// unset.
func (c *config) resolvePasswordless() error {
	if c.AllowPasswordlessFlag != nil {
		c.AllowPasswordless = *c.AllowPasswordlessFlag
		c.AllowPasswordlessFlag = nil
		return nil
	}
	value := os.Getenv("SSH_ALLOW_PASSWORDLESS")
	switch strings.ToLower(value) {
	case "":
		c.AllowPasswordless = false
	case "true", "1", "yes":
		c.AllowPasswordless = true
	case "false", "0", "no":
		c.AllowPasswordless = false
	default:
		return fmt.Errorf("invalid SSH_ALLOW_PASSWORDLESS value %q: must be true, false, 1, 0, yes or no", value)
	}
	return nil
}

// numberFlag is a flag that takes a whole number, with its accepted range.
type numberFlag struct {
	name, variable string
	min            int
	// max is the largest value accepted, or 0 for no upper bound.
	max int
}

var (
	vmCPUsFlag               = numberFlag{"--vm-cpus", "SSH_VM_CPUS", 1, krun.MaxCPUs}
	vmMemoryFlag             = numberFlag{"--vm-memory-mib", "SSH_VM_MEMORY_MIB", krun.MinMemoryMiB, maxVMMemoryMiB}
	maxStartupsFlag          = numberFlag{"--max-startups", "SSH_MAX_STARTUPS", 1, 0}
	perSourceMaxStartupsFlag = numberFlag{"--per-source-max-startups", "SSH_PER_SOURCE_MAX_STARTUPS", 1, 0}
	sessionDiskFlag          = numberFlag{"--session-disk-mib", "SSH_SESSION_DISK_MIB", sandbox.MinDiskMiB, sandbox.MaxDiskMiB}
)

// check returns an error when n is out of the flag's range.
func (f numberFlag) check(n int) error {
	if n < f.min || (f.max > 0 && n > f.max) {
		return f.invalid(strconv.Itoa(n))
	}
	return nil
}

// invalid returns the error for the value text, naming flag, variable and
// range.
func (f numberFlag) invalid(text string) error {
	accepted := fmt.Sprintf("a whole number of at least %d", f.min)
	if f.max > 0 {
		accepted = fmt.Sprintf("a whole number from %d to %d", f.min, f.max)
	}
	return fmt.Errorf("invalid %s (%s) %q: must be %s", f.name, f.variable, text, accepted)
}

// parseNumbers sets the numeric fields and HandshakeTimeout from their
// *Flag strings, which kong filled from the flag or else the variable, and
// clears those strings. validate checks the ranges.
func (c *config) parseNumbers() error {
	numbers := []struct {
		flag  numberFlag
		text  *string
		value *int
	}{
		{vmCPUsFlag, &c.VMCPUsFlag, &c.VMCPUs},
		{vmMemoryFlag, &c.VMMemoryMiBFlag, &c.VMMemoryMiB},
		{maxStartupsFlag, &c.MaxStartupsFlag, &c.MaxStartups},
		{perSourceMaxStartupsFlag, &c.PerSourceMaxStartupsFlag, &c.PerSourceMaxStartups},
		{sessionDiskFlag, &c.SessionDiskMiBFlag, &c.SessionDiskMiB},
	}
	for _, n := range numbers {
		value, err := strconv.Atoi(strings.TrimSpace(*n.text))
		if err != nil {
			return n.flag.invalid(*n.text)
		}
		*n.value = value
		*n.text = ""
	}

	timeout, err := time.ParseDuration(strings.TrimSpace(c.HandshakeTimeoutFlag))
	if err != nil || timeout < minHandshakeTimeout || timeout > maxHandshakeTimeout {
		// The value as given, where validate can only show the parsed
		// duration ("2h0m0s" for "2h").
		return handshakeTimeoutError(c.HandshakeTimeoutFlag)
	}
	c.HandshakeTimeout = timeout
	c.HandshakeTimeoutFlag = ""
	return nil
}

func handshakeTimeoutError(text string) error {
	return fmt.Errorf("invalid --handshake-timeout (SSH_HANDSHAKE_TIMEOUT) %q: must be a duration from %s to %s, such as 30s or 2m",
		text, minHandshakeTimeout, maxHandshakeTimeout)
}

// defaultPassword is the password when neither --password nor
// --authorized-keys is given. The service warns when it runs with it.
const defaultPassword = "test"

// resolvePassword sets Password from the flag or its variable if either
// was given. Otherwise it sets the default password, unless authorized
// keys are configured. An operator who sets up keys expects them to be the
// only way in, without a well-known password beside them.
func (c *config) resolvePassword() {
	switch {
	case c.PasswordFlag != nil:
		c.Password = *c.PasswordFlag
	case c.AuthorizedKeys == "":
		c.Password = defaultPassword
	default:
		c.Password = ""
	}
	c.PasswordFlag = nil
}

// limitDefaults are the defaults of the limit, timeout and keepalive
// settings, for kong's default tags (as ${name}) and for empty values.
var limitDefaults = kong.Vars{
	"max_sessions":                "32",
	"max_sessions_per_ip":         "8",
	"max_sessions_per_connection": "10",
	"session_timeout":             "1h",
	"idle_timeout":                "15m",
	"keepalive_interval":          "15s",
	"keepalive_count_max":         "3",
}

// resolveLimits parses the limit, timeout and keepalive settings into
// their typed fields and clears the text fields. An empty value, such as
// an empty variable, means the default.
func (c *config) resolveLimits() error {
	counts := []struct {
		flag, variable, text, fallback string
		min                            int
		accepted                       string
		value                          *int
	}{
		{"--max-sessions", "SSH_MAX_SESSIONS", c.MaxSessionsText, limitDefaults["max_sessions"], 0, "a whole number up to 2147483647, 0 for no limit", &c.MaxSessions},
		{"--max-sessions-per-ip", "SSH_MAX_SESSIONS_PER_IP", c.MaxSessionsPerIPText, limitDefaults["max_sessions_per_ip"], 0, "a whole number up to 2147483647, 0 for no limit", &c.MaxSessionsPerIP},
		{"--max-sessions-per-connection", "SSH_MAX_SESSIONS_PER_CONNECTION", c.MaxSessionsPerConnectionText, limitDefaults["max_sessions_per_connection"], 0, "a whole number up to 2147483647, 0 for no limit", &c.MaxSessionsPerConnection},
		{"--keepalive-count-max", "SSH_KEEPALIVE_COUNT_MAX", c.KeepaliveCountMaxText, limitDefaults["keepalive_count_max"], 1, "a whole number from 1 to 2147483647", &c.KeepaliveCountMax},
	}
	for _, setting := range counts {
		text := cmp.Or(strings.TrimSpace(setting.text), setting.fallback)
		n, err := strconv.ParseInt(text, 10, 32)
		if err != nil || int(n) < setting.min {
			return fmt.Errorf("invalid %s (%s) %q: must be %s", setting.flag, setting.variable, text, setting.accepted)
		}
		*setting.value = int(n)
	}

	durations := []struct {
		flag, variable, text, fallback string
		min                            time.Duration
		accepted                       string
		value                          *time.Duration
	}{
		{"--session-timeout", "SSH_SESSION_TIMEOUT", c.SessionTimeoutText, limitDefaults["session_timeout"], time.Second, "a duration of 1s or more such as 90s, 30m or 2h, or 0 for no limit", &c.SessionTimeout},
		{"--idle-timeout", "SSH_IDLE_TIMEOUT", c.IdleTimeoutText, limitDefaults["idle_timeout"], time.Second, "a duration of 1s or more such as 90s, 30m or 2h, or 0 to turn it off", &c.IdleTimeout},
		{"--keepalive-interval", "SSH_KEEPALIVE_INTERVAL", c.KeepaliveIntervalText, limitDefaults["keepalive_interval"], time.Second, "a duration of 1s or more such as 15s or 1m, or 0 to turn keepalives off", &c.KeepaliveInterval},
	}
	for _, setting := range durations {
		text := cmp.Or(strings.TrimSpace(setting.text), setting.fallback)
		d, err := time.ParseDuration(text)
		if err != nil || d < 0 || (d > 0 && d < setting.min) {
			return fmt.Errorf("invalid %s (%s) %q: must be %s", setting.flag, setting.variable, text, setting.accepted)
		}
		*setting.value = d
	}

	c.MaxSessionsText, c.MaxSessionsPerIPText, c.MaxSessionsPerConnectionText = "", "", ""
	c.SessionTimeoutText, c.IdleTimeoutText, c.KeepaliveIntervalText, c.KeepaliveCountMaxText = "", "", "", ""
	return nil
}

// warnings returns a sentence for each setting that is valid but has no
// effect because another one is stricter, so an operator who raised the
// first learns why nothing changed.
func (c config) warnings() []string {
	var warnings []string
	if c.PerSourceMaxStartups > c.MaxStartups {
		warnings = append(warnings, fmt.Sprintf("--per-source-max-startups %d is above --max-startups %d, which caps every source too", c.PerSourceMaxStartups, c.MaxStartups))
	}
	if c.MaxSessions > 0 && c.MaxSessionsPerIP > c.MaxSessions {
		warnings = append(warnings, fmt.Sprintf("--max-sessions-per-ip %d is above --max-sessions %d, which caps every client address too", c.MaxSessionsPerIP, c.MaxSessions))
	}
	if c.MaxSessions > 0 && c.MaxSessionsPerConnection > c.MaxSessions {
		warnings = append(warnings, fmt.Sprintf("--max-sessions-per-connection %d is above --max-sessions %d, which caps every connection too", c.MaxSessionsPerConnection, c.MaxSessions))
	}
	return warnings
}

// validate checks every value and returns the first problem, naming the
// flag, its variable, the value and what is accepted.
func (c config) validate() error {
	if err := validateListenAddr(c.ListenAddr); err != nil {
		return err
	}
	if c.HostKeyPath == "" {
		return errors.New("invalid --host-key-path (SSH_HOST_KEY_PATH): must not be empty")
	}
	if c.Rootfs == "" {
		return errors.New("missing --rootfs (SSH_ROOTFS): give the guest root directory, for example ./rootfs after 'make rootfs'")
	}
	if err := rootfs.Check(c.Rootfs); err != nil {
		return fmt.Errorf("invalid --rootfs (SSH_ROOTFS) %q: %w", c.Rootfs, err)
	}
	if c.Username == "" && c.AuthorizedKeys != "" {
		return errors.New("invalid --username (SSH_USERNAME): must not be empty with --authorized-keys, because the keys are accepted for that user name only")
	}
	if c.Username == "" && !c.AllowPasswordless {
		return errors.New("invalid --username (SSH_USERNAME): must not be empty unless --allow-passwordless is set")
	}
	if c.Password == "" && !c.AllowPasswordless && c.AuthorizedKeys == "" {
		return errors.New("invalid --password (SSH_PASSWORD): must not be empty; set one, or use --authorized-keys or --allow-passwordless")
	}
	if c.AuthorizedKeys != "" {
		if _, err := middleware.LoadAuthorizedKeys(c.AuthorizedKeys); err != nil {
			return fmt.Errorf("invalid --authorized-keys (SSH_AUTHORIZED_KEYS): %w", err)
		}
	}
	if !slices.Contains(logLevels, c.LogLevel) {
		return fmt.Errorf("invalid --log-level (SSH_LOG_LEVEL) %q: must be one of %s", c.LogLevel, strings.Join(logLevels, ", "))
	}
	if !slices.Contains(logFormats, c.LogFormat) {
		return fmt.Errorf("invalid --log-format (SSH_LOG_FORMAT) %q: must be one of %s", c.LogFormat, strings.Join(logFormats, ", "))
	}
	if err := sessionDiskFlag.check(c.SessionDiskMiB); err != nil {
		return err
	}
	if c.RuntimeDir != "" && !filepath.IsAbs(c.RuntimeDir) {
		return fmt.Errorf("invalid --runtime-dir (SSH_RUNTIME_DIR) %q: must be an absolute path", c.RuntimeDir)
	}
	if len(c.RuntimeDir) > maxRuntimeDirBytes {
		return fmt.Errorf("invalid --runtime-dir (SSH_RUNTIME_DIR) %q: %d bytes, at most %d, because session sockets inside it must fit in a unix socket address", c.RuntimeDir, len(c.RuntimeDir), maxRuntimeDirBytes)
	}
	for _, pattern := range c.AcceptEnv {
		if err := validateEnvPattern(pattern); err != nil {
			return fmt.Errorf("invalid --accept-env (SSH_ACCEPT_ENV) %q: %w", pattern, err)
		}
	}
	if !slices.Contains(guestNetworks, c.GuestNetwork) {
		return fmt.Errorf("invalid --guest-network (SSH_GUEST_NETWORK) %q: must be one of %s", c.GuestNetwork, strings.Join(guestNetworks, ", "))
	}
	for _, err := range []error{
		vmCPUsFlag.check(c.VMCPUs),
		vmMemoryFlag.check(c.VMMemoryMiB),
		maxStartupsFlag.check(c.MaxStartups),
		perSourceMaxStartupsFlag.check(c.PerSourceMaxStartups),
	} {
		if err != nil {
			return err
		}
	}
	if c.HandshakeTimeout < minHandshakeTimeout || c.HandshakeTimeout > maxHandshakeTimeout {
		return handshakeTimeoutError(c.HandshakeTimeout.String())
	}
	return validateMetricsAddr(c.MetricsAddr, c.ListenAddr)
}

// validateEnvPattern checks one --accept-env entry: a variable name, or a
// shell pattern over names.
func validateEnvPattern(pattern string) error {
	if pattern == "" {
		return errors.New("empty name; separate names with single commas")
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return errors.New("malformed pattern; use names, * and ? as in LC_*")
	}
	if strings.HasPrefix(pattern, "LD_") {
		return errors.New("LD_* variables change how the guest loads programs and are never accepted")
	}
	if strings.ContainsAny(pattern, "= \t\x00") {
		return errors.New("names cannot contain '=', spaces or NUL")
	}
	return nil
}

func validateListenAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid --listen-addr (SSH_ADDR) %q: must be HOST:PORT or :PORT, for example :2222 or 127.0.0.1:2222", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return fmt.Errorf("invalid --listen-addr (SSH_ADDR) %q: port %q must be a number from 0 to 65535", addr, port)
	}
	if strings.ContainsAny(host, " /\\") {
		return fmt.Errorf("invalid --listen-addr (SSH_ADDR) %q: host %q must be an IP address or a host name", addr, host)
	}
	return nil
}
