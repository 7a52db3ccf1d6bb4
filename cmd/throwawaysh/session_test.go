package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExecOutputAndExitStatus(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)

		got := srv.runSSH(t, sshCall{command: "echo hello; exit 3"})
		if string(got.stdout) != "hello\n" {
			t.Errorf("stdout = %q, want %q", got.stdout, "hello\n")
		}
		if got.status != 3 {
			t.Errorf("exit status = %d, want 3 (stderr %q)", got.status, got.stderr)
		}

		session := srv.goSession(t)
		out, err := session.Output("echo go-client; exit 5")
		if string(out) != "go-client\n" {
			t.Errorf("go client stdout = %q, want %q", out, "go-client\n")
		}
		if status := exitStatusOf(t, err); status != 5 {
			t.Errorf("go client exit status = %d, want 5", status)
		}
	})
}

func TestExecStderrKeptApart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)

		got := srv.runSSH(t, sshCall{command: "echo to-out; echo to-err >&2; echo more-out"})
		if string(got.stdout) != "to-out\nmore-out\n" {
			t.Errorf("stdout = %q, want %q", got.stdout, "to-out\nmore-out\n")
		}
		if string(got.stderr) != "to-err\n" {
			t.Errorf("stderr = %q, want %q", got.stderr, "to-err\n")
		}
		if got.status != 0 {
			t.Errorf("exit status = %d, want 0", got.status)
		}
	})
}

func TestExecStdinReachesCommandWithEOF(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)

		got := srv.runSSH(t, sshCall{command: "wc -l", stdin: strings.NewReader("a\nb\n")})
		if strings.TrimSpace(string(got.stdout)) != "2" {
			t.Errorf("wc -l printed %q, want 2", got.stdout)
		}
		if got.status != 0 {
			t.Errorf("exit status = %d, want 0 (stderr %q)", got.status, got.stderr)
		}
	})
}

func TestExecLargeDataRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)

		data := make([]byte, 8<<20)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		got := srv.runSSH(t, sshCall{command: "cat", stdin: bytes.NewReader(data)})
		if got.status != 0 {
			t.Fatalf("exit status = %d, want 0 (stderr %q)", got.status, got.stderr)
		}
		if len(got.stdout) != len(data) {
			t.Fatalf("got %d bytes back, want %d", len(got.stdout), len(data))
		}
		if sha256.Sum256(got.stdout) != sha256.Sum256(data) {
			t.Fatal("data came back changed")
		}
	})
}

func TestExecCommandTextIntact(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)

		// Quotes, a newline, backslashes, $ and non-ASCII: each would break
		// if the command travelled on the guest kernel command line.
		command := "printf '%s\\n' \"it's\" 'say \"hi\"' 'back\\slash $HOME' 'grüße ✓'\necho second-line"
		want := "it's\nsay \"hi\"\nback\\slash $HOME\ngrüße ✓\nsecond-line\n"
		got := srv.runSSH(t, sshCall{command: command})
		if string(got.stdout) != want {
			t.Errorf("stdout = %q, want %q (stderr %q)", got.stdout, want, got.stderr)
		}

		// Long command text: a comment line that pads the script, then a
		// check that the shell saw the end of it. Linux limits one argument
		// of the ssh process to 128 KiB, so the OpenSSH client sends 100 KiB
		// and the Go client 200 KiB, under the 256 KiB SSH packet limit.
		long := "#" + strings.Repeat("x", 100<<10) + "\necho long-command-ok"
		got = srv.runSSH(t, sshCall{command: long})
		if string(got.stdout) != "long-command-ok\n" {
			t.Errorf("100 KiB command: stdout = %q, want %q (stderr %q)", got.stdout, "long-command-ok\n", got.stderr)
		}
		session := srv.goSession(t)
		longer := "#" + strings.Repeat("y", 200<<10) + "\necho longer-command-ok"
		out, err := session.Output(longer)
		if string(out) != "longer-command-ok\n" || exitStatusOf(t, err) != 0 {
			t.Errorf("200 KiB command: stdout = %q, err %v", out, err)
		}
	})
}

func TestShellWithoutPTYReadsStdin(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)

		got := srv.runSSH(t, sshCall{options: []string{"-T"}, stdin: strings.NewReader("echo hi from stdin\nexit 4\n")})
		if string(got.stdout) != "hi from stdin\n" {
			t.Errorf("stdout = %q, want %q (stderr %q)", got.stdout, "hi from stdin\n", got.stderr)
		}
		if got.status != 4 {
			t.Errorf("exit status = %d, want 4", got.status)
		}
	})
}

// Without a command and a PTY, sshd runs the user's shell as a login
// shell, which reads /etc/profile. So does throwawaysh, with or without
// environment variables from the client.
func TestShellWithoutCommandIsLoginShell(t *testing.T) {
	root := krtestRootfs(t)
	if err := os.WriteFile(filepath.Join(root, "etc/profile"), []byte("echo profile read\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, testConfig(t, root), testLauncher())
	for _, options := range [][]string{{"-T"}, {"-T", "-o", "SetEnv=LANG=C.UTF-8"}} {
		got := srv.runSSH(t, sshCall{options: options, stdin: strings.NewReader("echo hi\n")})
		if string(got.stdout) != "profile read\nhi\n" || got.status != 0 {
			t.Errorf("ssh %v: stdout %q status %d, want the profile's line, then hi, and 0 (stderr %q)", options, got.stdout, got.status, got.stderr)
		}
	}
}

func TestSessionLeavesNoProcess(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)

		// A background job that would outlive a plain shell: the VM's end
		// must take it along.
		marker := fmt.Sprintf("%d.%d", 100000+os.Getpid()%100000, 7)
		got := srv.runSSH(t, sshCall{command: "sleep " + marker + " </dev/null >/dev/null 2>&1 & echo started"})
		if string(got.stdout) != "started\n" || got.status != 0 {
			t.Fatalf("stdout %q status %d, want %q and 0 (stderr %q)", got.stdout, got.status, "started\n", got.stderr)
		}
		waitNoProcesses(t, "sleep "+marker)
	})
}
