package rootfs

import (
	"bytes"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const installScript = "../install_guest_agent.sh"

func TestInstallGuestAgentErrors(t *testing.T) {
	tests := []struct {
		name string
		// setup returns the script arguments. base is an empty directory.
		setup    func(t *testing.T, base string) []string
		wantExit int
		want     []string
	}{
		{
			name:     "no arguments",
			setup:    func(t *testing.T, base string) []string { return nil },
			wantExit: 2,
			want:     []string{"usage:", "ROOTFS [AGENT_BINARY]"},
		},
		{
			name: "too many arguments",
			setup: func(t *testing.T, base string) []string {
				return []string{base, "a", "b"}
			},
			wantExit: 2,
			want:     []string{"usage:"},
		},
		{
			name: "empty rootfs argument",
			setup: func(t *testing.T, base string) []string {
				return []string{""}
			},
			wantExit: 2,
			want:     []string{"usage:"},
		},
		{
			name: "rootfs missing",
			setup: func(t *testing.T, base string) []string {
				return []string{filepath.Join(base, "nope"), staticAgent(t, base)}
			},
			wantExit: 1,
			want:     []string{"nope", "not found", "make rootfs"},
		},
		{
			name: "rootfs is a file",
			setup: func(t *testing.T, base string) []string {
				file := filepath.Join(base, "file")
				writeFile(t, file, "x", 0o644)
				return []string{file, staticAgent(t, base)}
			},
			wantExit: 1,
			want:     []string{"file", "is not a directory"},
		},
		{
			name: "agent missing",
			setup: func(t *testing.T, base string) []string {
				return []string{mkdir(t, base, "root"), filepath.Join(base, "agent")}
			},
			wantExit: 1,
			want:     []string{"agent", "not found", "make build-agent"},
		},
		{
			name: "default agent missing",
			setup: func(t *testing.T, base string) []string {
				// The default agent is bin/ next to the script, so run a copy
				// of the script from a directory without bin/.
				copyFile(t, installScript, filepath.Join(base, "repo", "install_guest_agent.sh"), 0o755)
				return []string{mkdir(t, base, "root")}
			},
			wantExit: 1,
			want:     []string{"repo/bin/throwawaysh-guest-agent", "not found", "make build-agent"},
		},
		{
			name: "agent is a directory",
			setup: func(t *testing.T, base string) []string {
				return []string{mkdir(t, base, "root"), mkdir(t, base, "agent")}
			},
			wantExit: 1,
			want:     []string{"not a regular file"},
		},
		{
			name: "agent is a text file",
			setup: func(t *testing.T, base string) []string {
				agent := filepath.Join(base, "agent")
				writeFile(t, agent, "#!/bin/sh\necho hi\n", 0o755)
				return []string{mkdir(t, base, "root"), agent}
			},
			wantExit: 1,
			want:     []string{"agent", "is not an ELF executable", "make build-agent"},
		},
		{
			name: "agent is shorter than an ELF header",
			setup: func(t *testing.T, base string) []string {
				agent := filepath.Join(base, "agent")
				writeFile(t, agent, "\x7fELF", 0o755)
				return []string{mkdir(t, base, "root"), agent}
			},
			wantExit: 1,
			want:     []string{"is not an ELF executable"},
		},
		{
			name: "agent is an object file",
			setup: func(t *testing.T, base string) []string {
				agent := filepath.Join(base, "agent.o")
				writeELF(t, agent, elfSpec{machine: hostMachine(t), typ: elf.ET_REL})
				return []string{mkdir(t, base, "root"), agent}
			},
			wantExit: 1,
			want:     []string{"not an executable (e_type 1)"},
		},
		{
			name: "agent dynamically linked",
			setup: func(t *testing.T, base string) []string {
				agent := filepath.Join(base, "agent")
				writeELF(t, agent, elfSpec{machine: hostMachine(t), typ: elf.ET_DYN, interp: true})
				return []string{mkdir(t, base, "root"), agent}
			},
			wantExit: 1,
			want:     []string{"is dynamically linked", "CGO_ENABLED=0"},
		},
		{
			name: "agent is host /bin/true",
			setup: func(t *testing.T, base string) []string {
				if !isDynamicELF("/bin/true") {
					t.Skip("/bin/true is not a dynamically linked ELF file on this host")
				}
				agent := filepath.Join(base, "true")
				copyFile(t, "/bin/true", agent, 0o755)
				return []string{mkdir(t, base, "root"), agent}
			},
			wantExit: 1,
			want:     []string{"is dynamically linked"},
		},
		{
			name: "agent program headers past end of file",
			setup: func(t *testing.T, base string) []string {
				agent := filepath.Join(base, "agent")
				writeELF(t, agent, elfSpec{machine: hostMachine(t), typ: elf.ET_EXEC, badPhoff: true})
				return []string{mkdir(t, base, "root"), agent}
			},
			wantExit: 1,
			want:     []string{"damaged ELF program header table"},
		},
		{
			name: "agent architecture differs from rootfs busybox",
			setup: func(t *testing.T, base string) []string {
				root := mkdir(t, base, "root")
				writeELF(t, filepath.Join(root, "bin", "busybox"), elfSpec{machine: hostMachine(t), typ: elf.ET_EXEC})
				agent := filepath.Join(base, "agent")
				writeELF(t, agent, elfSpec{machine: otherMachine(t), typ: elf.ET_EXEC})
				return []string{root, agent}
			},
			wantExit: 1,
			want:     []string{"is built for", "GUEST_ARCH="},
		},
		{
			name: "usr/local is a symbolic link",
			setup: func(t *testing.T, base string) []string {
				root := mkdir(t, base, "root")
				mkdir(t, root, "usr")
				outside := mkdir(t, base, "outside")
				if err := os.Symlink(outside, filepath.Join(root, "usr", "local")); err != nil {
					t.Fatal(err)
				}
				return []string{root, staticAgent(t, base)}
			},
			wantExit: 1,
			want:     []string{"usr/local' is a symbolic link"},
		},
		{
			name: "usr is a file",
			setup: func(t *testing.T, base string) []string {
				root := mkdir(t, base, "root")
				writeFile(t, filepath.Join(root, "usr"), "", 0o644)
				return []string{root, staticAgent(t, base)}
			},
			wantExit: 1,
			want:     []string{"usr' exists and is not a directory"},
		},
		{
			name: "destination is a directory",
			setup: func(t *testing.T, base string) []string {
				root := mkdir(t, base, "root")
				mkdir(t, root, "usr/local/bin/throwawaysh-guest-agent")
				return []string{root, staticAgent(t, base)}
			},
			wantExit: 1,
			want:     []string{"throwawaysh-guest-agent' is a directory"},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			args := tt.setup(t, base)
			script := installScript
			if _, err := os.Stat(filepath.Join(base, "repo", "install_guest_agent.sh")); err == nil {
				script = filepath.Join(base, "repo", "install_guest_agent.sh")
			}

			res := runScript(t, script, nil, args...)

			if res.exitCode != tt.wantExit {
				t.Errorf("exit code = %d, want %d\nstderr:\n%s", res.exitCode, tt.wantExit, res.stderr)
			}
			for _, want := range tt.want {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("stderr %q does not contain %q", res.stderr, want)
				}
			}
			if len(args) > 0 && args[0] != "" {
				dest := filepath.Join(args[0], "usr", "local", "bin", "throwawaysh-guest-agent")
				if info, err := os.Lstat(dest); err == nil && info.Mode().IsRegular() {
					t.Errorf("failed install still wrote %s", dest)
				}
			}
		})
	}
}

func TestInstallGuestAgentSuccess(t *testing.T) {
	base := t.TempDir()
	root := mkdir(t, base, "root dir") // a space must survive the quoting
	writeELF(t, filepath.Join(root, "bin", "busybox"), elfSpec{machine: hostMachine(t), typ: elf.ET_EXEC})
	agent := staticAgent(t, base)

	res := runScript(t, installScript, nil, root, agent)
	if res.exitCode != 0 {
		t.Fatalf("exit code = %d, stderr:\n%s", res.exitCode, res.stderr)
	}
	dest := filepath.Join(root, "usr", "local", "bin", "throwawaysh-guest-agent")
	assertInstalled(t, dest, agent)
	ok, err := HasAgent(root)
	if err != nil || !ok {
		t.Errorf("HasAgent after install = %v, %v, want true, nil", ok, err)
	}

	// A second install replaces the file with the new binary.
	newer := filepath.Join(base, "newer")
	writeELF(t, newer, elfSpec{machine: hostMachine(t), typ: elf.ET_DYN})
	res = runScript(t, installScript, nil, root, newer)
	if res.exitCode != 0 {
		t.Fatalf("second install: exit code = %d, stderr:\n%s", res.exitCode, res.stderr)
	}
	assertInstalled(t, dest, newer)
}

func TestInstallGuestAgentDefaultBinary(t *testing.T) {
	base := t.TempDir()
	repo := mkdir(t, base, "repo")
	copyFile(t, installScript, filepath.Join(repo, "install_guest_agent.sh"), 0o755)
	agent := filepath.Join(repo, "bin", "throwawaysh-guest-agent")
	writeELF(t, agent, elfSpec{machine: hostMachine(t), typ: elf.ET_EXEC})
	root := mkdir(t, base, "root")

	res := runScript(t, filepath.Join(repo, "install_guest_agent.sh"), nil, root)
	if res.exitCode != 0 {
		t.Fatalf("exit code = %d, stderr:\n%s", res.exitCode, res.stderr)
	}
	assertInstalled(t, filepath.Join(root, "usr", "local", "bin", "throwawaysh-guest-agent"), agent)
}

// TestInstallGuestAgentReplacesLink pins that a symbolic link at the
// destination is replaced, not written through. mv would move the new file
// into a directory that the link points to.
func TestInstallGuestAgentReplacesLink(t *testing.T) {
	base := t.TempDir()
	root := mkdir(t, base, "root")
	target := mkdir(t, base, "elsewhere")
	dest := filepath.Join(root, "usr", "local", "bin", "throwawaysh-guest-agent")
	mkdir(t, root, "usr/local/bin")
	if err := os.Symlink(target, dest); err != nil {
		t.Fatal(err)
	}
	agent := staticAgent(t, base)

	res := runScript(t, installScript, nil, root, agent)
	if res.exitCode != 0 {
		t.Fatalf("exit code = %d, stderr:\n%s", res.exitCode, res.stderr)
	}
	assertInstalled(t, dest, agent)
	entries, err := os.ReadDir(target)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("install wrote %q into the link target %s", entries[0].Name(), target)
	}
}

// assertInstalled checks that dest is a regular file with mode 0755 and the
// content of src, and that no temporary file is left beside it.
func assertInstalled(t *testing.T, dest, src string) {
	t.Helper()
	info, err := os.Lstat(dest)
	if err != nil {
		t.Fatalf("agent not installed: %v", err)
	}
	if !info.Mode().IsRegular() {
		t.Errorf("%s has type %v, want a regular file", dest, info.Mode().Type())
	}
	if perm := info.Mode().Perm(); perm != 0o755 {
		t.Errorf("%s has mode %#o, want 0755", dest, perm)
	}
	got, err := os.ReadFile(dest)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s does not have the content of %s", dest, src)
	}
	entries, err := os.ReadDir(filepath.Dir(dest))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".throwawaysh-guest-agent.") {
			t.Errorf("temporary file %s left in %s", e.Name(), filepath.Dir(dest))
		}
	}
}

// staticAgent writes a crafted static ELF executable for the host
// architecture and returns its path.
func staticAgent(t *testing.T, base string) string {
	t.Helper()
	path := filepath.Join(base, "agent-static")
	writeELF(t, path, elfSpec{machine: hostMachine(t), typ: elf.ET_EXEC})
	return path
}

func isDynamicELF(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}

func mkdir(t *testing.T, base, rel string) string {
	t.Helper()
	path := filepath.Join(base, filepath.FromSlash(rel))
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeFile(t *testing.T, path, content string, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string, perm os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dst, string(data), perm)
}
