package middleware_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/middleware"
)

func TestLimitSessionChannelsPerConnection(t *testing.T) {
	addr := serve(t,
		middleware.PasswordAuth("u", "p", nil),
		middleware.LimitSessionChannels(3, nil),
	)
	client := dial(t, addr, "u", "p")
	var sessions []*gossh.Session
	for range 3 {
		session, err := client.NewSession()
		if err != nil {
			t.Fatalf("session %d of 3: %v", len(sessions)+1, err)
		}
		sessions = append(sessions, session)
	}

	_, err := client.NewSession()
	var openErr *gossh.OpenChannelError
	if !errors.As(err, &openErr) || openErr.Reason != gossh.Prohibited {
		t.Fatalf("fourth session: err = %v, want administratively prohibited", err)
	}
	if !strings.Contains(openErr.Message, "already has 3 open sessions") {
		t.Errorf("rejection message = %q, want the limit named", openErr.Message)
	}

	// Another connection has its own count.
	if _, err := dial(t, addr, "u", "p").NewSession(); err != nil {
		t.Errorf("session on a second connection: %v", err)
	}

	// A closed channel frees its place.
	_ = sessions[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		session, err := client.NewSession()
		if err == nil {
			_ = session.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session after one closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
