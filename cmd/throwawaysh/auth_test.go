package main

import (
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
)

func TestAuthWrongPasswordRejected(t *testing.T) {
	srv := startServer(t, testConfig(t, krtest.Rootfs(t, false)), &krtest.Launcher{})

	got := srv.runSSH(t, sshCall{command: "echo should-not-run", password: "wrong password"})
	if got.status != 255 {
		t.Errorf("ssh exit status = %d, want 255 (authentication failure)", got.status)
	}
	if !strings.Contains(string(got.stderr), "Permission denied") {
		t.Errorf("stderr = %q, want OpenSSH's permission denied", got.stderr)
	}
	if strings.Contains(string(got.stdout), "should-not-run") {
		t.Error("the command ran with a wrong password")
	}
	if !strings.Contains(srv.logs.String(), "auth failed") {
		t.Errorf("server log has no auth failure:\n%s", srv.logs.String())
	}
	if strings.Contains(srv.logs.String(), "wrong password") {
		t.Error("server log contains the password that was tried")
	}
}

func TestAuthWrongUserRejected(t *testing.T) {
	srv := startServer(t, testConfig(t, krtest.Rootfs(t, false)), &krtest.Launcher{})

	_, err := gossh.Dial("tcp", srv.addr, &gossh.ClientConfig{
		User:            "someone-else",
		Auth:            []gossh.AuthMethod{gossh.Password(testPassword)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	})
	if err == nil {
		t.Fatal("the right password for another user name was accepted")
	}
}

// noneAuthAccepted reports whether the server accepts SSH's "none" method,
// by connecting with no authentication method at all.
func noneAuthAccepted(t *testing.T, srv *testServer, user string) bool {
	t.Helper()
	client, err := gossh.Dial("tcp", srv.addr, &gossh.ClientConfig{
		User:            user,
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		if !strings.Contains(err.Error(), "unable to authenticate") {
			t.Fatalf("dial failed for a reason other than authentication: %v", err)
		}
		return false
	}
	_ = client.Close()
	return true
}

func TestAuthPasswordlessOff(t *testing.T) {
	srv := startServer(t, testConfig(t, krtest.Rootfs(t, false)), &krtest.Launcher{})
	if noneAuthAccepted(t, srv, "test") {
		t.Error("the none method was accepted without --allow-passwordless")
	}
}

func TestAuthPasswordlessOn(t *testing.T) {
	cfg := testConfig(t, krtest.Rootfs(t, true))
	cfg.AllowPasswordless = true
	srv := startServer(t, cfg, &krtest.Launcher{})

	for _, user := range []string{"test", "anybody", "root"} {
		if !noneAuthAccepted(t, srv, user) {
			t.Errorf("the none method was rejected for user %q with --allow-passwordless", user)
		}
	}

	// The real client, offered only "none", gets a working session.
	got := srv.runSSH(t, sshCall{options: []string{"-o", "PreferredAuthentications=none"}, command: "echo in; exit 2", password: "unused"})
	if string(got.stdout) != "in\n" || got.status != 2 {
		t.Errorf("stdout %q status %d, want %q and 2 (stderr %q)", got.stdout, got.status, "in\n", got.stderr)
	}
}
