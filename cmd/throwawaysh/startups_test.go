package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// dialSilent opens a TCP connection to srv from localIP, a loopback
// address, that never sends anything.
func dialSilent(t *testing.T, srv *testServer, localIP string) net.Conn {
	t.Helper()
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}, Timeout: 10 * time.Second}
	conn, err := dialer.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", srv.addr, localIP, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// readBanner reads the server's SSH version line from conn, and reports
// false if the connection ended without one.
func readBanner(t *testing.T, conn net.Conn) (string, bool) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("connection from %s neither sent a version line nor closed within 10 s", conn.LocalAddr())
	}
	if err != nil {
		if line != "" {
			t.Fatalf("connection from %s ended after %q: %v", conn.LocalAddr(), line, err)
		}
		return "", false
	}
	return line, true
}

// requireAccepted fails the test unless the server started the SSH
// handshake on conn.
func requireAccepted(t *testing.T, conn net.Conn) {
	t.Helper()
	line, ok := readBanner(t, conn)
	if !ok || !strings.HasPrefix(line, "SSH-2.0-") {
		t.Fatalf("connection from %s: version line %q, want one starting with SSH-2.0-", conn.LocalAddr(), line)
	}
}

// requireRejected fails the test unless the server closed conn without
// starting the SSH handshake. A connection that the handshake timeout
// ends gets the version line first, so this check distinguishes the two.
func requireRejected(t *testing.T, conn net.Conn) {
	t.Helper()
	if line, ok := readBanner(t, conn); ok {
		t.Fatalf("connection from %s got version line %q, want it closed at once", conn.LocalAddr(), line)
	}
}

// waitClosed fails the test unless the server closes conn within deadline.
func waitClosed(t *testing.T, conn net.Conn, deadline time.Duration) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(deadline))
	_, err := io.Copy(io.Discard, conn)
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("server did not close the connection from %s within %s", conn.LocalAddr(), deadline)
	}
}

func TestStartupCapsRejectExtraConnections(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	cfg.MaxStartups, cfg.PerSourceMaxStartups = 3, 2
	srv := startServer(t, cfg, testLauncher())

	first := dialSilent(t, srv, "127.0.0.1")
	requireAccepted(t, first)
	requireAccepted(t, dialSilent(t, srv, "127.0.0.1"))
	overPerSource := dialSilent(t, srv, "127.0.0.1")
	requireRejected(t, overPerSource)

	// Another client still has room, up to the total cap.
	requireAccepted(t, dialSilent(t, srv, "127.0.0.2"))
	requireRejected(t, dialSilent(t, srv, "127.0.0.3"))

	logs := srv.logs.String()
	if !strings.Contains(logs, "connection rejected remote="+overPerSource.LocalAddr().String()) {
		t.Errorf("log has no rejection with remote %s:\n%s", overPerSource.LocalAddr(), logs)
	}
	if !strings.Contains(logs, "from this client") {
		t.Errorf("log does not name the per-client cap as the reason:\n%s", logs)
	}

	// A client that hangs up gives its place back.
	_ = first.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn := dialSilent(t, srv, "127.0.0.1")
		if line, ok := readBanner(t, conn); ok && strings.HasPrefix(line, "SSH-2.0-") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection still counts against the per-client cap after 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHandshakeTimeoutFreesStartups(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	cfg.MaxStartups, cfg.PerSourceMaxStartups = 2, 2
	cfg.HandshakeTimeout = 2 * time.Second
	srv := startServer(t, cfg, testLauncher())

	silent := []net.Conn{dialSilent(t, srv, "127.0.0.1"), dialSilent(t, srv, "127.0.0.1")}
	for _, conn := range silent {
		requireAccepted(t, conn)
	}
	requireRejected(t, dialSilent(t, srv, "127.0.0.1"))

	for _, conn := range silent {
		waitClosed(t, conn, 20*time.Second)
	}
	waitForLogCount(t, srv, "handshake timed out", 2)
	got := srv.runSSH(t, sshCall{command: "echo ok"})
	if got.status != 0 || string(got.stdout) != "ok\n" {
		t.Fatalf("after the silent connections timed out: status %d, stdout %q, stderr %q, want 0 and ok",
			got.status, got.stdout, got.stderr)
	}
}

func TestAuthenticatedConnectionNotCounted(t *testing.T) {
	cfg := testConfig(t, krtestRootfs(t))
	cfg.MaxStartups, cfg.PerSourceMaxStartups = 1, 1
	srv := startServer(t, cfg, testLauncher())

	authenticated := srv.dialGo(t, "test", testPassword)

	got := srv.runSSH(t, sshCall{command: "echo ok"})
	if got.status != 0 || string(got.stdout) != "ok\n" {
		t.Fatalf("with an authenticated connection open: status %d, stdout %q, stderr %q, want 0 and ok",
			got.status, got.stdout, got.stderr)
	}
	// The one place is free, and the cap still holds.
	requireAccepted(t, dialSilent(t, srv, "127.0.0.1"))
	requireRejected(t, dialSilent(t, srv, "127.0.0.1"))

	session, err := authenticated.NewSession()
	if err != nil {
		t.Fatalf("the authenticated connection no longer works: %v", err)
	}
	if out, err := session.Output("echo still open"); err != nil || string(out) != "still open\n" {
		t.Errorf("session on the authenticated connection: output %q, err %v, want still open", out, err)
	}
}
