package rootfs

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	buildScript = "build.sh"
	cleanScript = "clean.sh"
)

// buildScriptUnavailable is build.sh's exit status when it could not obtain a
// busybox-static package.
const buildScriptUnavailable = 3

// topLevelEntries are the entries build.sh creates in an empty directory.
var topLevelEntries = []string{"bin", "dev", "etc", "proc", "root", "run", "sbin", "sys", "tmp", "usr"}

// busyboxDebEnv returns the BUSYBOX_DEB setting for build.sh: the caller's
// BUSYBOX_DEB, else a busybox-static package in apt's cache (where .ci/run's
// apt-get install leaves it unless the image cleans the cache), else none,
// which makes build.sh run apt-get download.
func busyboxDebEnv() []string {
	if deb := os.Getenv("BUSYBOX_DEB"); deb != "" {
		return []string{"BUSYBOX_DEB=" + deb}
	}
	cached, _ := filepath.Glob("/var/cache/apt/archives/busybox-static_*.deb")
	if len(cached) > 0 {
		return []string{"BUSYBOX_DEB=" + cached[len(cached)-1]}
	}
	return nil
}

// skipUnlessCI skips the test, except under CI, where the busybox package is
// installed on purpose and its absence is a failure.
func skipUnlessCI(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// buildRealRoot runs build.sh with Debian's busybox-static into a new
// directory and returns the directory.
func buildRealRoot(t *testing.T, agent string) string {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		if _, err := exec.LookPath("ar"); err != nil {
			skipUnlessCI(t, "skipped: neither dpkg-deb nor ar is installed to unpack busybox-static")
		}
	}
	root := filepath.Join(t.TempDir(), "guest root")
	args := []string{root}
	if agent != "" {
		args = append(args, agent)
	}

	res := runScript(t, buildScript, busyboxDebEnv(), args...)
	if res.exitCode == buildScriptUnavailable {
		skipUnlessCI(t, "skipped: no busybox-static package (apt-get download failed, no BUSYBOX_DEB): %s",
			strings.ReplaceAll(strings.TrimSpace(res.stderr), "\n", " / "))
	}
	if res.exitCode != 0 {
		t.Fatalf("build.sh exit code = %d\nstdout:\n%s\nstderr:\n%s", res.exitCode, res.stdout, res.stderr)
	}
	return root
}

func TestBuildScriptRealBusybox(t *testing.T) {
	agent := staticAgent(t, t.TempDir())
	root := buildRealRoot(t, agent)

	t.Run("check passes", func(t *testing.T) {
		if err := Check(root); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("shell runs", func(t *testing.T) {
		out, err := exec.Command(filepath.Join(root, "bin", "sh"), "-c", "echo hi").Output()
		if err != nil {
			t.Fatalf("bin/sh -c 'echo hi': %v", err)
		}
		if string(out) != "hi\n" {
			t.Errorf("bin/sh printed %q, want %q", out, "hi\n")
		}
	})

	t.Run("usr/bin applet runs", func(t *testing.T) {
		out, err := exec.Command(filepath.Join(root, "usr", "bin", "basename"), "/a/b").Output()
		if err != nil {
			t.Fatalf("usr/bin/basename: %v", err)
		}
		if string(out) != "b\n" {
			t.Errorf("usr/bin/basename printed %q, want %q", out, "b\n")
		}
	})

	t.Run("applet links are relative", func(t *testing.T) {
		for _, rel := range []string{"bin/sh", "sbin/init", "usr/bin/awk"} {
			target, err := os.Readlink(filepath.Join(root, rel))
			if err != nil {
				t.Errorf("readlink %s: %v", rel, err)
				continue
			}
			if filepath.IsAbs(target) {
				t.Errorf("%s links to absolute path %q", rel, target)
			}
		}
	})

	t.Run("busybox is static", func(t *testing.T) {
		if isDynamicELF(filepath.Join(root, "bin", "busybox")) {
			t.Error("bin/busybox is dynamically linked")
		}
	})

	t.Run("passwd has root", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(strings.Split(string(data), "\n"), "root:x:0:0:root:/root:/bin/sh") {
			t.Errorf("etc/passwd has no root entry with /root and /bin/sh:\n%s", data)
		}
	})

	t.Run("config files", func(t *testing.T) {
		want := map[string]string{
			"etc/hostname": "throwawaysh\n",
			"etc/group":    "root:x:0:\n",
		}
		for rel, content := range want {
			data, err := os.ReadFile(filepath.Join(root, rel))
			if err != nil {
				t.Error(err)
				continue
			}
			if string(data) != content {
				t.Errorf("%s = %q, want %q", rel, data, content)
			}
		}
		profile, err := os.ReadFile(filepath.Join(root, "etc", "profile"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"export PATH=", "/usr/local/bin", "export PS1="} {
			if !strings.Contains(string(profile), want) {
				t.Errorf("etc/profile does not contain %q:\n%s", want, profile)
			}
		}
	})

	t.Run("profile sets prompt in busybox shell", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(root, "bin", "sh"), "-c", `. "$1" && printf '%s|%s' "$PS1" "$PATH"`, "sh", filepath.Join(root, "etc", "profile"))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("source etc/profile: %v", err)
		}
		if want := `\u@\h:\w\$ |/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`; string(out) != want {
			t.Errorf("PS1|PATH = %q, want %q", out, want)
		}
	})

	t.Run("directory modes", func(t *testing.T) {
		want := map[string]fs.FileMode{
			"tmp":           fs.ModeDir | fs.ModeSticky | 0o777,
			"root":          fs.ModeDir | 0o700,
			"dev":           fs.ModeDir | 0o755,
			"proc":          fs.ModeDir | 0o755,
			"sys":           fs.ModeDir | 0o755,
			"run":           fs.ModeDir | 0o755,
			"usr/local/bin": fs.ModeDir | 0o755,
		}
		for rel, mode := range want {
			info, err := os.Lstat(filepath.Join(root, rel))
			if err != nil {
				t.Error(err)
				continue
			}
			if info.Mode() != mode {
				t.Errorf("%s has mode %v, want %v", rel, info.Mode(), mode)
			}
		}
	})

	t.Run("agent installed", func(t *testing.T) {
		ok, err := HasAgent(root)
		if err != nil || !ok {
			t.Fatalf("HasAgent = %v, %v, want true, nil", ok, err)
		}
		assertInstalled(t, filepath.Join(root, "usr", "local", "bin", "throwawaysh-guest-agent"), agent)
	})

	t.Run("generated list", func(t *testing.T) {
		if got := readGenerated(t, root); !slices.Equal(got, topLevelEntries) {
			t.Errorf(".generated = %q, want %q", got, topLevelEntries)
		}
	})

	t.Run("second run keeps edits", func(t *testing.T) {
		hostname := filepath.Join(root, "etc", "hostname")
		if err := os.WriteFile(hostname, []byte("edited\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(root, "bin", "ls")); err != nil {
			t.Fatal(err)
		}

		res := runScript(t, buildScript, busyboxDebEnv(), root)
		if res.exitCode != 0 {
			t.Fatalf("second build.sh exit code = %d\nstderr:\n%s", res.exitCode, res.stderr)
		}

		data, err := os.ReadFile(hostname)
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != "edited\n" {
			t.Errorf("etc/hostname = %q after second run, want the edit kept", data)
		}
		if _, err := os.Lstat(filepath.Join(root, "bin", "ls")); err != nil {
			t.Errorf("second run did not restore bin/ls: %v", err)
		}
		if got := readGenerated(t, root); !slices.Equal(got, topLevelEntries) {
			t.Errorf(".generated = %q after second run, want %q", got, topLevelEntries)
		}
		if err := Check(root); err != nil {
			t.Errorf("Check after second run: %v", err)
		}
	})

	t.Run("clean keeps other files", func(t *testing.T) {
		for _, name := range []string{"rootfs.go", "build.sh"} {
			writeFile(t, filepath.Join(root, name), "keep\n", 0o644)
		}

		res := runScript(t, cleanScript, nil, root)
		if res.exitCode != 0 {
			t.Fatalf("clean.sh exit code = %d\nstderr:\n%s", res.exitCode, res.stderr)
		}

		entries, err := os.ReadDir(root)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if want := []string{"build.sh", "rootfs.go"}; !slices.Equal(names, want) {
			t.Errorf("after clean.sh the root holds %q, want %q", names, want)
		}
	})
}

func readGenerated(t *testing.T, root string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, ".generated"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(data))
}

// fakeBusyboxDeb builds a .deb named busybox-static whose files come from
// files (relative path to content, all mode 0755). It skips the test when
// dpkg-deb is missing.
func fakeBusyboxDeb(t *testing.T, files map[string]string) string {
	t.Helper()
	dpkgDeb, err := exec.LookPath("dpkg-deb")
	if err != nil {
		t.Skip("skipped: dpkg-deb not installed to build a test package")
	}
	base := t.TempDir()
	tree := filepath.Join(base, "tree")
	writeFile(t, filepath.Join(tree, "DEBIAN", "control"), strings.Join([]string{
		"Package: busybox-static",
		"Version: 1:0.0-test",
		"Architecture: all",
		"Maintainer: test <test@example.invalid>",
		"Description: fake busybox for build.sh tests",
		"",
	}, "\n"), 0o644)
	for rel, content := range files {
		writeFile(t, filepath.Join(tree, filepath.FromSlash(rel)), content, 0o755)
	}
	deb := filepath.Join(base, "busybox-static_test_all.deb")
	out, err := exec.Command(dpkgDeb, "--root-owner-group", "--build", tree, deb).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb --build: %v\n%s", err, out)
	}
	return deb
}

func TestBuildScriptErrors(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(t *testing.T, base string) (env, args []string)
		wantExit int
		want     []string
	}{
		{
			name:     "no arguments",
			setup:    func(t *testing.T, base string) ([]string, []string) { return nil, nil },
			wantExit: 2,
			want:     []string{"usage:", "ROOTFS_DIR [AGENT_BINARY]"},
		},
		{
			name: "rootfs is a file",
			setup: func(t *testing.T, base string) ([]string, []string) {
				file := filepath.Join(base, "file")
				writeFile(t, file, "", 0o644)
				return nil, []string{file}
			},
			wantExit: 1,
			want:     []string{"file' exists and is not a directory"},
		},
		{
			name: "rootfs is a dangling link",
			setup: func(t *testing.T, base string) ([]string, []string) {
				link := filepath.Join(base, "link")
				if err := os.Symlink(filepath.Join(base, "nowhere"), link); err != nil {
					t.Fatal(err)
				}
				return nil, []string{link}
			},
			wantExit: 1,
			want:     []string{"link' exists and is not a directory"},
		},
		{
			name: "bin is a symbolic link",
			setup: func(t *testing.T, base string) ([]string, []string) {
				root := mkdir(t, base, "root")
				if err := os.Symlink("/bin", filepath.Join(root, "bin")); err != nil {
					t.Fatal(err)
				}
				return nil, []string{root}
			},
			wantExit: 1,
			want:     []string{"bin' is a symbolic link"},
		},
		{
			name: "agent missing",
			setup: func(t *testing.T, base string) ([]string, []string) {
				return nil, []string{filepath.Join(base, "root"), filepath.Join(base, "no-agent")}
			},
			wantExit: 1,
			want:     []string{"no-agent' not found", "make build-agent"},
		},
		{
			name: "BUSYBOX_DEB missing",
			setup: func(t *testing.T, base string) ([]string, []string) {
				return []string{"BUSYBOX_DEB=" + filepath.Join(base, "none.deb")}, []string{filepath.Join(base, "root")}
			},
			wantExit: buildScriptUnavailable,
			want:     []string{"none.deb' not found"},
		},
		{
			name: "BUSYBOX_DEB not a deb",
			setup: func(t *testing.T, base string) ([]string, []string) {
				bogus := filepath.Join(base, "bogus.deb")
				writeFile(t, bogus, "not an archive", 0o644)
				return []string{"BUSYBOX_DEB=" + bogus}, []string{filepath.Join(base, "root")}
			},
			wantExit: 1,
			want:     []string{"cannot unpack", "bogus.deb"},
		},
		{
			name: "package without busybox",
			setup: func(t *testing.T, base string) ([]string, []string) {
				deb := fakeBusyboxDeb(t, map[string]string{"usr/bin/other": "x"})
				return []string{"BUSYBOX_DEB=" + deb}, []string{filepath.Join(base, "root")}
			},
			wantExit: 1,
			want:     []string{"contains no bin/busybox", "busybox-static package"},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			env, args := tt.setup(t, base)

			res := runScript(t, buildScript, env, args...)

			if res.exitCode != tt.wantExit {
				t.Errorf("exit code = %d, want %d\nstderr:\n%s", res.exitCode, tt.wantExit, res.stderr)
			}
			for _, want := range tt.want {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("stderr %q does not contain %q", res.stderr, want)
				}
			}
		})
	}
}

// TestBuildScriptForeignBusybox covers a busybox that cannot run on the
// build host, as with a package for another architecture. build.sh cannot
// list the applets then, so it links only bin/sh and warns.
func TestBuildScriptForeignBusybox(t *testing.T) {
	deb := fakeBusyboxDeb(t, map[string]string{"bin/busybox": "#!/bin/sh\nexit 1\n"})
	root := filepath.Join(t.TempDir(), "root")

	res := runScript(t, buildScript, []string{"BUSYBOX_DEB=" + deb}, root)

	if res.exitCode != 0 {
		t.Fatalf("exit code = %d\nstderr:\n%s", res.exitCode, res.stderr)
	}
	if !strings.Contains(res.stderr, "only bin/sh was linked") {
		t.Errorf("stderr %q does not warn that only bin/sh was linked", res.stderr)
	}
	if err := Check(root); err != nil {
		t.Errorf("Check: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "bin", "ls")); err == nil {
		t.Error("bin/ls exists although the applet list was unavailable")
	}
}

// TestBuildScriptKeepsExistingFiles pins that build.sh, run on a directory
// that already holds a root, replaces no file or link other than bin/busybox
// and records only the entries it created.
func TestBuildScriptKeepsExistingFiles(t *testing.T) {
	deb := fakeBusyboxDeb(t, map[string]string{"bin/busybox": "#!/bin/sh\nexit 1\n"})
	root := filepath.Join(t.TempDir(), "root")
	writeFile(t, filepath.Join(root, "etc", "passwd"), "root:x:0:0::/root:/bin/bash\n", 0o644)
	writeFile(t, filepath.Join(root, "bin", "sh"), "#!/own/shell\n", 0o755)

	res := runScript(t, buildScript, []string{"BUSYBOX_DEB=" + deb}, root)
	if res.exitCode != 0 {
		t.Fatalf("exit code = %d\nstderr:\n%s", res.exitCode, res.stderr)
	}

	passwd, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	if err != nil {
		t.Fatal(err)
	}
	if string(passwd) != "root:x:0:0::/root:/bin/bash\n" {
		t.Errorf("etc/passwd was overwritten: %q", passwd)
	}
	info, err := os.Lstat(filepath.Join(root, "bin", "sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !info.Mode().IsRegular() {
		t.Errorf("bin/sh was replaced by a %v", info.Mode().Type())
	}
	want := []string{"dev", "proc", "root", "run", "sbin", "sys", "tmp", "usr"}
	if got := readGenerated(t, root); !slices.Equal(got, want) {
		t.Errorf(".generated = %q, want %q (bin and etc existed before)", got, want)
	}
}

func TestCleanScriptListValidation(t *testing.T) {
	tests := []struct {
		name      string
		generated string // content of .generated; empty means no file
		wantExit  int
		want      string
	}{
		{name: "no list", wantExit: 0, want: "nothing to clean"},
		{name: "path with slash", generated: "bin\n../outside\n", wantExit: 1, want: "invalid entry '../outside'"},
		{name: "go source", generated: "etc\nrootfs.go\n", wantExit: 1, want: "invalid entry 'rootfs.go'"},
		{name: "dot-dot", generated: "..\n", wantExit: 1, want: "invalid entry '..'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			root := mkdir(t, base, "root")
			for _, rel := range []string{"bin/busybox", "etc/passwd", "rootfs.go", "../outside/keep"} {
				writeFile(t, filepath.Join(root, rel), "x", 0o644)
			}
			if tt.generated != "" {
				writeFile(t, filepath.Join(root, ".generated"), tt.generated, 0o644)
			}

			res := runScript(t, cleanScript, nil, root)

			if res.exitCode != tt.wantExit {
				t.Errorf("exit code = %d, want %d\nstderr:\n%s", res.exitCode, tt.wantExit, res.stderr)
			}
			if output := res.stdout + res.stderr; !strings.Contains(output, tt.want) {
				t.Errorf("output %q does not contain %q", output, tt.want)
			}
			// A rejected list must not remove anything, even its valid entries.
			for _, rel := range []string{"bin/busybox", "etc/passwd", "rootfs.go", "../outside/keep"} {
				if _, err := os.Stat(filepath.Join(root, rel)); err != nil {
					t.Errorf("%s removed: %v", rel, err)
				}
			}
		})
	}
}
