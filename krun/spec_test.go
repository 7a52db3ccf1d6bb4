package krun

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSpecValidate(t *testing.T) {
	root := t.TempDir()
	regularFile := filepath.Join(root, "file")
	if err := os.WriteFile(regularFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	valid := func() Spec {
		return Spec{
			ID: "v", Root: root, Exec: "/bin/sh", Args: []string{"-c", "echo hi"}, Env: []string{"TERM=xterm"},
			Workdir: "/root", CPUs: 2, MemoryMiB: 64,
			VsockPorts: []VsockPort{{Port: 1024, Path: "/run/x.sock"}},
			Files:      map[string][]byte{".cmd": []byte("echo 'quoted \"text\"'")},
		}
	}

	tests := []struct {
		name   string
		change func(*Spec)
		want   []string // substrings of the error; none means valid
	}{
		{"valid", func(*Spec) {}, nil},
		{"zero values take defaults", func(s *Spec) { s.CPUs, s.MemoryMiB, s.Workdir = 0, 0, "" }, nil},
		{"empty env and args", func(s *Spec) { s.Args, s.Env = nil, nil }, nil},
		{"empty file allowed", func(s *Spec) { s.Files["empty"] = nil }, nil},

		{"root empty", func(s *Spec) { s.Root = "" }, []string{"Spec.Root: empty"}},
		{"root relative", func(s *Spec) { s.Root = "rootfs" }, []string{`Spec.Root "rootfs": relative path`}},
		{"root missing", func(s *Spec) { s.Root = filepath.Join(root, "nope") }, []string{"Spec.Root", "no such directory"}},
		{"root is a file", func(s *Spec) { s.Root = regularFile }, []string{"Spec.Root", "not a directory"}},

		{"exec empty", func(s *Spec) { s.Exec = "" }, []string{"Spec.Exec: empty"}},
		{"exec relative", func(s *Spec) { s.Exec = "bin/sh" }, []string{`Spec.Exec "bin/sh": not an absolute guest path`}},
		{"exec quote", func(s *Spec) { s.Exec = `/bin/"sh` }, []string{"Spec.Exec", "double quote", "Spec.Files"}},
		{"workdir relative", func(s *Spec) { s.Workdir = "tmp" }, []string{`Spec.Workdir "tmp": not an absolute guest path`}},
		{"workdir NUL", func(s *Spec) { s.Workdir = "/t\x00mp" }, []string{"Spec.Workdir", "NUL byte"}},
		{"arg quote", func(s *Spec) { s.Args[1] = `echo "hi"` }, []string{`Spec.Args[1] "echo \"hi\""`, "double quote"}},
		{"arg NUL", func(s *Spec) { s.Args[0] = "-\x00c" }, []string{`Spec.Args[0] "-\x00c": contains a NUL byte`}},
		{"env quote", func(s *Spec) { s.Env[0] = `PS1="$ "` }, []string{"Spec.Env[0]", "double quote"}},
		{"env NUL", func(s *Spec) { s.Env[0] = "A=\x00" }, []string{"Spec.Env[0]", "NUL byte"}},
		{"env without equals", func(s *Spec) { s.Env[0] = "TERM" }, []string{`Spec.Env[0] "TERM": not of the form KEY=value`}},
		{"env empty key", func(s *Spec) { s.Env[0] = "=x" }, []string{"Spec.Env[0]", "KEY=value"}},
		{"command line too long", func(s *Spec) { s.Args = []string{strings.Repeat("a", MaxCommandLineBytes)} },
			[]string{"bytes on the guest kernel command line, over the 2048-byte limit"}},

		{"cpus negative", func(s *Spec) { s.CPUs = -1 }, []string{"Spec.CPUs -1: must be between 1 and 255"}},
		{"cpus too many", func(s *Spec) { s.CPUs = 256 }, []string{"Spec.CPUs 256"}},
		{"memory too small", func(s *Spec) { s.MemoryMiB = 31 }, []string{"Spec.MemoryMiB 31: must be between 32"}},
		{"memory negative", func(s *Spec) { s.MemoryMiB = -5 }, []string{"Spec.MemoryMiB -5"}},

		{"vsock path empty", func(s *Spec) { s.VsockPorts[0].Path = "" }, []string{"Spec.VsockPorts[0].Path: empty"}},
		{"vsock path long", func(s *Spec) { s.VsockPorts[0].Path = "/" + strings.Repeat("s", 99) },
			[]string{"Spec.VsockPorts[0].Path", "100 bytes", "under 100 bytes"}},
		{"vsock path NUL", func(s *Spec) { s.VsockPorts[0].Path = "/a\x00b" }, []string{"Spec.VsockPorts[0].Path", "NUL byte"}},
		{"vsock port twice", func(s *Spec) { s.VsockPorts = append(s.VsockPorts, VsockPort{Port: 1024, Path: "/run/y.sock"}) },
			[]string{"Spec.VsockPorts[1].Port 1024: already mapped by VsockPorts[0]"}},

		{"file name slash", func(s *Spec) { s.Files["a/b"] = nil }, []string{`Spec.Files name "a/b"`}},
		{"file name NUL", func(s *Spec) { s.Files["a\x00"] = nil }, []string{`Spec.Files name "a\x00"`}},
		{"file name empty", func(s *Spec) { s.Files[""] = nil }, []string{`Spec.Files name ""`}},
		{"file name dotdot", func(s *Spec) { s.Files[".."] = nil }, []string{`Spec.Files name ".."`}},
		{"files too large", func(s *Spec) { s.Files["big"] = make([]byte, MaxFilesBytes) },
			[]string{"Spec.Files", "over the 33554432-byte limit"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := valid()
			tc.change(&spec)
			err := spec.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted the spec")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if !strings.HasPrefix(err.Error(), "krun: invalid Spec.") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestSpecValidateJoinsErrors(t *testing.T) {
	err := Spec{Exec: "sh", CPUs: 300}.Validate()
	if err == nil {
		t.Fatal("Validate accepted the spec")
	}
	for _, want := range []string{"Spec.Root", "Spec.Exec", "Spec.CPUs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not report %s", err, want)
		}
	}
}

func TestQuoteValueShortensLongValues(t *testing.T) {
	got := quoteValue(strings.Repeat("é", 100))
	if !strings.HasSuffix(got, "... (200 bytes)") {
		t.Errorf("quoteValue = %q, want a shortened value with its size", got)
	}
	if strings.Contains(got, `\x`) {
		t.Errorf("quoteValue = %q cut a character in half", got)
	}
}
