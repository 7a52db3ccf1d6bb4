package krun

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// recordingAPI is a vmAPI that records each call as text and fails the call
// named by failOn.
type recordingAPI struct {
	calls  []string
	failOn string
	envp   []string
}

func (r *recordingAPI) record(name string, args ...any) error {
	parts := make([]string, len(args))
	for i, a := range args {
		parts[i] = fmt.Sprintf("%#v", a)
	}
	r.calls = append(r.calls, name+"("+strings.Join(parts, ", ")+")")
	if name == r.failOn {
		return &CallError{Call: name, Errno: syscall.EINVAL}
	}
	return nil
}

func (r *recordingAPI) initLogging(fd int, level uint32) error {
	return r.record("initLogging", fd, level)
}

func (r *recordingAPI) createContext() (uint32, error) {
	return 7, r.record("createContext")
}
func (r *recordingAPI) freeContext(ctx uint32) error { return r.record("freeContext", ctx) }
func (r *recordingAPI) setVMResources(ctx uint32, cpus uint8, memoryMiB uint32) error {
	return r.record("setVMResources", ctx, cpus, memoryMiB)
}
func (r *recordingAPI) setRootDir(ctx uint32, root string) error {
	return r.record("setRootDir", ctx, root)
}
func (r *recordingAPI) removeImplicitVsock(ctx uint32) error {
	return r.record("removeImplicitVsock", ctx)
}
func (r *recordingAPI) addVsockDevice(ctx uint32, tsiFeatures uint32) error {
	return r.record("addVsockDevice", ctx, tsiFeatures)
}
func (r *recordingAPI) setPorts(ctx uint32, portMap []string) error {
	return r.record("setPorts", ctx, portMap)
}
func (r *recordingAPI) mapVsockPort(ctx uint32, port uint32, path string) error {
	return r.record("mapVsockPort", ctx, port, path)
}
func (r *recordingAPI) addOverlayFile(ctx uint32, fsTag, name string, data []byte, mode uint32, oneShot bool) error {
	return r.record("addOverlayFile", ctx, fsTag, name, string(data), mode, oneShot)
}
func (r *recordingAPI) setWorkingDir(ctx uint32, dir string) error {
	return r.record("setWorkingDir", ctx, dir)
}
func (r *recordingAPI) setWorkload(ctx uint32, execPath string, argv, envp []string) error {
	r.envp = envp
	return r.record("setWorkload", ctx, execPath, argv, envp)
}
func (r *recordingAPI) startVM(ctx uint32) error { return r.record("startVM", ctx) }

func TestConfigureVMNetworkOff(t *testing.T) {
	root := t.TempDir()
	spec := Spec{
		Root:       root,
		Exec:       "/bin/sh",
		Args:       []string{"/.cmd"},
		Env:        []string{"TERM=xterm", "HOME=/root"},
		Workdir:    "/root",
		CPUs:       2,
		MemoryMiB:  512,
		VsockPorts: []VsockPort{{Port: 1024, Path: "/run/a.sock"}, {Port: 1025, Path: "/run/b.sock"}},
		Files:      map[string][]byte{"b": []byte("second"), ".cmd": []byte("echo hi")},
	}
	api := &recordingAPI{}
	ctx, err := configureVM(api, spec, 4)
	if err != nil {
		t.Fatalf("configureVM: %v", err)
	}
	if ctx != 7 {
		t.Errorf("context = %d, want 7 from createContext", ctx)
	}

	want := []string{
		`initLogging(4, 0x1)`,
		`createContext()`,
		`setVMResources(0x7, 0x2, 0x200)`,
		fmt.Sprintf(`setRootDir(0x7, %q)`, root),
		`removeImplicitVsock(0x7)`,
		`addVsockDevice(0x7, 0x0)`,
		`mapVsockPort(0x7, 0x400, "/run/a.sock")`,
		`mapVsockPort(0x7, 0x401, "/run/b.sock")`,
		`addOverlayFile(0x7, "/dev/root", ".cmd", "echo hi", 0x81a4, false)`,
		`addOverlayFile(0x7, "/dev/root", "b", "second", 0x81a4, false)`,
		`setWorkingDir(0x7, "/root")`,
		`setWorkload(0x7, "/bin/sh", []string{"/.cmd"}, []string{"TERM=xterm", "HOME=/root"})`,
	}
	assertCalls(t, api.calls, want)
}

func TestConfigureVMNetworkOn(t *testing.T) {
	root := t.TempDir()
	spec := Spec{Root: root, Exec: "/bin/true", Network: true}
	api := &recordingAPI{}
	if _, err := configureVM(api, spec, 4); err != nil {
		t.Fatalf("configureVM: %v", err)
	}

	want := []string{
		`initLogging(4, 0x1)`,
		`createContext()`,
		`setVMResources(0x7, 0x1, 0x100)`,
		fmt.Sprintf(`setRootDir(0x7, %q)`, root),
		`setPorts(0x7, []string{})`,
		`setWorkingDir(0x7, "/")`,
		`setWorkload(0x7, "/bin/true", []string{}, []string{})`,
	}
	assertCalls(t, api.calls, want)
	for _, call := range api.calls {
		if strings.Contains(call, "Vsock") {
			t.Errorf("with Network on, configureVM called %s; the implicit vsock device carries TSI and must stay", call)
		}
	}
}

func TestConfigureVMEnvpNeverNil(t *testing.T) {
	api := &recordingAPI{}
	if _, err := configureVM(api, Spec{Root: t.TempDir(), Exec: "/bin/true"}, 4); err != nil {
		t.Fatalf("configureVM: %v", err)
	}
	if api.envp == nil {
		t.Fatal("setWorkload got a nil envp; libkrun would copy the host environment into the guest")
	}
}

func TestConfigureVMFailureFreesContext(t *testing.T) {
	api := &recordingAPI{failOn: "setRootDir"}
	_, err := configureVM(api, Spec{Root: t.TempDir(), Exec: "/bin/true"}, 4)
	if err == nil {
		t.Fatal("configureVM succeeded although setRootDir failed")
	}
	if !errors.Is(err, syscall.EINVAL) {
		t.Errorf("error %v does not wrap the errno", err)
	}
	if !strings.Contains(err.Error(), "setRootDir: invalid argument (-22)") {
		t.Errorf("error %q does not name the call and errno", err)
	}
	last := api.calls[len(api.calls)-1]
	if last != "freeContext(0x7)" {
		t.Errorf("last call = %s, want freeContext(0x7)", last)
	}
	if slices.ContainsFunc(api.calls, func(c string) bool { return strings.HasPrefix(c, "setWorkload") }) {
		t.Error("configureVM went on after a failed call")
	}
}

func TestBootChildConfiguresAndStarts(t *testing.T) {
	spec := Spec{ID: "vm1", Root: t.TempDir(), Exec: "/bin/sh", Args: []string{"-c", "exit 3"}}
	api := &recordingAPI{failOn: "startVM"}
	messages := &strings.Builder{}

	confined := func(s Spec) (Spec, error) {
		s.Root = "/jail/root"
		return s, nil
	}
	err := bootChild(specReader(t, spec), messages, 4, func() (vmAPI, error) { return api, nil }, confined)
	if err == nil || !strings.Contains(err.Error(), "krun: start vm: startVM: invalid argument (-22)") {
		t.Fatalf("bootChild error = %v, want the startVM failure", err)
	}
	if !slices.Contains(api.calls, `setRootDir(0x7, "/jail/root")`) {
		t.Errorf("calls = %v, want setRootDir with the root that confine returned", api.calls)
	}
	if got, want := messages.String(), "{\"spec_received\":true}\n"; got != want {
		t.Errorf("messages = %q, want %q", got, want)
	}
	if last := api.calls[len(api.calls)-1]; last != "startVM(0x7)" {
		t.Errorf("last call = %s, want startVM(0x7)", last)
	}
}

func TestBootChildRejectsInvalidSpec(t *testing.T) {
	spec := Spec{Root: t.TempDir(), Exec: "sh"}
	loaded := false
	err := bootChild(specReader(t, spec), io.Discard, 4, func() (vmAPI, error) {
		loaded = true
		return &recordingAPI{}, nil
	}, noJail)
	if err == nil || !strings.Contains(err.Error(), "Spec.Exec") {
		t.Fatalf("bootChild error = %v, want a Spec.Exec validation error", err)
	}
	if loaded {
		t.Error("bootChild loaded libkrun for an invalid spec")
	}
}

func TestBootChildReportsLoadFailure(t *testing.T) {
	spec := Spec{Root: t.TempDir(), Exec: "/bin/sh"}
	loadErr := fmt.Errorf("krun: %w: tried x", ErrLibkrunNotFound)
	err := bootChild(specReader(t, spec), io.Discard, 4, func() (vmAPI, error) { return nil, loadErr }, noJail)
	if !errors.Is(err, ErrLibkrunNotFound) {
		t.Fatalf("bootChild error = %v, want ErrLibkrunNotFound", err)
	}
}

// A VM process that cannot enter its jail must not configure or start the
// VM: the guest would reach the host through the shared root.
func TestBootChildStopsWhenConfineFails(t *testing.T) {
	spec := Spec{Root: t.TempDir(), Exec: "/bin/sh"}
	api := &recordingAPI{}
	confineErr := errors.New("sandbox: mount tmpfs: operation not permitted")
	err := bootChild(specReader(t, spec), io.Discard, 4, func() (vmAPI, error) { return api, nil },
		func(Spec) (Spec, error) { return Spec{}, confineErr })
	if !errors.Is(err, confineErr) {
		t.Fatalf("bootChild error = %v, want the confine error", err)
	}
	if len(api.calls) != 0 {
		t.Errorf("libkrun calls after a failed confine: %v, want none", api.calls)
	}
}

// noJail is a confine step that leaves the spec as it is.
func noJail(s Spec) (Spec, error) { return s, nil }

func assertCalls(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("calls:\n  got  %s\n  want %s", strings.Join(got, "\n       "), strings.Join(want, "\n       "))
	}
}
