package middleware

import (
	"cmp"
	"errors"
	"fmt"
	"runtime/debug"

	"charm.land/ssh"

	"github.com/throwawaysh/throwawaysh/krun"
	"github.com/throwawaysh/throwawaysh/rootfs"
)

// VMSettings is the part of a session's VM configuration that a
// WithSettingsFunc function chooses.
type VMSettings struct {
	// Rootfs is the host directory the VM boots from, as WithRootfs sets
	// it. It must be an absolute path to a directory with /bin/sh.
	Rootfs string
	// CPUs is the number of virtual CPUs, 1 to krun.MaxCPUs; 0 means
	// krun.DefaultCPUs.
	CPUs int
	// MemoryMiB is the guest memory in MiB, at least krun.MinMemoryMiB;
	// 0 means krun.DefaultMemoryMiB.
	MemoryMiB int
	// DiskMiB caps what the session writes to its root, as WithSessionDisk
	// sets it; 0 means krun.DefaultDiskMiB.
	DiskMiB int
	// Network turns on the guest's network, as WithGuestNetwork does.
	Network bool
}

// WithSettingsFunc sets a function that chooses each session's VM settings
// before its VM boots, for example a rootfs or resources by user name
// (ctx.User()) or by public key (KeyFingerprint(ctx)). choose gets the
// settings that the other options set and changes what differs for this
// session. It runs on each session's goroutine, so it must be safe for
// concurrent use.
//
// When choose returns an error, or settings that krun.Spec.Validate or
// rootfs.Check reject, the session ends with ExitVMFailed before a VM
// boots. The log gets the error. The client gets the message of an error
// made with NewUserError, and otherwise a generic sentence without host
// details.
func WithSettingsFunc(choose func(ctx ssh.Context, settings *VMSettings) error) VMOption {
	return func(c *vmConfig) { c.chooseSettings = choose }
}

// NewUserError returns an error whose message the VM middleware sends to
// the SSH client, after "throwawaysh: ", when a WithSettingsFunc function
// returns it. err, or message when err is nil, goes to the log. The message
// must not reveal host paths or other details that only the operator needs.
func NewUserError(message string, err error) error {
	if err == nil {
		err = errors.New(message)
	}
	return &userError{err: err, message: message}
}

// callSettingsFunc calls choose and turns a panic in it into an error with
// the stack, so the session fails like on any other error from it.
func callSettingsFunc(choose func(ssh.Context, *VMSettings) error, ctx ssh.Context, settings *VMSettings) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return choose(ctx, settings)
}

// sessionConfig returns cfg with the settings that cfg.chooseSettings
// chooses for the session of ctx, validated.
func sessionConfig(ctx ssh.Context, cfg vmConfig) (vmConfig, error) {
	if cfg.chooseSettings == nil {
		return cfg, nil
	}
	settings := VMSettings{
		Rootfs:    cfg.rootfs,
		CPUs:      cfg.cpus,
		MemoryMiB: cfg.memoryMiB,
		DiskMiB:   cfg.diskMiB,
		Network:   cfg.network,
	}
	if err := callSettingsFunc(cfg.chooseSettings, ctx, &settings); err != nil {
		var userErr *userError
		if errors.As(err, &userErr) {
			return cfg, fmt.Errorf("VM settings function: %w", err)
		}
		return cfg, &userError{
			err:     fmt.Errorf("VM settings function: %w", err),
			message: "the server could not choose a VM for this session; tell the operator if it keeps failing",
		}
	}
	if err := settings.validate(); err != nil {
		return cfg, &userError{
			err:     fmt.Errorf("VM settings function returned invalid settings: %w", err),
			message: "the server chose invalid VM settings for this session; tell the operator",
		}
	}

	cfg.rootfs = settings.Rootfs
	cfg.cpus = cmp.Or(settings.CPUs, krun.DefaultCPUs)
	cfg.memoryMiB = cmp.Or(settings.MemoryMiB, krun.DefaultMemoryMiB)
	cfg.diskMiB = settings.DiskMiB
	cfg.network = settings.Network
	Logger(ctx).Info("vm settings chosen", "rootfs", cfg.rootfs, "cpus", cfg.cpus, "memory_mib", cfg.memoryMiB, "disk_mib", cfg.diskMiB, "network", cfg.network)
	return cfg, nil
}

// validate checks the settings as the launcher would, and the rootfs for a
// shell, so that a mistake in a settings function gets a clear log line.
func (s VMSettings) validate() error {
	spec := krun.Spec{
		Root:      s.Rootfs,
		Exec:      rootfs.ShellPath,
		CPUs:      s.CPUs,
		MemoryMiB: s.MemoryMiB,
		DiskMiB:   s.DiskMiB,
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	return rootfs.Check(s.Rootfs)
}
