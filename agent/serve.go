package agent

import (
	"bufio"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ServeOptions configures Serve. The zero value is ready to use.
type ServeOptions struct {
	// Logger receives the agent's own log. nil discards it. In the guest
	// this log goes to stderr, the VM console, which the host logs and which
	// never reaches the SSH user.
	Logger *slog.Logger
	// Shell runs every process: as a login shell for an empty command and
	// with -c otherwise. The default is the login shell of the agent's user
	// (uid 0 in the guest) in /etc/passwd, or /bin/sh.
	Shell string
	// Software names the agent in its hello message. The default is
	// "throwawaysh-guest-agent" and the build's version.
	Software string
	// AttachTimeout is how long a started process waits for its data
	// stream before the agent hangs it up. The default is 10 seconds.
	AttachTimeout time.Duration
}

const (
	defaultAttachTimeout = 10 * time.Second
	// defaultPath is PATH for guest processes unless the host sends one:
	// Debian's default for root, which also covers other users.
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// maxPasswdSize bounds how much of /etc/passwd is read.
	maxPasswdSize = 1 << 20
)

// SoftwareVersion returns the version of the throwawaysh module that this
// binary was built from, as the Go toolchain recorded it: a release tag
// such as "v1.2.0", or "(devel)" for a build from a work tree.
func SoftwareVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok || info.Main.Version == "" {
		return "(devel)"
	}
	return info.Main.Version
}

// softwareName returns program and the build's version for hello, cut to
// what the protocol allows.
func softwareName(program string) string {
	name := program + " " + SoftwareVersion()
	if len(name) > MaxSoftwareSize {
		name = name[:MaxSoftwareSize]
	}
	return strings.ToValidUTF8(name, "?")
}

// account is the passwd entry of the user that the agent runs as.
type account struct {
	name  string
	home  string
	shell string
}

// lookupAccount reads uid's entry from the passwd file at path. Missing
// fields, or a missing file, fall back to root's usual values for uid 0,
// and to the uid, "/" and /bin/sh otherwise.
func lookupAccount(path string, uid int) account {
	acct := account{name: strconv.Itoa(uid), home: "/", shell: "/bin/sh"}
	if uid == 0 {
		acct.name = "root"
		acct.home = "/root"
	}
	f, err := os.Open(path)
	if err != nil {
		return acct
	}
	defer f.Close()

	scanner := bufio.NewScanner(io.LimitReader(f, maxPasswdSize))
	want := strconv.Itoa(uid)
	for scanner.Scan() {
		// name:password:uid:gid:gecos:home:shell
		fields := strings.Split(scanner.Text(), ":")
		if len(fields) != 7 || fields[2] != want {
			continue
		}
		if fields[0] != "" {
			acct.name = fields[0]
		}
		if strings.HasPrefix(fields[5], "/") {
			acct.home = fields[5]
		}
		if strings.HasPrefix(fields[6], "/") {
			acct.shell = fields[6]
		}
		break
	}
	return acct
}

// sanitizeMessage makes text fit an error message: control characters
// other than tab become spaces and the text is cut to MaxErrorSize bytes.
func sanitizeMessage(text string) string {
	text = strings.ToValidUTF8(text, "?")
	text = strings.Map(func(r rune) rune {
		if isControl(r) && r != '\t' {
			return ' '
		}
		return r
	}, text)
	if len(text) > MaxErrorSize {
		cut := MaxErrorSize
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut]
	}
	if strings.TrimSpace(text) == "" {
		return "unknown error"
	}
	return text
}
