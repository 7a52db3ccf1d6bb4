package krun

import (
	"fmt"
	"maps"
	"slices"
)

// vmAPI is the part of libkrun that configures and starts one VM. *Lib
// implements it; tests record the calls with a fake.
type vmAPI interface {
	initLogging(fd int, level uint32) error
	createContext() (uint32, error)
	freeContext(ctx uint32) error
	setVMResources(ctx uint32, cpus uint8, memoryMiB uint32) error
	setRootDir(ctx uint32, root string) error
	removeImplicitVsock(ctx uint32) error
	addVsockDevice(ctx uint32, tsiFeatures uint32) error
	setPorts(ctx uint32, portMap []string) error
	mapVsockPort(ctx uint32, port uint32, path string) error
	addOverlayFile(ctx uint32, fsTag, name string, data []byte, mode uint32, oneShot bool) error
	setWorkingDir(ctx uint32, dir string) error
	setWorkload(ctx uint32, execPath string, argv, envp []string) error
	startVM(ctx uint32) error
}

// overlayFileMode is the mode of every Spec.Files entry: a regular file that
// everyone may read. The guest cannot write overlay files whatever the mode.
const overlayFileMode = 0o100644

// configureVM sends libkrun its log settings and one VM's configuration, in
// the order libkrun needs, and returns the context to pass to startVM. spec
// must have passed Validate. On failure it frees the context.
//
// With spec.Network off it replaces the implicit vsock device by one without
// TSI, which keeps the vsock ports but gives the guest no sockets through the
// host. With Network on it keeps the implicit device (TSI on) and sets an
// empty port map, so no guest listening port is exposed on the host.
func configureVM(api vmAPI, spec Spec, logFD int) (uint32, error) {
	spec = spec.withDefaults()

	// libkrun writes errors that happen after start, when this process can
	// no longer report them itself, to logFD.
	if err := api.initLogging(logFD, logLevelError); err != nil {
		return 0, fmt.Errorf("krun: configure vm: %w", err)
	}
	ctx, err := api.createContext()
	if err != nil {
		return 0, fmt.Errorf("krun: configure vm: %w", err)
	}

	steps := []func() error{
		func() error { return api.setVMResources(ctx, uint8(spec.CPUs), uint32(spec.MemoryMiB)) },
		func() error { return api.setRootDir(ctx, spec.Root) },
		func() error { return configureNetwork(api, ctx, spec.Network) },
		func() error {
			for _, vp := range spec.VsockPorts {
				if err := api.mapVsockPort(ctx, vp.Port, vp.Path); err != nil {
					return err
				}
			}
			return nil
		},
		func() error {
			// Sorted, so the same spec always gives the same calls.
			for _, name := range slices.Sorted(maps.Keys(spec.Files)) {
				// Not one-shot: the workload may open a file more than once.
				if err := api.addOverlayFile(ctx, krunRootTag, name, spec.Files[name], overlayFileMode, false); err != nil {
					return err
				}
			}
			return nil
		},
		func() error { return api.setWorkingDir(ctx, spec.Workdir) },
		func() error { return api.setWorkload(ctx, spec.Exec, explicit(spec.Args), explicit(spec.Env)) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			_ = api.freeContext(ctx)
			return 0, fmt.Errorf("krun: configure vm: %w", err)
		}
	}
	return ctx, nil
}

func configureNetwork(api vmAPI, ctx uint32, network bool) error {
	if network {
		return api.setPorts(ctx, []string{})
	}
	if err := api.removeImplicitVsock(ctx); err != nil {
		return err
	}
	// 0 enables no TSI feature: plain vsock only.
	return api.addVsockDevice(ctx, 0)
}

// explicit returns values, or an empty non-nil slice for nil, so that the
// binding never passes NULL for an array where NULL has its own meaning.
func explicit(values []string) []string {
	if values == nil {
		return []string{}
	}
	return values
}
