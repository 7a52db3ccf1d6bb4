//go:build !linux && !darwin

package krun

import (
	"fmt"
	"runtime"
)

// CheckKVM returns an error wrapping ErrKVMUnusable: libkrun runs only on
// Linux with KVM and on macOS.
func CheckKVM() error {
	return fmt.Errorf("krun: %w: libkrun does not support %s; run on Linux with KVM or on macOS",
		ErrKVMUnusable, runtime.GOOS)
}
