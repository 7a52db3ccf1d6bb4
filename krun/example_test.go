package krun_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/throwawaysh/throwawaysh/krun"
)

// ExampleSpec_Validate shows that Validate reports every problem of a spec
// at once, each with the field, the value and the fix.
func ExampleSpec_Validate() {
	spec := krun.Spec{
		Root:      "images/alpine",
		Exec:      "sh",
		CPUs:      300,
		MemoryMiB: 16,
	}
	fmt.Println(spec.Validate())
	// Output:
	// krun: invalid Spec.Root "images/alpine": relative path; use an absolute host path
	// krun: invalid Spec.Exec "sh": not an absolute guest path; use one such as "/bin/sh"
	// krun: invalid Spec.CPUs 300: must be between 1 and 255, or 0 for 1
	// krun: invalid Spec.MemoryMiB 16: must be between 32 and 4294967295 MiB, or 0 for 256
}

// policyLauncher is a krun.Launcher that wraps another one and enforces
// the operator's policy on every VM, whatever the middlewares ask for.
type policyLauncher struct {
	next         krun.Launcher
	maxMemoryMiB int
}

func (l policyLauncher) Start(ctx context.Context, spec krun.Spec) (krun.VM, error) {
	spec.Network = false
	if spec.MemoryMiB == 0 || spec.MemoryMiB > l.maxMemoryMiB {
		spec.MemoryMiB = l.maxMemoryMiB
	}
	return l.next.Start(ctx, spec)
}

// printLauncher replaces krun.NewLauncher's libkrun launcher, which cannot
// boot a VM in this example. It prints the spec it gets.
type printLauncher struct{}

func (printLauncher) Start(_ context.Context, spec krun.Spec) (krun.VM, error) {
	fmt.Printf("boot %s: %d MiB, network %v\n", spec.ID, spec.MemoryMiB, spec.Network)
	return nil, errors.New("no VM in this example")
}

// ExampleLauncher wraps a launcher in one of the app's own. A server passes
// the wrapper to middleware.VM, with the libkrun launcher inside:
//
//	lib, err := krun.Load()
//	...
//	inner, err := krun.NewLauncher(lib, logger)
//	...
//	middleware.VM(policyLauncher{next: inner, maxMemoryMiB: 512}, ...)
func ExampleLauncher() {
	var launcher krun.Launcher = policyLauncher{next: printLauncher{}, maxMemoryMiB: 512}
	_, err := launcher.Start(context.Background(), krun.Spec{ID: "session-1", MemoryMiB: 4096, Network: true})
	fmt.Println(err)
	// Output:
	// boot session-1: 512 MiB, network false
	// no VM in this example
}
