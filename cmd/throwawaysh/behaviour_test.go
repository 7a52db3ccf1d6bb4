package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

func TestExitStatusesMatchShell(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)
		tests := []struct {
			command string
			want    int
		}{
			{"exit 3", 3},
			{"exit 256", 0},
			{"exit 255", 255},
			{"no-such-command-xyz", 127},
			{"/etc/passwd", 126},
			{"false", 1},
		}
		for _, tt := range tests {
			got := srv.runSSH(t, sshCall{command: tt.command})
			if got.status != tt.want {
				t.Errorf("console %q: exit status = %d, want %d (stderr %q)", tt.command, got.status, tt.want, got.stderr)
			}
			got = srv.runSSH(t, sshCall{options: []string{"-tt"}, command: tt.command})
			if got.status != tt.want {
				t.Errorf("pty %q: exit status = %d, want %d (output %q)", tt.command, got.status, tt.want, got.stdout)
			}
		}
	})
}

// Some clients report success for a failing command when end of file
// arrives before exit-status. x/crypto/ssh queues each channel request as
// its packet arrives, so once Read has returned io.EOF, an exit-status
// sent before the EOF is already waiting in the request queue.
func TestExitStatusBeforeEOF(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)
		client := srv.dialGo(t, "test", testPassword)

		for _, pty := range []bool{false, true} {
			channel, requests, err := client.OpenChannel("session", nil)
			if err != nil {
				t.Fatal(err)
			}
			if pty {
				payload := gossh.Marshal(struct {
					Term                string
					Columns, Rows, W, H uint32
					Modes               string
				}{"xterm", 80, 24, 0, 0, "\x00"})
				if ok, err := channel.SendRequest("pty-req", true, payload); !ok || err != nil {
					t.Fatalf("pty-req: ok=%v err=%v", ok, err)
				}
			}
			command := gossh.Marshal(struct{ Command string }{"echo out; exit 42"})
			if ok, err := channel.SendRequest("exec", true, command); !ok || err != nil {
				t.Fatalf("exec: ok=%v err=%v", ok, err)
			}
			if _, err := io.ReadAll(channel); err != nil {
				t.Fatal(err)
			}

			var status *gossh.Request
		drain:
			for {
				select {
				case req, ok := <-requests:
					if !ok {
						break drain
					}
					if req.Type == "exit-status" {
						status = req
						break drain
					}
				default:
					break drain
				}
			}
			if status == nil {
				t.Errorf("pty=%v: end of file arrived before exit-status", pty)
			} else if len(status.Payload) != 4 || status.Payload[3] != 42 {
				t.Errorf("pty=%v: exit-status payload %v, want 42", pty, status.Payload)
			}
			_ = channel.Close()
		}
	})
}

func TestCommandIgnoringStdinFinishes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)

		// A pipe whose write end stays open: the client never sends end of
		// file, and the command must finish anyway.
		reader, writer, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = writer.Close()
			_ = reader.Close()
		})
		got := srv.runSSH(t, sshCall{command: "echo done", stdin: reader})
		if string(got.stdout) != "done\n" || got.status != 0 {
			t.Errorf("stdout %q status %d, want %q and 0", got.stdout, got.status, "done\n")
		}
	})
}

func TestPTYWindowChangeBurst(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)
		session, stdin, out := srv.startGoShell(t, 24, 80)
		// A burst, part of it while the VM is still booting: each reply
		// must come back and the last size must win.
		for i := 1; i <= 500; i++ {
			if err := session.WindowChange(10+i%50, 20+i%90); err != nil {
				t.Fatalf("window-change %d: %v", i, err)
			}
		}
		if err := session.WindowChange(61, 171); err != nil {
			t.Fatal(err)
		}
		askUntil(t, stdin, out.String, "stty size\n", "61 171")
		_, _ = io.WriteString(stdin, "exit 0\n")
		done := make(chan error, 1)
		go func() { done <- session.Wait() }()
		select {
		case err := <-done:
			if exitStatusOf(t, err) != 0 {
				t.Errorf("exit status non-zero: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("session stalled after the window-change burst; output %q", out.String())
		}
		if !strings.Contains(out.String(), "61 171") {
			t.Errorf("output %q does not show the last size 61 171", out.String())
		}
	})
}

func TestPTYCtrlCInterruptsPipeline(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)
		c := srv.startTerminalSSH(t, 24, 80, []string{"TERM=xterm"}, nil, "")
		first, second := uniqueSleep(t, 31), uniqueSleep(t, 32)

		c.send("echo ready-$((6*7))\n")
		c.waitFor(`ready-42`)
		c.send(first + " | " + second + "\n")
		waitForProcess(t, first)
		waitForProcess(t, second)

		// Ctrl-C is a byte on the wire; the guest's line discipline turns it
		// into SIGINT for the whole foreground process group.
		c.send("\x03")
		waitNoProcesses(t, first)
		waitNoProcesses(t, second)

		c.send("echo after-$((6*7))\n")
		c.waitFor(`after-42`)
		c.send("exit\n")
		if status := c.wait(); status != 0 && status != 130 {
			t.Errorf("exit status = %d, want 0 or 130", status)
		}
	})
}

func TestNoCarriageReturnWithoutPTY(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		srv := startServer(t, testConfig(t, b.rootfs(t, true)), b.launcher)
		got := srv.runSSH(t, sshCall{command: "printf 'a\\nb\\n'; printf 'c\\nd\\n' >&2"})
		if !bytes.Equal(got.stdout, []byte("a\nb\n")) || !bytes.Equal(got.stderr, []byte("c\nd\n")) {
			t.Errorf("stdout %q stderr %q, want no carriage returns", got.stdout, got.stderr)
		}
	})
}

// A client that stops reading must hold the command back through SSH flow
// control, not make the server buffer its output. The guest counts the
// 64 KiB blocks it has written into a file that the test reads through
// /proc/PID/root of a guest process, which the test launcher's guests,
// unlike libkrun's, are.
func TestSlowReaderHoldsBackOutput(t *testing.T) {
	srv := startServer(t, testConfig(t, krtestRootfs(t)), testLauncher())
	session, err := srv.dialGo(t, "test", testPassword).NewSession()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := session.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	marker := uniqueSleep(t, 0)
	const blocks = 1024 // 64 MiB in all
	command := fmt.Sprintf(`%s & i=0; while [ $i -lt %d ]; do head -c 65536 /dev/zero; i=$((i+1)); echo $i > /tmp/progress; done; kill $!`, marker, blocks)
	if err := session.Start(command); err != nil {
		t.Fatal(err)
	}
	waitForProcess(t, marker)
	progress := fmt.Sprintf("/proc/%d/root/tmp/progress", processIDs(marker)[0])

	// Read nothing for a while, then look at how far the guest got.
	time.Sleep(2 * time.Second)
	data, _ := os.ReadFile(progress)
	written, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	// The SSH window (2 MiB in x/crypto/ssh), the agent's and the pipes'
	// buffers allow a few MiB in flight; 16 MiB is far above that and far
	// below the 64 MiB an unbounded server would take in.
	t.Logf("guest wrote %d KiB", written*64)
	if written*64 > 16<<10 {
		t.Errorf("guest wrote %d KiB while the client read nothing; output is not held back", written*64)
	}

	n, err := io.Copy(io.Discard, stdout)
	if err != nil {
		t.Fatal(err)
	}
	if n != blocks*65536 {
		t.Errorf("read %d bytes, want %d", n, blocks*65536)
	}
	if status := exitStatusOf(t, session.Wait()); status != 0 {
		t.Errorf("exit status = %d, want 0", status)
	}
}

// `ssh host producer | head -1` ends as with sshd: once head exits, the
// client's writes fail and it sends eow@openssh.com, the command's next
// write to stdout fails with SIGPIPE, and the client exits with the
// command's exit-signal (255). Before, the command ran until the session
// timeout.
func TestEndOfWriteEndsProducer(t *testing.T) {
	srv := startServer(t, testConfig(t, krtestRootfs(t)), testLauncher())
	args := append(srv.openSSHArgs("test"), "127.0.0.1", "while :; do echo tick; done")
	cmd := exec.Command(requireOpenSSH(t), args...)
	cmd.Env = askpassEnv(t, testPassword)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "tick\n" {
		t.Fatalf("first line %q, %v; want tick", line, err)
	}
	// As head does when it has its line.
	_ = stdout.(io.Closer).Close()

	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err = <-waited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-waited
		t.Fatalf("ssh still ran 30s after its stdout closed; server log:\n%s", srv.logs.String())
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 255 {
		t.Errorf("ssh ended with %v, want exit status 255 from the command's SIGPIPE; stderr %q", err, stderr.String())
	}
	waitNoSessionDirs(t, srv.cfg.RuntimeDir)
}
