package krun

import (
	"fmt"
	"os/exec"
	"slices"

	"github.com/ebitengine/purego"

	"github.com/throwawaysh/throwawaysh/internal/sandbox"
)

// vmDevices are the device nodes a VM process may open: /dev/kvm, and
// /dev/null, which programs open for stdio they do not use.
var vmDevices = []string{"/dev/kvm", "/dev/null"}

// kernelLibraries are the sonames under which libkrun loads the guest
// kernel library, newest first.
var kernelLibraries = []string{"libkrunfw.so.5", "libkrunfw.so.4"}

// prepareJail sets cmd up to start a VM process for spec that confines
// itself in a jail (see package sandbox).
func prepareJail(cmd *exec.Cmd, spec Spec) (jailLaunch, error) {
	return sandbox.Prepare(cmd, jailConfig(spec))
}

// confine moves the VM process into its jail (see package sandbox) and
// returns spec with its host paths replaced by their paths in the jail.
// The calling thread must be locked: it keeps the reduced capabilities and
// must be the one that starts the VM.
//
// NOTE: libkrun has not run in such a jail, because this project's test
// machines cannot boot libkrun guests. Only the jail itself is tested,
// with the test launcher.
func confine(spec Spec) (Spec, error) {
	// After the switch of root, no host library can be loaded. libkrun
	// itself is loaded already; loading its kernel library now makes
	// libkrun's own dlopen of it find the loaded copy by its soname.
	for _, name := range kernelLibraries {
		if _, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL); err == nil {
			break
		}
	}
	// libkrun writes its log to logFD.
	jail, err := sandbox.Enter(logFD)
	if err != nil {
		return spec, fmt.Errorf("krun: confine vm process: %w", err)
	}
	if err := sandbox.DropCapabilities(); err != nil {
		return spec, fmt.Errorf("krun: confine vm process: %w", err)
	}
	return jailSpec(spec, jail), nil
}

// jailConfig returns the jail of spec's VM process.
func jailConfig(spec Spec) sandbox.Config {
	cfg := sandbox.Config{
		Root:    spec.Root,
		DiskMiB: spec.withDefaults().DiskMiB,
		Devices: vmDevices,
		Network: spec.Network,
	}
	for _, port := range spec.VsockPorts {
		cfg.Sockets = append(cfg.Sockets, port.Path)
	}
	return cfg
}

// jailSpec returns spec with the guest root and the vsock sockets at their
// paths in jail.
func jailSpec(spec Spec, jail *sandbox.Jail) Spec {
	spec.Root = jail.Root
	spec.VsockPorts = slices.Clone(spec.VsockPorts)
	for i := range spec.VsockPorts {
		spec.VsockPorts[i].Path = jail.Sockets[i]
	}
	return spec
}
