package middleware

import (
	"io"
	"net"
	"syscall"
	"testing"

	"charm.land/ssh"
)

// quickAckState reports TCP_QUICKACK of conn: 1 when the kernel
// acknowledges at once, 0 when it delays acknowledgements.
func quickAckState(t *testing.T, conn net.Conn) int {
	t.Helper()
	raw, ok := underlyingSyscallConn(conn)
	if !ok {
		t.Fatalf("no TCP connection under %T", conn)
	}
	var value int
	var sockErr error
	if err := raw.Control(func(fd uintptr) {
		value, sockErr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK)
	}); err != nil {
		t.Fatal(err)
	}
	if sockErr != nil {
		t.Fatal(sockErr)
	}
	return value
}

// exchange plays request and reply twice between client and server, the
// pattern after which Linux delays acknowledgements, then sends one more
// request and reads it on server. It returns TCP_QUICKACK of server right
// after that read.
func exchange(t *testing.T, client, server net.Conn) int {
	t.Helper()
	request, reply := []byte("request"), []byte("reply")
	buf := make([]byte, 64)
	for range 2 {
		if _, err := client.Write(request); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(server, buf[:len(request)]); err != nil {
			t.Fatal(err)
		}
		if _, err := server.Write(reply); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(client, buf[:len(reply)]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client.Write(request); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(server, buf[:len(request)]); err != nil {
		t.Fatal(err)
	}
	return quickAckState(t, server)
}

// tcpPair returns both ends of a new loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close() })
	return client, server
}

func TestQuickAckAfterSmallReads(t *testing.T) {
	client, server := tcpPair(t)
	if exchange(t, client, server) != 0 {
		t.Skip("this kernel did not start delaying acknowledgements after request and reply, so there is nothing to undo")
	}

	srv := &ssh.Server{}
	if err := QuickAck()(srv); err != nil {
		t.Fatal(err)
	}
	client, server = tcpPair(t)
	wrapped := srv.ConnCallback(nil, server)
	if _, ok := wrapped.(*quickAckConn); !ok {
		t.Fatalf("QuickAck wrapped the connection as %T", wrapped)
	}
	if got := exchange(t, client, wrapped); got != 1 {
		t.Errorf("TCP_QUICKACK after a small read = %d, want 1 (acknowledge at once)", got)
	}
}

func TestQuickAckKeepsEarlierCallback(t *testing.T) {
	_, server := tcpPair(t)
	srv := &ssh.Server{}
	rejected := false
	srv.ConnCallback = func(ssh.Context, net.Conn) net.Conn {
		rejected = true
		return nil
	}
	if err := QuickAck()(srv); err != nil {
		t.Fatal(err)
	}
	if conn := srv.ConnCallback(nil, server); conn != nil || !rejected {
		t.Errorf("connection rejected by the earlier callback came back as %v (earlier callback called: %v)", conn, rejected)
	}
}

// QuickAck finds the TCP connection through the wrappers of this
// package's other connection options, so it works in any position
// among them.
func TestQuickAckSeesThroughOwnWrappers(t *testing.T) {
	_, server := tcpPair(t)
	for _, conn := range []net.Conn{
		&keepaliveConn{Conn: server},
		&startupConn{Conn: server},
	} {
		if _, ok := underlyingSyscallConn(conn); !ok {
			t.Errorf("QuickAck cannot find the TCP connection under %T", conn)
		}
	}
}
