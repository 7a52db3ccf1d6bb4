package middleware_test

import (
	"context"
	"strings"
	"testing"
	"time"

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
