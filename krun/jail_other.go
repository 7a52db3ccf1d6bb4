//go:build !linux

package krun

import "os/exec"

// prepareJail returns a launch that does nothing: jails need Linux
// namespaces.
func prepareJail(cmd *exec.Cmd, spec Spec) (jailLaunch, error) {
	return noJail{}, nil
}

// confine returns spec unchanged.
// NOTE: outside Linux the VM process is not jailed and the guest writes to
// Spec.Root directly.
func confine(spec Spec) (Spec, error) { return spec, nil }

type noJail struct{}

func (noJail) Started(pid int) error { return nil }
func (noJail) Close()                {}
