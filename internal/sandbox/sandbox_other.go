//go:build !linux

package sandbox

import (
	"fmt"
	"os/exec"
	"runtime"
)

// Enter returns an error: jails need Linux namespaces.
func Enter(cfg Config) (*Jail, error) {
	return nil, fmt.Errorf("sandbox: not supported on %s", runtime.GOOS)
}

// DropCapabilities does nothing: capabilities are a Linux feature.
func DropCapabilities(extra ...int) error { return nil }

// Prepare returns an error: jails need Linux namespaces.
func Prepare(cmd *exec.Cmd, network bool) error {
	return fmt.Errorf("sandbox: not supported on %s", runtime.GOOS)
}
