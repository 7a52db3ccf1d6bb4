package krun

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

func TestCheckKVMDeviceMissing(t *testing.T) {
	dir := t.TempDir()
	err := checkKVMDevice(filepath.Join(dir, "kvm"), filepath.Join(dir, "kvm_pvm"))
	if !errors.Is(err, ErrKVMUnusable) {
		t.Fatalf("error = %v, want ErrKVMUnusable", err)
	}
	if !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "kvm_intel or kvm_amd") {
		t.Errorf("error %q does not say the device is missing and how to get it", err)
	}
}

func TestCheckKVMDeviceUsable(t *testing.T) {
	dir := t.TempDir()
	device := filepath.Join(dir, "kvm")
	if err := os.WriteFile(device, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkKVMDevice(device, filepath.Join(dir, "kvm_pvm")); err != nil {
		t.Fatalf("checkKVMDevice: %v", err)
	}
}

func TestCheckKVMDevicePVM(t *testing.T) {
	dir := t.TempDir()
	device := filepath.Join(dir, "kvm")
	pvm := filepath.Join(dir, "kvm_pvm")
	if err := os.WriteFile(device, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(pvm, 0o755); err != nil {
		t.Fatal(err)
	}
	err := checkKVMDevice(device, pvm)
	if !errors.Is(err, ErrKVMUnusable) || !strings.Contains(err.Error(), "kvm_pvm") {
		t.Fatalf("error = %v, want ErrKVMUnusable naming kvm_pvm", err)
	}
}

func TestCheckKVMDevicePermission(t *testing.T) {
	dir := t.TempDir()
	device := filepath.Join(dir, "kvm")
	if err := os.WriteFile(device, nil, 0o000); err != nil {
		t.Fatal(err)
	}
	var err error
	if os.Geteuid() != 0 {
		err = checkKVMDevice(device, filepath.Join(dir, "kvm_pvm"))
	} else {
		// root opens any file, so build the error open would return.
		err = kvmOpenError(device, &fs.PathError{Op: "open", Path: device, Err: syscall.EACCES})
	}
	if !errors.Is(err, ErrKVMUnusable) {
		t.Fatalf("error = %v, want ErrKVMUnusable", err)
	}
	if !strings.Contains(err.Error(), "usermod -aG kvm") {
		t.Errorf("error %q does not say to join the kvm group", err)
	}
}

func TestCheckKVMOnThisHost(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the kvm_pvm check exists only on Linux")
	}
	if _, err := os.Stat("/sys/module/kvm_pvm"); err != nil {
		t.Skip("no kvm_pvm on this host")
	}
	err := CheckKVM()
	if !errors.Is(err, ErrKVMUnusable) {
		t.Fatalf("CheckKVM = %v on a kvm_pvm host, want ErrKVMUnusable", err)
	}
}
