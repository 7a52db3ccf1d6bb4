package krun

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startShell runs script with sh as a VM process and returns the VM.
func startShell(t *testing.T, script string) VM {
	t.Helper()
	vm, err := StartProcess(exec.Command("/bin/sh", "-c", script))
	if err != nil {
		t.Fatalf("StartProcess: %v", err)
	}
	t.Cleanup(func() {
		_ = vm.Kill()
		_, _ = vm.Wait()
	})
	return vm
}

// readAllAsync reads r to end of file in the background.
func readAllAsync(r io.Reader) <-chan []byte {
	ch := make(chan []byte, 1)
	go func() {
		data, _ := io.ReadAll(r)
		ch <- data
	}()
	return ch
}

func TestStartProcessSeparatesStdoutAndStderr(t *testing.T) {
	vm := startShell(t, "echo out; echo err >&2; echo out2")
	stdout, stderr := readAllAsync(vm.Stdout()), readAllAsync(vm.Stderr())
	if got := string(<-stdout); got != "out\nout2\n" {
		t.Errorf("stdout = %q, want %q", got, "out\nout2\n")
	}
	if got := string(<-stderr); got != "err\n" {
		t.Errorf("stderr = %q, want %q", got, "err\n")
	}
	if status, err := vm.Wait(); status != 0 || err != nil {
		t.Errorf("Wait = %d, %v; want 0, nil", status, err)
	}
}

func TestStartProcessStdinEOF(t *testing.T) {
	vm := startShell(t, "wc -c")
	stdout := readAllAsync(vm.Stdout())
	if _, err := vm.Stdin().Write([]byte("hello")); err != nil {
		t.Fatalf("write stdin: %v", err)
	}
	if err := vm.Stdin().Close(); err != nil {
		t.Fatalf("close stdin: %v", err)
	}
	if got := strings.TrimSpace(string(<-stdout)); got != "5" {
		t.Errorf("wc -c printed %q, want 5", got)
	}
	if status, _ := vm.Wait(); status != 0 {
		t.Errorf("status = %d, want 0", status)
	}
}

func TestStartProcessExitCode(t *testing.T) {
	vm := startShell(t, "exit 3")
	<-readAllAsync(vm.Stdout())
	if status, err := vm.Wait(); status != 3 || err != nil {
		t.Errorf("Wait = %d, %v; want 3, nil", status, err)
	}
}

func TestStartProcessSignalStatus(t *testing.T) {
	vm := startShell(t, "kill -TERM $$")
	<-readAllAsync(vm.Stdout())
	if status, err := vm.Wait(); status != 128+int(syscall.SIGTERM) || err != nil {
		t.Errorf("Wait = %d, %v; want %d, nil", status, err, 128+int(syscall.SIGTERM))
	}
}

func TestStartProcessKillEndsGroup(t *testing.T) {
	vm := startShell(t, "sleep 100 & echo $!; sleep 100")
	lines := bufio.NewReader(vm.Stdout())
	first, err := lines.ReadString('\n')
	if err != nil {
		t.Fatalf("read grandchild pid: %v", err)
	}
	grandchild, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		t.Fatalf("grandchild pid %q: %v", first, err)
	}

	if err := vm.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	// The background sleep holds stdout too, so end of file proves it ended.
	rest := readAllAsync(lines)
	select {
	case <-rest:
	case <-time.After(10 * time.Second):
		t.Fatal("stdout still open 10s after Kill: a process of the group survived")
	}
	if status, _ := vm.Wait(); status != 128+int(syscall.SIGKILL) {
		t.Errorf("status = %d, want %d", status, 128+int(syscall.SIGKILL))
	}
	waitGone(t, grandchild)

	if err := vm.Kill(); err != nil {
		t.Errorf("second Kill after Wait: %v", err)
	}
}

func TestStartProcessKillTwice(t *testing.T) {
	vm := startShell(t, "sleep 100")
	if err := vm.Kill(); err != nil {
		t.Fatalf("first Kill: %v", err)
	}
	if err := vm.Kill(); err != nil {
		t.Errorf("second Kill: %v", err)
	}
	if status, _ := vm.Wait(); status != 128+int(syscall.SIGKILL) {
		t.Errorf("status = %d, want %d", status, 128+int(syscall.SIGKILL))
	}
}

func TestStartProcessRejectsPresetStdio(t *testing.T) {
	cmd := exec.Command("/bin/true")
	cmd.Stdout = &bytes.Buffer{}
	if _, err := StartProcess(cmd); err == nil {
		t.Fatal("StartProcess accepted a command with Stdout set")
	}
}

func TestStartProcessMissingBinary(t *testing.T) {
	_, err := StartProcess(exec.Command("/nonexistent/vm"))
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/vm") {
		t.Fatalf("StartProcess error = %v, want one naming the binary", err)
	}
}

// waitGone waits until pid no longer runs. A zombie counts as gone: in a
// container the reaper of orphans may be slow or absent.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if processGone(pid) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("process %d still runs", pid)
}

func processGone(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if os.IsNotExist(err) {
		return true
	}
	if err != nil {
		// Without procfs, signal 0 checks whether the process exists.
		return syscall.Kill(pid, 0) == syscall.ESRCH
	}
	// The state follows the parenthesised command name.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(fields) > 0 && fields[0] == "Z"
}
