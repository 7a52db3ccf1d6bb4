package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// checkGoroutines fails the test when, after every later cleanup has run,
// more goroutines are left than when it started. Register it first, so its
// cleanup runs last. Tests that use it must not run in parallel.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Errorf("%d goroutines left, %d before the test:\n%s", runtime.NumGoroutine(), before, buf[:n])
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// testLogger returns a logger that writes to the test's log until the test
// ends.
func testLogger(t *testing.T, name string) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})).With("side", name)
}

type testWriter struct {
	mu      sync.Mutex
	t       *testing.T
	stopped bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Log(strings.TrimSuffix(string(b), "\n"))
	}
	return len(b), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

// socketPath returns a unix socket path in a new directory, short enough
// for the unix socket path limit whatever the test's name.
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "a.sock")
}

// connPair returns both ends of a real unix socket connection made through
// Listen: the host's accepted end and the agent's dialed end.
func connPair(t *testing.T) (host, guest net.Conn) {
	t.Helper()
	ln, err := Listen(socketPath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	guest, err = net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	host, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		host.Close()
		guest.Close()
	})
	return host, guest
}

// testContext returns a context that ends with the test or after timeout.
func testContext(t *testing.T, timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// outputReader collects a process's output in the background, so that a
// test can wait for text to appear.
type outputReader struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	err  error
	done chan struct{}
	more chan struct{} // receives after each read, without blocking
}

func readOutput(r io.Reader) *outputReader {
	o := &outputReader{done: make(chan struct{}), more: make(chan struct{}, 1)}
	go func() {
		defer close(o.done)
		chunk := make([]byte, 32<<10)
		for {
			n, err := r.Read(chunk)
			o.mu.Lock()
			o.buf.Write(chunk[:n])
			if err != nil && err != io.EOF {
				o.err = err
			}
			o.mu.Unlock()
			select {
			case o.more <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return o
}

func (o *outputReader) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// waitFor waits until the output contains want, and fails the test after
// timeout or end of file without it.
func (o *outputReader) waitFor(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		if strings.Contains(o.String(), want) {
			return
		}
		select {
		case <-o.more:
		case <-o.done:
			if !strings.Contains(o.String(), want) {
				t.Fatalf("output ended without %q; output: %q", want, o.String())
			}
			return
		case <-timer.C:
			t.Fatalf("no %q in the output after %s; output: %q", want, timeout, o.String())
		}
	}
}

// all waits for end of file and returns the whole output.
func (o *outputReader) all(t *testing.T, timeout time.Duration) []byte {
	t.Helper()
	select {
	case <-o.done:
	case <-time.After(timeout):
		t.Fatalf("output did not end within %s; so far: %.200q", timeout, o.String())
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		t.Fatalf("read output: %v", o.err)
	}
	return bytes.Clone(o.buf.Bytes())
}

// waitStatus calls Wait with a timeout.
func waitStatus(t *testing.T, p *Process, timeout time.Duration) (ExitStatus, error) {
	t.Helper()
	type result struct {
		status ExitStatus
		err    error
	}
	ch := make(chan result, 1)
	go func() {
		status, err := p.Wait()
		ch <- result{status, err}
	}()
	select {
	case r := <-ch:
		return r.status, r.err
	case <-time.After(timeout):
		t.Fatalf("Wait did not return within %s", timeout)
		return ExitStatus{}, nil
	}
}

// testLoggerFunc returns a logger that passes each formatted line to fn.
func testLoggerFunc(fn func(line string)) *slog.Logger {
	return slog.New(slog.NewTextHandler(funcWriter(fn), nil))
}

type funcWriter func(line string)

func (f funcWriter) Write(b []byte) (int, error) {
	f(string(b))
	return len(b), nil
}
