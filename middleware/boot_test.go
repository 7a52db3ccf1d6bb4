package middleware_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/krun"
)

// slowLauncher boots VMs only after a delay, as a real VM takes a while.
type slowLauncher struct {
	krtest.Launcher
	delay time.Duration
}

func (l *slowLauncher) Start(ctx context.Context, spec krun.Spec) (krun.VM, error) {
	time.Sleep(l.delay)
	return l.Launcher.Start(ctx, spec)
}

// A client may send its whole input, and end of file, before the VM has
// booted; the command must still receive all of it.
func TestInputSentBeforeBootDelivered(t *testing.T) {
	launcher := &slowLauncher{delay: 500 * time.Millisecond}
	addr := serve(t, fullChain(krtest.Rootfs(t, false), launcher, nil)...)

	session, err := dial(t, addr, "u", "p").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	input := strings.Repeat("early input line\n", 1000)
	session.Stdin = strings.NewReader(input)
	out, err := session.Output("cat")
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if string(out) != input {
		t.Errorf("got %d bytes back, want the %d bytes sent before boot", len(out), len(input))
	}
}

// A PTY client that leaves while its VM boots is a client gone, not a
// server without RawPTY, though RawPTY has forgotten its pty-req by then.
func TestPTYClientGoneDuringBoot(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	launcher := &slowLauncher{delay: time.Second}
	addr := serve(t, fullChain(krtest.Rootfs(t, true), launcher, logger)...)

	client := dial(t, addr, "u", "p")
	session, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := session.RequestPty("xterm", 24, 80, gossh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	if err := session.Start("sleep 600"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the boot takes a second
	_ = client.Close()

	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "session end") {
		if time.Now().After(deadline) {
			t.Fatalf("no session end logged:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Contains(logs.String(), "RawPTY") {
		t.Errorf("a client that left during the boot was logged as a missing RawPTY:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "client_gone=true") {
		t.Errorf("session end does not record the client as gone:\n%s", logs.String())
	}
}
