package krun

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrKVMUnusable means that this host cannot run libkrun guests with KVM.
// The error text gives the reason and the fix.
var ErrKVMUnusable = errors.New("kvm not usable")

// checkKVMDevice reports whether the KVM device at device can run libkrun
// guests. pvmModule is the sysfs directory that exists while the kvm_pvm
// module provides the device.
func checkKVMDevice(device, pvmModule string) error {
	f, err := os.OpenFile(device, os.O_RDWR, 0)
	if err != nil {
		return kvmOpenError(device, err)
	}
	_ = f.Close()

	// kvm_pvm runs guests built as PVM guests only: libkrunfw's kernel is
	// not one and stops early in boot with KVM_EXIT_INTERNAL_ERROR.
	if _, err := os.Stat(pvmModule); err == nil {
		return fmt.Errorf("krun: %w: %s is provided by kvm_pvm (%s exists), which cannot boot libkrun's guest kernel; "+
			"run on a host with hardware virtualization and the kvm_intel or kvm_amd module",
			ErrKVMUnusable, device, pvmModule)
	}
	return nil
}

func kvmOpenError(device string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("krun: %w: %s does not exist; enable virtualization in the firmware and load "+
			"the kvm_intel or kvm_amd module, or run on a host or VM that offers nested virtualization",
			ErrKVMUnusable, device)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("krun: %w: no read-write access to %s; add the service's user to the group that owns it "+
			"(usually kvm: `usermod -aG kvm USER`, then log in again)", ErrKVMUnusable, device)
	default:
		return fmt.Errorf("krun: %w: open %s: %v", ErrKVMUnusable, device, err)
	}
}
