// Package rootfs checks a guest root filesystem, the host directory that a
// session's VM boots from, before any VM is started.
//
// Paths are resolved the way the guest sees them: the root directory is "/",
// an absolute symbolic link target starts at the root directory, and ".." at
// the root stays at the root. A link that would reach a host file outside the
// root therefore does not count.
//
// The checks run on the host before boot, so they report what a session
// would find only if nobody changes the directory in between. They guard
// against mistakes of the operator, not against a hostile rootfs.
package rootfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// AgentPath is the guest path of the agent that serves PTY sessions inside
// the VM. install_guest_agent.sh installs it there.
const AgentPath = "/usr/local/bin/throwawaysh-guest-agent"

// ShellPath is the guest path of the shell that runs session commands.
const ShellPath = "/bin/sh"

// maxSymlinks bounds how many symbolic links one lookup follows, like
// Linux's MAXSYMLINKS (40). A lookup that needs more is treated as a loop.
const maxSymlinks = 40

// ErrAgentMissing is the sentinel wrapped by the error of AgentMissingError.
// Test for it with errors.Is.
var ErrAgentMissing = errors.New("rootfs: guest agent missing")

// errSymlinkLoop reports a lookup that followed more than maxSymlinks links.
var errSymlinkLoop = errors.New("too many levels of symbolic links (a link loop?)")

// Check validates that dir can serve as a guest root: it exists, it is a
// directory (a symbolic link to a directory is fine), and /bin/sh inside it
// resolves to an executable regular file. It does not look for the guest
// agent, which only PTY sessions need. Use HasAgent for that.
//
// Each error names the path and the fix.
func Check(dir string) error {
	if err := checkRootDir(dir); err != nil {
		return err
	}

	_, info, err := resolveInRoot(dir, ShellPath)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("rootfs: %s is missing in %q (%w): build a default root with %q or pass --rootfs with a root that has a shell",
			ShellPath, dir, err, "make rootfs ROOTFS="+shellQuote(dir))
	case err != nil:
		return fmt.Errorf("rootfs: resolve %s in %q: %w", ShellPath, dir, err)
	}

	if err := checkExecutable(info); err != nil {
		return fmt.Errorf("rootfs: %s in %q %v: replace it with an executable file or a link to one, such as the busybox that make rootfs installs",
			ShellPath, dir, err)
	}
	return nil
}

// HasAgent reports whether AgentPath inside dir resolves to an executable
// regular file. A missing agent, including a dangling symbolic link, returns
// false and a nil error, so the caller can decide whether PTY sessions are
// required. AgentMissingError builds the error for that case. An agent that
// exists but cannot run (a directory, a file without execute permission, a
// link loop) returns false and an error that names the fix. That error
// does not wrap ErrAgentMissing.
func HasAgent(dir string) (bool, error) {
	if err := checkRootDir(dir); err != nil {
		return false, err
	}

	_, info, err := resolveInRoot(dir, AgentPath)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("rootfs: resolve %s in %q: %w", AgentPath, dir, err)
	}

	if err := checkExecutable(info); err != nil {
		return false, fmt.Errorf("rootfs: %s in %q %v: reinstall it with %q",
			AgentPath, dir, err, "./install_guest_agent.sh "+shellQuote(dir))
	}
	return true, nil
}

// AgentMissingError returns the error for a rootfs without the guest agent.
// It wraps ErrAgentMissing, and its text names AgentPath, dir and the command
// that installs the agent.
func AgentMissingError(dir string) error {
	quoted := shellQuote(dir)
	return fmt.Errorf("%w: %s is missing in %q, so PTY sessions cannot start: run ./install_guest_agent.sh %s (or make install-agent ROOTFS=%s)",
		ErrAgentMissing, AgentPath, dir, quoted, quoted)
}

// checkRootDir returns an error unless dir is an existing directory or a
// symbolic link to one.
func checkRootDir(dir string) error {
	if dir == "" {
		return errors.New("rootfs: no root directory given: pass --rootfs DIR (build one with make rootfs)")
	}
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("rootfs: root directory %q not found: build it with %q or pass --rootfs with an existing directory",
			dir, "make rootfs ROOTFS="+shellQuote(dir))
	case err != nil:
		return fmt.Errorf("rootfs: stat root directory: %w", err)
	case !info.IsDir():
		return fmt.Errorf("rootfs: root %q is not a directory: pass --rootfs with a directory, such as the ./rootfs that make rootfs builds",
			dir)
	}
	return nil
}

// checkExecutable returns an error phrase unless info describes a regular
// file with at least one execute bit. The guest runs as root, and root may
// execute a file that has any execute bit set.
func checkExecutable(info fs.FileInfo) error {
	switch {
	case info.IsDir():
		return errors.New("is a directory")
	case !info.Mode().IsRegular():
		return fmt.Errorf("is not a regular file (type %v)", info.Mode().Type())
	case info.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("is not executable (mode %#o)", info.Mode().Perm())
	}
	return nil
}

// lookupError reports the guest path at which a lookup failed. It unwraps to
// fs.ErrNotExist or syscall.ENOTDIR so that callers can test it.
type lookupError struct {
	guestPath string
	problem   string
	err       error
}

func (e *lookupError) Error() string { return e.guestPath + " " + e.problem }

func (e *lookupError) Unwrap() error { return e.err }

// resolveInRoot resolves the guest path name inside root as the guest would,
// following symbolic links in every component. It returns the host path of
// the result and its Lstat information, which is never a symbolic link unless
// the result is root itself.
//
// An error wraps fs.ErrNotExist when a component (or a link target) does not
// exist, syscall.ENOTDIR when a component that must be a directory is not,
// and errSymlinkLoop after maxSymlinks links.
func resolveInRoot(root, name string) (string, fs.FileInfo, error) {
	pending := splitGuestPath(name)
	var resolved []string // components of a real, link-free directory below root
	links := 0

	for len(pending) > 0 {
		component := pending[0]
		pending = pending[1:]

		switch component {
		case "", ".":
			continue
		case "..":
			// resolved never contains a link, so dropping its last component
			// yields the real parent, as in the kernel. At the root, ".."
			// stays at the root.
			if len(resolved) > 0 {
				resolved = resolved[:len(resolved)-1]
			}
			continue
		}

		guestPath := path.Join("/", strings.Join(resolved, "/"), component)
		hostPath := filepath.Join(root, filepath.FromSlash(guestPath))
		info, err := os.Lstat(hostPath)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return "", nil, &lookupError{guestPath, "not found", fs.ErrNotExist}
		case err != nil:
			return "", nil, fmt.Errorf("lstat %s: %w", guestPath, err)
		}

		if info.Mode()&fs.ModeSymlink != 0 {
			links++
			if links > maxSymlinks {
				return "", nil, fmt.Errorf("%s: %w", name, errSymlinkLoop)
			}
			target, err := os.Readlink(hostPath)
			if err != nil {
				return "", nil, fmt.Errorf("readlink %s: %w", guestPath, err)
			}
			if strings.HasPrefix(target, "/") {
				resolved = resolved[:0]
			}
			pending = append(splitGuestPath(target), pending...)
			continue
		}

		if len(pending) > 0 && !info.IsDir() {
			return "", nil, &lookupError{guestPath, "is not a directory", syscall.ENOTDIR}
		}
		resolved = append(resolved, component)
	}

	if len(resolved) == 0 {
		// root itself may be a link to a directory, which the guest never sees.
		info, err := os.Stat(root)
		if err != nil {
			return "", nil, fmt.Errorf("stat root: %w", err)
		}
		return root, info, nil
	}
	guestPath := path.Join("/", strings.Join(resolved, "/"))
	hostPath := filepath.Join(root, filepath.FromSlash(guestPath))
	info, err := os.Lstat(hostPath)
	if err != nil {
		return "", nil, fmt.Errorf("lstat %s: %w", guestPath, err)
	}
	return hostPath, info, nil
}

// splitGuestPath splits a guest path or link target at each "/". Guest paths
// always use "/", whatever the host's separator is.
func splitGuestPath(p string) []string {
	return strings.Split(p, "/")
}

// shellQuote returns s quoted for a POSIX shell when it contains anything
// beyond letters, digits and a few safe punctuation marks, so the commands
// suggested in error messages can be pasted as they are.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-./:=+,@%", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
