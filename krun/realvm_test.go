package krun

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestRealVMBoots boots a guest with libkrun. It needs libkrun, a KVM that
// can run libkrun's guest kernel, and a root file system with /bin/sh in the
// directory named by THROWAWAYSH_TEST_ROOTFS.
func TestRealVMBoots(t *testing.T) {
	lib, err := Load()
	if err != nil {
		t.Skipf("libkrun not available: %v", err)
	}
	if err := CheckKVM(); err != nil {
		t.Skipf("KVM not usable: %v", err)
	}
	root := os.Getenv("THROWAWAYSH_TEST_ROOTFS")
	if root == "" {
		t.Skip("THROWAWAYSH_TEST_ROOTFS not set: set it to a root file system directory with /bin/sh")
	}

	logger, logs := newTestLogger()
	launcher, err := NewLauncher(lib, logger)
	if err != nil {
		t.Fatalf("NewLauncher: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vm, err := launcher.Start(ctx, Spec{
		ID:   "real",
		Root: root,
		Exec: "/bin/sh",
		Args: []string{"-c", "echo hi; exit 3"},
		Env:  []string{"PATH=/usr/bin:/bin"},
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	// Bound the whole boot, so a hanging guest fails the test instead of
	// blocking it.
	timer := time.AfterFunc(60*time.Second, func() { _ = vm.Kill() })
	defer timer.Stop()

	stdout, stderr := readAllAsync(vm.Stdout()), readAllAsync(vm.Stderr())
	if got := string(<-stdout); got != "hi\n" {
		t.Errorf("stdout = %q, want %q", got, "hi\n")
	}
	<-stderr
	status, err := vm.Wait()
	if err != nil {
		t.Fatalf("Wait: %v (log: %s)", err, logs.String())
	}
	if status != 3 {
		t.Errorf("status = %d, want 3 (log: %s)", status, logs.String())
	}
}
