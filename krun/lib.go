package krun

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/ebitengine/purego"
)

// LibraryEnv names the environment variable that gives an explicit path to
// the libkrun shared library. When it is set, Load tries only that path.
const LibraryEnv = "THROWAWAYSH_LIBKRUN"

var (
	// ErrLibkrunNotFound means that no libkrun shared library could be
	// opened. The error text names every file tried and how to install
	// libkrun.
	ErrLibkrunNotFound = errors.New("libkrun not found")

	// ErrLibkrunIncompatible means that a shared library was opened but
	// lacks symbols this package calls: either it is not libkrun at all, or
	// it is a libkrun release older than this package needs.
	ErrLibkrunIncompatible = errors.New("libkrun lacks required symbols")
)

// installHint is the part of an error that explains how to install libkrun.
// libkrun loads its guest kernel from libkrunfw at run time, so building from
// source needs both.
const installHint = "install libkrun: Fedora `dnf install libkrun`, Arch `pacman -S libkrun`, " +
	"macOS `brew tap slp/krun && brew install libkrun`; elsewhere build libkrun and libkrunfw " +
	"from their releases (github.com/containers/libkrun, github.com/containers/libkrunfw). " +
	"If libkrun is installed in a directory the dynamic loader does not search, set " +
	LibraryEnv + " to the library's path"

// Lib is a loaded libkrun with every function this package calls resolved.
// The service only loads it and reads Path. Only a VM process (see
// RunChildIfRequested) configures and starts a VM through it, because
// krun_start_enter takes over the calling process for good.
type Lib struct {
	path   string
	handle uintptr

	initLog              func(targetFD int32, level, style, options uint32) int32
	createCtx            func() int32
	freeCtx              func(ctx uint32) int32
	setVMConfig          func(ctx uint32, vcpus uint8, ramMiB uint32) int32
	setRoot              func(ctx uint32, rootPath string) int32
	setWorkdir           func(ctx uint32, workdir string) int32
	setExec              func(ctx uint32, execPath string, argv, envp unsafe.Pointer) int32
	setPortMap           func(ctx uint32, portMap unsafe.Pointer) int32
	disableImplicitVsock func(ctx uint32) int32
	addVsock             func(ctx uint32, tsiFeatures uint32) int32
	addVsockPort         func(ctx uint32, port uint32, path string) int32
	fsAddOverlayFile     func(ctx uint32, fsTag, path string, data unsafe.Pointer, dataLen uintptr, mode uint32, oneShot bool) int32
	startEnter           func(ctx uint32) int32
}

// Path returns the file name under which the library was opened: the value
// of THROWAWAYSH_LIBKRUN, or a name such as "libkrun.so.1" that the dynamic
// loader resolved through its search path.
func (l *Lib) Path() string { return l.path }

// librarySymbol is one libkrun function the binding resolves at load time.
type librarySymbol struct {
	name string
	// fn points to the Lib field that receives the function.
	fn any
	// since names the libkrun release that has the function, where known.
	since string
}

// symbols lists every libkrun function the binding calls, in the order the
// error for a missing one lists them. krun_create_ctx comes first: a library
// without it is not libkrun at all.
func (l *Lib) symbols() []librarySymbol {
	return []librarySymbol{
		{name: "krun_create_ctx", fn: &l.createCtx},
		{name: "krun_free_ctx", fn: &l.freeCtx},
		{name: "krun_init_log", fn: &l.initLog},
		{name: "krun_set_vm_config", fn: &l.setVMConfig},
		{name: "krun_set_root", fn: &l.setRoot},
		{name: "krun_set_workdir", fn: &l.setWorkdir},
		{name: "krun_set_exec", fn: &l.setExec},
		{name: "krun_set_port_map", fn: &l.setPortMap},
		// Both came with libkrun's explicit vsock API, merged in December
		// 2025 and first released in 1.17.0.
		{name: "krun_disable_implicit_vsock", fn: &l.disableImplicitVsock, since: "1.17.0"},
		{name: "krun_add_vsock", fn: &l.addVsock, since: "1.17.0"},
		{name: "krun_add_vsock_port", fn: &l.addVsockPort},
		// Merged in May 2026, after the 1.18.0 version bump. 1.19.0 has it.
		{name: "krun_fs_add_overlay_file", fn: &l.fsAddOverlayFile, since: "1.19.0"},
		{name: "krun_start_enter", fn: &l.startEnter},
	}
}

// bind resolves every symbol with lookup, which returns 0 for a symbol the
// library lacks. It returns an error wrapping ErrLibkrunIncompatible that
// names every missing symbol.
func (l *Lib) bind(lookup func(name string) uintptr) error {
	var missing []librarySymbol
	for _, sym := range l.symbols() {
		addr := lookup(sym.name)
		if addr == 0 {
			missing = append(missing, sym)
			continue
		}
		purego.RegisterFunc(sym.fn, addr)
	}
	if len(missing) == 0 {
		return nil
	}

	if missing[0].name == "krun_create_ctx" {
		return fmt.Errorf("krun: %w: %q has no krun_create_ctx, so it is not libkrun; "+
			"set %s to the path of libkrun or unset it", ErrLibkrunIncompatible, l.path, LibraryEnv)
	}
	names := make([]string, 0, len(missing))
	for _, sym := range missing {
		if sym.since != "" {
			names = append(names, fmt.Sprintf("%s (libkrun %s or later has it)", sym.name, sym.since))
		} else {
			names = append(names, sym.name)
		}
	}
	return fmt.Errorf("krun: %w: libkrun at %q has no %s; install a newer libkrun",
		ErrLibkrunIncompatible, l.path, strings.Join(names, ", "))
}

// The load cache is package state on purpose: dlopen maps a library once
// per process and Load never closes it, so a second Lib for the same file
// would only resolve the same symbols again.
var (
	loadMu sync.Mutex
	// loaded caches successful loads by the value of THROWAWAYSH_LIBKRUN,
	// so tests that change it get a fresh attempt. Failures are not cached:
	// an operator may install libkrun while the service runs.
	loaded = map[string]*Lib{}
)

// Load opens libkrun and resolves every function this package calls. It is
// safe to call more than once and from several goroutines: a successful load
// is cached and never closed.
//
// With THROWAWAYSH_LIBKRUN set, Load tries only that path. Otherwise it has
// the dynamic loader look up libkrun.so.1 and then libkrun.so on Linux, or
// libkrun.1.dylib and libkrun.dylib (also under /opt/homebrew/lib and
// /usr/local/lib) on macOS.
//
// Errors wrap ErrLibkrunNotFound when no file could be opened, with the files
// tried and install instructions in the text, or ErrLibkrunIncompatible when
// the library lacks a symbol.
//
// Load does not check libkrunfw, the guest kernel library that libkrun opens
// while it configures or starts a VM. A missing libkrunfw shows up as
// ErrBootFailed from the VM's Wait.
func Load() (*Lib, error) {
	explicit := os.Getenv(LibraryEnv)

	loadMu.Lock()
	defer loadMu.Unlock()
	if lib, ok := loaded[explicit]; ok {
		return lib, nil
	}

	candidates := libraryCandidates
	if explicit != "" {
		candidates = []string{explicit}
	}
	lib, err := loadFrom(candidates)
	if err != nil {
		return nil, err
	}
	loaded[explicit] = lib
	return lib, nil
}

// loadFrom opens the first of candidates that the dynamic loader accepts and
// binds its symbols. A library that opens but lacks symbols ends the search,
// so the error describes the library the operator actually has.
func loadFrom(candidates []string) (*Lib, error) {
	var failures []string
	for _, path := range candidates {
		handle, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
		if err != nil {
			failures = append(failures, fmt.Sprintf("%s (%v)", path, err))
			continue
		}

		lib := &Lib{path: path, handle: handle}
		lookup := func(name string) uintptr {
			addr, err := purego.Dlsym(handle, name)
			if err != nil {
				return 0
			}
			return addr
		}
		if err := lib.bind(lookup); err != nil {
			_ = purego.Dlclose(handle)
			return nil, err
		}
		return lib, nil
	}
	return nil, fmt.Errorf("krun: %w: tried %s; %s",
		ErrLibkrunNotFound, strings.Join(failures, ", "), installHint)
}

// CallError is a negative return value from a libkrun function: libkrun
// returns -errno on failure.
type CallError struct {
	// Call is the libkrun function, for example "krun_set_root".
	Call string
	// Errno is the error number libkrun returned, made positive.
	Errno syscall.Errno
}

// Error returns the call, the errno's text and libkrun's negative return
// value.
func (e *CallError) Error() string {
	return fmt.Sprintf("%s: %s (%d)", e.Call, e.Errno.Error(), -int(e.Errno))
}

// Unwrap returns the errno, so errors.Is(err, fs.ErrNotExist) and similar
// checks work.
func (e *CallError) Unwrap() error { return e.Errno }

// checkCall turns a libkrun return value into an error.
func checkCall(call string, ret int32) error {
	if ret >= 0 {
		return nil
	}
	return &CallError{Call: call, Errno: syscall.Errno(-ret)}
}

// libkrun log levels and options, from libkrun.h.
const (
	logLevelError = 1
	logStyleNever = 2
	// logOptionNoEnv stops RUST_LOG and similar variables from overriding
	// the level and target set here.
	logOptionNoEnv = 1
)

// krunRootTag is the virtio-fs tag of the root set by krun_set_root
// (KRUN_FS_ROOT_TAG in libkrun.h).
const krunRootTag = "/dev/root"

func (l *Lib) initLogging(fd int, level uint32) error {
	return checkCall("krun_init_log", l.initLog(int32(fd), level, logStyleNever, logOptionNoEnv))
}

func (l *Lib) createContext() (uint32, error) {
	ret := l.createCtx()
	if err := checkCall("krun_create_ctx", ret); err != nil {
		return 0, err
	}
	return uint32(ret), nil
}

func (l *Lib) freeContext(ctx uint32) error {
	return checkCall("krun_free_ctx", l.freeCtx(ctx))
}

func (l *Lib) setVMResources(ctx uint32, cpus uint8, memoryMiB uint32) error {
	return checkCall("krun_set_vm_config", l.setVMConfig(ctx, cpus, memoryMiB))
}

func (l *Lib) setRootDir(ctx uint32, root string) error {
	return checkCall("krun_set_root", l.setRoot(ctx, root))
}

func (l *Lib) setWorkingDir(ctx uint32, dir string) error {
	return checkCall("krun_set_workdir", l.setWorkdir(ctx, dir))
}

// setWorkload passes envp as an explicit array even when it is empty,
// because libkrun copies the whole host environment into the guest when envp
// is NULL.
func (l *Lib) setWorkload(ctx uint32, execPath string, argv, envp []string) error {
	return checkCall("krun_set_exec", l.setExec(ctx, execPath, l.cStringArray(argv), l.cStringArray(envp)))
}

// setPorts passes portMap as an explicit array even when it is empty: NULL
// would expose every port the guest listens on, an empty list exposes none.
func (l *Lib) setPorts(ctx uint32, portMap []string) error {
	return checkCall("krun_set_port_map", l.setPortMap(ctx, l.cStringArray(portMap)))
}

func (l *Lib) removeImplicitVsock(ctx uint32) error {
	return checkCall("krun_disable_implicit_vsock", l.disableImplicitVsock(ctx))
}

func (l *Lib) addVsockDevice(ctx uint32, tsiFeatures uint32) error {
	return checkCall("krun_add_vsock", l.addVsock(ctx, tsiFeatures))
}

func (l *Lib) mapVsockPort(ctx uint32, port uint32, path string) error {
	return checkCall("krun_add_vsock_port", l.addVsockPort(ctx, port, path))
}

// addOverlayFile pins data for the life of the process: libkrun keeps the
// pointer, not a copy, and reads it whenever the guest reads the file.
func (l *Lib) addOverlayFile(ctx uint32, fsTag, name string, data []byte, mode uint32, oneShot bool) error {
	size := len(data)
	if cap(data) == 0 {
		// libkrun rejects a NULL data pointer, even for an empty file.
		data = make([]byte, 1)
	}
	ptr := unsafe.Pointer(unsafe.SliceData(data))
	l.pin(ptr)
	return checkCall("krun_fs_add_overlay_file",
		l.fsAddOverlayFile(ctx, fsTag, name, ptr, uintptr(size), mode, oneShot))
}

func (l *Lib) startVM(ctx uint32) error {
	return checkCall("krun_start_enter", l.startEnter(ctx))
}

// pins keeps the Go memory handed to libkrun (overlay file contents, argv
// and envp strings) pinned for the life of the process, because libkrun
// keeps some of those pointers until the VM ends. It is a package variable
// because a runtime.Pinner that is garbage collected while it still pins
// memory panics.
var pins struct {
	sync.Mutex
	pinner runtime.Pinner
}

func (l *Lib) pin(ptr unsafe.Pointer) {
	pins.Lock()
	defer pins.Unlock()
	pins.pinner.Pin(ptr)
}

// cStringArray returns a pinned, NULL-terminated array of pointers to
// NUL-terminated copies of values. The result is never nil, even for an
// empty values. The strings must not contain NUL; Spec.Validate checks that.
func (l *Lib) cStringArray(values []string) unsafe.Pointer {
	array := make([]*byte, len(values)+1)
	for i, v := range values {
		buf := append([]byte(v), 0)
		array[i] = &buf[0]
		l.pin(unsafe.Pointer(array[i]))
	}
	l.pin(unsafe.Pointer(&array[0]))
	return unsafe.Pointer(&array[0])
}
