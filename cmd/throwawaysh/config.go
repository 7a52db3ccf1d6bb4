package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/alecthomas/kong"

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
	AcceptEnv             []string `name:"accept-env" env:"SSH_ACCEPT_ENV" sep:"," placeholder:"NAME" help:"Environment variables a client may send into the guest, beside LANG, LC_*, TZ and COLORTERM; shell patterns allowed. LD_* is never accepted."`

	// authFailures configures how repeated failed logins are slowed
	// down. The service uses the defaults; tests record the delays.
	authFailures middleware.FailureTrackerConfig `kong:"-"`

	Version bool `name:"version" help:"Print the version and exit."`
	Help    bool `name:"help" short:"h" help:"Show this help and exit."`
}

var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"text", "json"}
)

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
	cfg.resolvePassword()
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
	for _, pattern := range c.AcceptEnv {
		if err := validateEnvPattern(pattern); err != nil {
			return fmt.Errorf("invalid --accept-env (SSH_ACCEPT_ENV) %q: %w", pattern, err)
		}
	}
	return nil
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
