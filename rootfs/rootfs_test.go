package rootfs

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// layout builds files in a test root. Paths are relative to the root.
type layout struct {
	t    *testing.T
	base string // parent of root, which stands for "the host outside the root"
	root string
}

func newLayout(t *testing.T) *layout {
	t.Helper()
	base := t.TempDir()
	root := filepath.Join(base, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	return &layout{t: t, base: base, root: root}
}

func (l *layout) host(rel string) string {
	return filepath.Join(l.root, filepath.FromSlash(rel))
}

func (l *layout) file(rel string, perm fs.FileMode) {
	l.t.Helper()
	path := l.host(rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/true\n"), perm); err != nil {
		l.t.Fatal(err)
	}
	// WriteFile applies the umask, so set the mode explicitly.
	if err := os.Chmod(path, perm); err != nil {
		l.t.Fatal(err)
	}
}

func (l *layout) dir(rel string) {
	l.t.Helper()
	if err := os.MkdirAll(l.host(rel), 0o755); err != nil {
		l.t.Fatal(err)
	}
}

func (l *layout) link(target, rel string) {
	l.t.Helper()
	path := l.host(rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		l.t.Fatal(err)
	}
}

// outsideFile creates an executable file next to the root, where a link that
// escaped the root would find it on the host.
func (l *layout) outsideFile(rel string) string {
	l.t.Helper()
	path := filepath.Join(l.base, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/true\n"), 0o755); err != nil {
		l.t.Fatal(err)
	}
	return path
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		// setup prepares the layout and returns the directory to check.
		setup func(l *layout) string
		// want lists substrings of the error. Empty means no error.
		want []string
		// wantNotExist requires the error to wrap fs.ErrNotExist.
		wantNotExist bool
	}{
		{
			name:  "empty path",
			setup: func(l *layout) string { return "" },
			want:  []string{"no root directory given", "--rootfs"},
		},
		{
			name:  "missing root",
			setup: func(l *layout) string { return filepath.Join(l.base, "nope") },
			want:  []string{"nope", "not found", "make rootfs ROOTFS="},
		},
		{
			name: "root is a file",
			setup: func(l *layout) string {
				return l.outsideFile("plain")
			},
			want: []string{"plain", "is not a directory", "--rootfs"},
		},
		{
			name: "root is link to directory",
			setup: func(l *layout) string {
				l.file("bin/sh", 0o755)
				link := filepath.Join(l.base, "current")
				if err := os.Symlink(l.root, link); err != nil {
					t.Fatal(err)
				}
				return link
			},
		},
		{
			name:         "no shell",
			setup:        func(l *layout) string { l.dir("bin"); return l.root },
			want:         []string{"/bin/sh is missing", "/bin/sh not found", "make rootfs"},
			wantNotExist: true,
		},
		{
			name:         "no bin directory",
			setup:        func(l *layout) string { return l.root },
			want:         []string{"/bin/sh is missing", "/bin not found"},
			wantNotExist: true,
		},
		{
			name:  "shell regular file",
			setup: func(l *layout) string { l.file("bin/sh", 0o755); return l.root },
		},
		{
			name: "shell relative link",
			setup: func(l *layout) string {
				l.file("bin/busybox", 0o755)
				l.link("busybox", "bin/sh")
				return l.root
			},
		},
		{
			name: "shell absolute link resolved inside root",
			setup: func(l *layout) string {
				l.file("opt/tools/shell", 0o755)
				l.link("/opt/tools/shell", "bin/sh")
				return l.root
			},
		},
		{
			name: "shell absolute link to host-only path",
			setup: func(l *layout) string {
				hostOnly := l.outsideFile("outside/sh")
				l.link(hostOnly, "bin/sh")
				return l.root
			},
			want:         []string{"/bin/sh is missing", "not found"},
			wantNotExist: true,
		},
		{
			name: "shell dangling link",
			setup: func(l *layout) string {
				l.link("busybox", "bin/sh")
				return l.root
			},
			want:         []string{"/bin/sh is missing", "/bin/busybox not found"},
			wantNotExist: true,
		},
		{
			name: "shell link loop",
			setup: func(l *layout) string {
				l.link("sh2", "bin/sh")
				l.link("/bin/sh", "bin/sh2")
				return l.root
			},
			want: []string{"resolve /bin/sh", "too many levels of symbolic links"},
		},
		{
			name: "escaping link clamped at root",
			setup: func(l *layout) string {
				l.file("bin/busybox", 0o755)
				l.link("../../../../bin/busybox", "bin/sh")
				return l.root
			},
		},
		{
			name: "escaping link to host file",
			setup: func(l *layout) string {
				// On the host, root/bin/../../outside/sh is base/outside/sh,
				// which exists. In the guest it is /outside/sh, which does not.
				l.outsideFile("outside/sh")
				l.dir("bin")
				l.link("../../outside/sh", "bin/sh")
				return l.root
			},
			want:         []string{"/bin/sh is missing", "/outside not found"},
			wantNotExist: true,
		},
		{
			name: "dot-dot through real directories",
			setup: func(l *layout) string {
				l.file("bin/busybox", 0o755)
				l.dir("usr/lib")
				l.link("../usr/lib/../../bin/./busybox", "bin/sh")
				return l.root
			},
		},
		{
			name: "merged usr with relative bin link",
			setup: func(l *layout) string {
				l.file("usr/bin/sh", 0o755)
				l.link("usr/bin", "bin")
				return l.root
			},
		},
		{
			name: "absolute directory link",
			setup: func(l *layout) string {
				l.file("usr/bin/sh", 0o755)
				l.link("/usr/bin", "bin")
				return l.root
			},
		},
		{
			name: "shell is a directory",
			setup: func(l *layout) string {
				l.dir("bin/sh")
				return l.root
			},
			want: []string{"/bin/sh in", "is a directory", "executable file"},
		},
		{
			name: "shell not executable",
			setup: func(l *layout) string {
				l.file("bin/sh", 0o644)
				return l.root
			},
			want: []string{"/bin/sh in", "is not executable (mode 0644)"},
		},
		{
			name: "bin is a file",
			setup: func(l *layout) string {
				l.file("bin", 0o755)
				return l.root
			},
			want: []string{"/bin/sh is missing", "/bin is not a directory"},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLayout(t)
			dir := tt.setup(l)
			err := Check(dir)

			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Check(%q) = %v, want nil", dir, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Check(%q) = nil, want error containing %q", dir, tt.want)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "rootfs: ") {
				t.Errorf("error %q lacks the package prefix", msg)
			}
			if dir != "" && !strings.Contains(msg, dir) {
				t.Errorf("error %q does not name the directory %q", msg, dir)
			}
			for _, want := range tt.want {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
			if tt.wantNotExist && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("error %q does not wrap fs.ErrNotExist", msg)
			}
		})
	}
}

func TestHasAgent(t *testing.T) {
	const agent = "usr/local/bin/throwawaysh-guest-agent"
	tests := []struct {
		name    string
		setup   func(l *layout) string
		want    bool
		wantErr []string
	}{
		{
			name:  "present",
			setup: func(l *layout) string { l.file(agent, 0o755); return l.root },
			want:  true,
		},
		{
			name:  "only one execute bit",
			setup: func(l *layout) string { l.file(agent, 0o700); return l.root },
			want:  true,
		},
		{
			name:  "absent",
			setup: func(l *layout) string { l.dir("usr/local/bin"); return l.root },
		},
		{
			name:  "absent with no usr",
			setup: func(l *layout) string { return l.root },
		},
		{
			name: "absolute link inside root",
			setup: func(l *layout) string {
				l.file("opt/agent", 0o755)
				l.link("/opt/agent", agent)
				return l.root
			},
			want: true,
		},
		{
			name: "relative link through linked directory",
			setup: func(l *layout) string {
				l.file("opt/local/bin/throwawaysh-guest-agent", 0o755)
				l.dir("usr")
				l.link("../opt/local", "usr/local")
				return l.root
			},
			want: true,
		},
		{
			name: "dangling link",
			setup: func(l *layout) string {
				l.link("/opt/agent", agent)
				return l.root
			},
		},
		{
			name: "link to host-only path",
			setup: func(l *layout) string {
				l.link(l.outsideFile("agent"), agent)
				return l.root
			},
		},
		{
			name:    "not executable",
			setup:   func(l *layout) string { l.file(agent, 0o644); return l.root },
			wantErr: []string{AgentPath, "is not executable (mode 0644)", "./install_guest_agent.sh"},
		},
		{
			name:    "directory",
			setup:   func(l *layout) string { l.dir(agent); return l.root },
			wantErr: []string{AgentPath, "is a directory", "./install_guest_agent.sh"},
		},
		{
			name: "named pipe",
			setup: func(l *layout) string {
				l.dir("usr/local/bin")
				if err := syscall.Mkfifo(l.host(agent), 0o755); err != nil {
					t.Fatal(err)
				}
				return l.root
			},
			wantErr: []string{"is not a regular file"},
		},
		{
			name: "link loop",
			setup: func(l *layout) string {
				l.link("throwawaysh-guest-agent", agent)
				return l.root
			},
			wantErr: []string{"resolve " + AgentPath, "too many levels of symbolic links"},
		},
		{
			name:    "missing root",
			setup:   func(l *layout) string { return filepath.Join(l.base, "nope") },
			wantErr: []string{"not found", "make rootfs"},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLayout(t)
			dir := tt.setup(l)
			got, err := HasAgent(dir)

			if got != tt.want {
				t.Errorf("HasAgent(%q) = %v, want %v", dir, got, tt.want)
			}
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("HasAgent(%q) error = %v, want nil", dir, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("HasAgent(%q) error = nil, want error containing %q", dir, tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if errors.Is(err, ErrAgentMissing) {
				t.Errorf("error %q wraps ErrAgentMissing, but the agent exists", err)
			}
		})
	}
}

func TestAgentMissingError(t *testing.T) {
	tests := []struct {
		dir  string
		want []string
	}{
		{
			dir: "/srv/guest",
			want: []string{
				AgentPath,
				`"/srv/guest"`,
				"./install_guest_agent.sh /srv/guest",
				"make install-agent ROOTFS=/srv/guest",
			},
		},
		{
			dir: "/srv/my root",
			want: []string{
				`"/srv/my root"`,
				"./install_guest_agent.sh '/srv/my root'",
				"make install-agent ROOTFS='/srv/my root'",
			},
		},
	}
	for _, tt := range tests {
		err := AgentMissingError(tt.dir)
		if !errors.Is(err, ErrAgentMissing) {
			t.Errorf("AgentMissingError(%q) does not wrap ErrAgentMissing", tt.dir)
		}
		for _, want := range tt.want {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("AgentMissingError(%q) = %q, does not contain %q", tt.dir, err, want)
			}
		}
	}
}

// TestShellQuoteRoundTrip passes quoted strings through a real shell, which
// must print them back unchanged.
func TestShellQuoteRoundTrip(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on PATH")
	}
	inputs := []string{
		"./rootfs",
		"/srv/my root",
		"it's",
		`a"b$c` + "`d`\\e",
		"semi;colon && rm -rf /",
		"",
		"-rf",
	}
	for _, in := range inputs {
		quoted := shellQuote(in)
		out, err := exec.Command(sh, "-c", "printf '%s' "+quoted).Output()
		if err != nil {
			t.Errorf("sh -c with %s: %v", quoted, err)
			continue
		}
		if string(out) != in {
			t.Errorf("shellQuote(%q) = %s, shell printed %q", in, quoted, out)
		}
	}
}
