package middleware_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
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
