package main

import (
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// stallingRelay forwards TCP connections to a target until stall is
// called. From then on it forwards nothing in either direction but keeps
// the sockets open, as a client that vanished without a FIN or RST would.
type stallingRelay struct {
	ln      net.Listener
	target  string
	stalled chan struct{}
	stall   func()
	closed  chan struct{}

	mu    sync.Mutex
	conns []net.Conn
}

func startStallingRelay(t *testing.T, target string) *stallingRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &stallingRelay{ln: ln, target: target, stalled: make(chan struct{}), closed: make(chan struct{})}
	var once sync.Once
	r.stall = func() { once.Do(func() { close(r.stalled) }) }
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.serve(&wg)
	}()
	t.Cleanup(func() {
		close(r.closed)
		_ = ln.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			_ = c.Close()
		}
		r.mu.Unlock()
		wg.Wait()
	})
	return r
}

func (r *stallingRelay) port() string {
	_, port, _ := net.SplitHostPort(r.ln.Addr().String())
	return port
}

func (r *stallingRelay) serve(wg *sync.WaitGroup) {
	for {
		client, err := r.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", r.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		r.mu.Lock()
		r.conns = append(r.conns, client, server)
		r.mu.Unlock()
		wg.Add(2)
		go func() { defer wg.Done(); r.forward(server, client) }()
		go func() { defer wg.Done(); r.forward(client, server) }()
	}
}

// forward copies src to dst until the relay stalls or closes. A stalled
// relay drops what it read and stops reading.
func (r *stallingRelay) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-r.stalled:
			<-r.closed
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// A client that vanishes without closing its TCP connection stops
// replying to keepalives; the server must close the connection, which ends
// the session and kills its VM.
func TestKeepaliveClosesVanishedClient(t *testing.T) {
	const interval, countMax = time.Second, 2
	cfg := testConfig(t, krtestRootfs(t))
	cfg.KeepaliveInterval = interval
	cfg.KeepaliveCountMax = countMax
	cfg.IdleTimeout = 0
	srv := startServer(t, cfg, testLauncher())
	relay := startStallingRelay(t, srv.addr)

	args := srv.openSSHArgs("test")
	for i := range args {
		if args[i] == "-p" {
			args[i+1] = relay.port()
		}
	}
	sleep := uniqueSleep(t, 61)
	// The ticks span more than countMax+1 intervals, so the server gets
	// keepalive replies for a while before the relay stalls.
	command := "for i in 1 2 3 4; do sleep 1; echo tick$i; done; " + sleep
	client := exec.Command(requireOpenSSH(t), append(args, "127.0.0.1", command)...)
	client.Env = askpassEnv(t, testPassword)
	stdout := &syncBuffer{}
	client.Stdout = stdout
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = client.Process.Kill()
		_ = client.Wait()
	})

	waitForProcess(t, sleep)
	ticked := time.Now().Add(30 * time.Second)
	for !strings.Contains(stdout.String(), "tick4") {
		if time.Now().After(ticked) {
			t.Fatalf("client stdout = %q, want all four ticks", stdout.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Contains(srv.logs.String(), "did not reply to keepalives") {
		t.Fatal("the server closed a connection whose client replies to keepalives")
	}

	relay.stall()
	stalled := time.Now()
	// The server closes the connection after between countMax and
	// countMax+1 intervals. The margin covers the extra interval and a
	// slow machine.
	deadline := stalled.Add(interval*countMax + 5*time.Second)
	for len(processesMatching(sleep)) > 0 || !strings.Contains(srv.logs.String(), "did not reply to keepalives") {
		if time.Now().After(deadline) {
			t.Fatalf("%s after the client vanished: VM processes %q, keepalive timeout logged: %v",
				time.Since(stalled), processesMatching(sleep), strings.Contains(srv.logs.String(), "did not reply to keepalives"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the server ended the session %s after the client vanished", time.Since(stalled).Round(time.Millisecond))
	waitForLogCount(t, srv, "session end", 1)
	if !strings.Contains(srv.logs.String(), "client_gone=true") {
		t.Error("session end does not record that the client was gone")
	}
	waitNoSessionDirs(t, cfg.RuntimeDir)
}
