//go:build !linux

package sandbox

import (
	"fmt"
	"os/exec"
	"runtime"
)

// Launch is the launcher's side of a jail; there is none outside Linux.
type Launch struct{}

// Started does nothing.
func (l *Launch) Started(pid int) error { return nil }

// Close does nothing.
func (l *Launch) Close() {}

// Enter returns an error: jails need Linux namespaces.
func Enter(keep ...int) (*Jail, error) {
	return nil, fmt.Errorf("sandbox: not supported on %s", runtime.GOOS)
}

// DropCapabilities does nothing: capabilities are a Linux feature.
func DropCapabilities(extra ...int) error { return nil }

// Prepare returns an error: jails need Linux namespaces.
func Prepare(cmd *exec.Cmd, cfg Config) (*Launch, error) {
	return nil, fmt.Errorf("sandbox: not supported on %s", runtime.GOOS)
}
