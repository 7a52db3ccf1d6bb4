package rootfs

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// scriptResult is the outcome of one run of a shell script.
type scriptResult struct {
	exitCode int
	stdout   string
	stderr   string
}

// runScript runs bash SCRIPT ARGS... with extra environment entries and a
// private TMPDIR, and fails the test if the script does not finish within a
// minute or leaves anything in TMPDIR.
func runScript(t *testing.T, script string, env []string, args ...string) scriptResult {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not installed")
	}
	abs, err := filepath.Abs(script)
	if err != nil {
		t.Fatal(err)
	}
	tmpDir := t.TempDir()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, append([]string{abs}, args...)...)
	cmd.Env = append(withoutVar(os.Environ(), "BUSYBOX_DEB"), "TMPDIR="+tmpDir)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err = cmd.Run()

	result := scriptResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %q timed out\nstderr:\n%s", script, args, result.stderr)
	case errors.As(err, &exitErr):
		result.exitCode = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("run %s: %v", script, err)
	}

	left, err := os.ReadDir(tmpDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("%s %q left %d entries in TMPDIR, first %q", script, args, len(left), left[0].Name())
	}
	return result
}

func withoutVar(env []string, name string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// hostMachine returns the ELF machine of the host, or skips the test on an
// architecture this table does not know.
func hostMachine(t *testing.T) elf.Machine {
	t.Helper()
	machines := map[string]elf.Machine{
		"amd64":   elf.EM_X86_64,
		"arm64":   elf.EM_AARCH64,
		"riscv64": elf.EM_RISCV,
		"ppc64le": elf.EM_PPC64,
	}
	m, ok := machines[runtime.GOARCH]
	if !ok {
		t.Skipf("no ELF machine known for GOARCH %s", runtime.GOARCH)
	}
	return m
}

// otherMachine returns an ELF machine that differs from the host's.
func otherMachine(t *testing.T) elf.Machine {
	if hostMachine(t) == elf.EM_AARCH64 {
		return elf.EM_X86_64
	}
	return elf.EM_AARCH64
}

// elfSpec describes a minimal 64-bit little-endian ELF file. It has only the
// headers that install_guest_agent.sh reads, so it cannot run.
type elfSpec struct {
	machine elf.Machine
	typ     elf.Type
	interp  bool // add a PT_INTERP program header, as a dynamic executable has
	// badPhoff points the program header table past the end of the file.
	badPhoff bool
}

func writeELF(t *testing.T, path string, spec elfSpec) {
	t.Helper()
	const headerSize, progSize = 64, 56
	progs := []elf.Prog64{{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Align: 0x1000}}
	if spec.interp {
		progs = append([]elf.Prog64{{Type: uint32(elf.PT_PHDR)}, {Type: uint32(elf.PT_INTERP)}}, progs...)
	}
	header := elf.Header64{
		Type:      uint16(spec.typ),
		Machine:   uint16(spec.machine),
		Version:   uint32(elf.EV_CURRENT),
		Phoff:     headerSize,
		Ehsize:    headerSize,
		Phentsize: progSize,
		Phnum:     uint16(len(progs)),
	}
	copy(header.Ident[:], elf.ELFMAG)
	header.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	header.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	header.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	if spec.badPhoff {
		header.Phoff = 1 << 20
	}

	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, header); err != nil {
		t.Fatal(err)
	}
	for _, p := range progs {
		if err := binary.Write(&buf, binary.LittleEndian, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}

	// debug/elf must agree that the file is what the spec says, or the
	// script tests below would prove nothing.
	if spec.badPhoff {
		return
	}
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("crafted ELF %s does not parse: %v", path, err)
	}
	defer f.Close()
	hasInterp := false
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			hasInterp = true
		}
	}
	if f.Machine != spec.machine || f.Type != spec.typ || hasInterp != spec.interp {
		t.Fatalf("crafted ELF %s parses as machine %v type %v interp %v", path, f.Machine, f.Type, hasInterp)
	}
}
