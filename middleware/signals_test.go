package middleware_test

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/middleware"
)

// Signal requests sent before the command starts are kept by the SSH
// library and handed over when Route registers for them. Sessions that get
// many must not leave goroutines behind once they end.
func TestEarlySignalsLeaveNoGoroutines(t *testing.T) {
	addr := serve(t, fullChain(krtest.Rootfs(t, true), &krtest.Launcher{}, nil)...)
	runSession := func() {
		client := dial(t, addr, "u", "p")
		defer client.Close()
		session, err := client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			if err := session.Signal(gossh.Signal(fmt.Sprintf("FOO%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := session.Output("echo ok"); err != nil || string(out) != "ok\n" {
			t.Fatalf("session after early signals: %q, %v", out, err)
		}
	}

	runSession() // starts the server's long-lived goroutines
	baseline := settledGoroutines()
	const sessions = 20
	for range sessions {
		runSession()
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		now := settledGoroutines()
		if now <= baseline+sessions/2 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after %d sessions with early signals, %d before:\n%s",
				now, sessions, baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// settledGoroutines returns the number of goroutines after a short pause
// for those that are about to end.
func settledGoroutines() int {
	time.Sleep(200 * time.Millisecond)
	return runtime.NumGoroutine()
}

// A signal request with want reply gets a reply, as from sshd: failure
// before the command starts, success once it runs. The SSH library sends
// none, so a client waiting for it would hang.
func TestSignalWantReplyGetsReply(t *testing.T) {
	options := fullChain(krtest.Rootfs(t, true), &krtest.Launcher{}, nil)
	addr := serve(t, append(options, middleware.FilterRequests(nil, nil))...)

	client := dial(t, addr, "u", "p")
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()

	signal := func(name string) bool {
		t.Helper()
		reply := make(chan bool, 1)
		go func() {
			ok, _ := session.SendRequest("signal", true, gossh.Marshal(struct{ Signal string }{name}))
			reply <- ok
		}()
		select {
		case ok := <-reply:
			return ok
		case <-time.After(5 * time.Second):
			t.Fatalf("no reply to signal %s within 5s", name)
			return false
		}
	}
	if signal("KILL") {
		t.Error("signal before the command started: success, want failure")
	}

	stdout, err := session.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := session.Start("trap 'echo got-usr1' USR1; echo ready; sleep 2 & wait; echo done"); err != nil {
		t.Fatal(err)
	}
	readUntilText(t, stdout, "ready\n")
	if !signal("USR1") {
		t.Error("signal to a running command: failure, want success")
	}
	readUntilText(t, stdout, "got-usr1\n")
}

// readUntilText reads r until what it has read ends with want.
func readUntilText(t *testing.T, r io.Reader, want string) {
	t.Helper()
	var got []byte
	buf := make([]byte, 1)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasSuffix(string(got), want) {
		if time.Now().After(deadline) {
			t.Fatalf("read %q, want it to end with %q", got, want)
		}
		if _, err := r.Read(buf); err != nil {
			t.Fatalf("read %q, then %v; want %q", got, err, want)
		}
		got = append(got, buf[0])
	}
}

// A signal sent before the command starts is dropped, as sshd drops it,
// so it cannot end the command that follows.
func TestEarlySignalDropped(t *testing.T) {
	options := fullChain(krtest.Rootfs(t, true), &krtest.Launcher{}, nil)
	addr := serve(t, append(options, middleware.FilterRequests(nil, nil))...)

	client := dial(t, addr, "u", "p")
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	if err := session.Signal(gossh.SIGKILL); err != nil {
		t.Fatal(err)
	}
	out, err := session.Output("echo started; sleep 1; echo finished")
	if err != nil {
		t.Fatalf("command after an early KILL: %v, output %q", err, out)
	}
	if string(out) != "started\nfinished\n" {
		t.Errorf("output = %q, want %q", out, "started\nfinished\n")
	}
}
