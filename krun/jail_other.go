//go:build !linux

package krun

import "os/exec"

// prepareJail does nothing: jails need Linux namespaces.
func prepareJail(cmd *exec.Cmd, network bool) error { return nil }

// confine returns spec unchanged.
// NOTE: outside Linux the VM process is not jailed and the guest writes to
// Spec.Root directly.
func confine(spec Spec, mountpoint string) (Spec, error) { return spec, nil }
