package krun

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/ebitengine/purego"
)

func TestLoadMissingLibrary(t *testing.T) {
	t.Setenv(LibraryEnv, "/nonexistent/libkrun.so.1")
	lib, err := Load()
	if err == nil {
		t.Fatalf("Load succeeded with %s", lib.Path())
	}
	if !errors.Is(err, ErrLibkrunNotFound) {
		t.Errorf("error %v does not wrap ErrLibkrunNotFound", err)
	}
	for _, want := range []string{"/nonexistent/libkrun.so.1", "dnf install libkrun", "pacman -S libkrun", "brew install libkrun", "libkrunfw"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// findLibc returns the path of the C library, which is a real shared
// library without any libkrun symbol.
func findLibc(t *testing.T) string {
	t.Helper()
	for _, pattern := range []string{"/lib/*/libc.so.6", "/usr/lib/*/libc.so.6", "/lib64/libc.so.6", "/usr/lib64/libc.so.6", "/usr/lib/libSystem.B.dylib"} {
		if matches, _ := filepath.Glob(pattern); len(matches) > 0 {
			return matches[0]
		}
	}
	t.Skip("no C library found to load as a wrong library")
	return ""
}

func TestLoadWrongLibrary(t *testing.T) {
	libc := findLibc(t)
	t.Setenv(LibraryEnv, libc)
	_, err := Load()
	if !errors.Is(err, ErrLibkrunIncompatible) {
		t.Fatalf("Load(%s) error = %v, want ErrLibkrunIncompatible", libc, err)
	}
	if !strings.Contains(err.Error(), "krun_create_ctx") || !strings.Contains(err.Error(), libc) {
		t.Errorf("error %q does not name krun_create_ctx and %s", err, libc)
	}
}

// TestBindSignaturesAccepted registers every binding against a real C
// function. purego checks the Go signature when registering, so a type it
// cannot pass would panic here instead of in a VM process.
func TestBindSignaturesAccepted(t *testing.T) {
	handle, err := purego.Dlopen(findLibc(t), purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		t.Fatalf("dlopen libc: %v", err)
	}
	addr, err := purego.Dlsym(handle, "getpid")
	if err != nil {
		t.Fatalf("dlsym getpid: %v", err)
	}

	lib := &Lib{path: "test"}
	if err := lib.bind(func(string) uintptr { return addr }); err != nil {
		t.Fatalf("bind: %v", err)
	}
	for _, sym := range lib.symbols() {
		if reflect.ValueOf(sym.fn).Elem().IsNil() {
			t.Errorf("%s was not bound", sym.name)
		}
	}
}

func TestBindMissingSymbolsNamesVersions(t *testing.T) {
	missing := map[string]bool{"krun_fs_add_overlay_file": true, "krun_add_vsock": true, "krun_set_port_map": true}
	lib := &Lib{path: "libkrun.so.1"}
	err := lib.bind(func(name string) uintptr {
		if missing[name] {
			return 0
		}
		return 1 // never called
	})
	if !errors.Is(err, ErrLibkrunIncompatible) {
		t.Fatalf("bind error = %v, want ErrLibkrunIncompatible", err)
	}
	for _, want := range []string{
		"krun_add_vsock (libkrun 1.17.0 or later has it)",
		"krun_fs_add_overlay_file (libkrun 1.19.0 or later has it)",
		"krun_set_port_map",
		"install a newer libkrun",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestCallErrorText(t *testing.T) {
	err := checkCall("krun_set_root", -int32(syscall.ENOENT))
	if got, want := err.Error(), "krun_set_root: no such file or directory (-2)"; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
	if !errors.Is(err, syscall.ENOENT) {
		t.Error("error does not wrap ENOENT")
	}
	if checkCall("krun_create_ctx", 3) != nil {
		t.Error("a non-negative return value gave an error")
	}
}

func TestCStringArrayExplicit(t *testing.T) {
	lib := &Lib{}
	empty := lib.cStringArray(nil)
	if empty == nil {
		t.Fatal("cStringArray(nil) is NULL; libkrun treats a NULL envp as the host environment")
	}
	if first := *(**byte)(empty); first != nil {
		t.Error("cStringArray(nil) is not terminated at once")
	}

	arr := lib.cStringArray([]string{"A=1", "BB=22"})
	ptrs := unsafe.Slice((**byte)(arr), 3)
	if ptrs[2] != nil {
		t.Error("array is not NULL-terminated")
	}
	for i, want := range []string{"A=1", "BB=22"} {
		got := unsafe.String(ptrs[i], len(want)+1)
		if got != want+"\x00" {
			t.Errorf("element %d = %q, want %q with a NUL", i, got, want)
		}
	}
}
