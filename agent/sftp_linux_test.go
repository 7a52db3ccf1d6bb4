package agent

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
)

// processPipe is the write side of a Process for an SFTP client: closing
// it closes the process's input, as an SSH client's end of file does.
type processPipe struct{ *Process }

func (p processPipe) Close() error { return p.CloseWrite() }

// startSFTP starts the sftp subsystem on c and returns the process and an
// SFTP client speaking over its data stream.
func startSFTP(t *testing.T, c *Client) (*Process, *sftp.Client) {
	t.Helper()
	proc, err := c.Start(testContext(t, 10*time.Second), StartRequest{Subsystem: SubsystemSFTP})
	if err != nil {
		t.Fatalf("Start sftp subsystem: %v", err)
	}
	if proc.PID() <= 0 {
		t.Errorf("PID() = %d, want the agent's process id", proc.PID())
	}
	client, err := sftp.NewClientPipe(proc, processPipe{proc})
	if err != nil {
		t.Fatalf("sftp.NewClientPipe: %v", err)
	}
	return proc, client
}

func TestSFTPWriteAndReadBack(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{})
	proc, client := startSFTP(t, c)

	// 300 KiB is more than the 256 KiB stream window and more than one
	// SFTP packet, so flow control and packet splitting both take part.
	want := make([]byte, 300<<10)
	if _, err := rand.Read(want); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "upload.bin")

	f, err := client.Create(path)
	if err != nil {
		t.Fatalf("Create %s: %v", path, err)
	}
	if _, err := f.Write(want); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read the uploaded file on disk: %v", err)
	}
	if !bytes.Equal(onDisk, want) {
		t.Errorf("file on disk has %d bytes and differs from the %d bytes written", len(onDisk), len(want))
	}

	f, err = client.Open(path)
	if err != nil {
		t.Fatalf("Open %s: %v", path, err)
	}
	got, err := io.ReadAll(f)
	_ = f.Close()
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("read back %d bytes that differ from the %d bytes written", len(got), len(want))
	}

	entries, err := client.ReadDir(dir)
	if err != nil {
		t.Fatalf("ReadDir %s: %v", dir, err)
	}
	if len(entries) != 1 || entries[0].Name() != "upload.bin" {
		t.Errorf("ReadDir %s = %v, want only upload.bin", dir, entries)
	}

	if err := client.Close(); err != nil {
		t.Errorf("sftp client Close: %v", err)
	}
	status, err := waitStatus(t, proc, 10*time.Second)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if status != (ExitStatus{}) {
		t.Errorf("exit status %+v, want 0", status)
	}
}

func TestSFTPErrorKeepsServing(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{})
	proc, client := startSFTP(t, c)

	missing := filepath.Join(t.TempDir(), "missing")
	if _, err := client.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("Stat of a missing file = %v, want a not-exist error", err)
	}
	// A failed request leaves the server running.
	wd, err := client.Getwd()
	if err != nil || !strings.HasPrefix(wd, "/") {
		t.Errorf("Getwd after a failed request = %q, %v, want an absolute path", wd, err)
	}
	if err := client.Close(); err != nil {
		t.Errorf("sftp client Close: %v", err)
	}
	status, err := waitStatus(t, proc, 10*time.Second)
	if err != nil || status.Code != 0 {
		t.Errorf("Wait = %+v, %v, want status 0", status, err)
	}
}

func TestSFTPStartRejectsCommand(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{})
	_, err := c.Start(testContext(t, 10*time.Second), StartRequest{Subsystem: SubsystemSFTP, Command: "ls"})
	if err == nil || !strings.Contains(err.Error(), `"command" must be empty`) {
		t.Errorf("Start of sftp with a command = %v, want an error about the command", err)
	}
	_, err = c.Start(testContext(t, 10*time.Second), StartRequest{Subsystem: "scp"})
	if err == nil || !strings.Contains(err.Error(), `"scp" is not a supported subsystem`) {
		t.Errorf("Start of subsystem scp = %v, want an error naming it", err)
	}
}

func TestSFTPCloseEndsServer(t *testing.T) {
	checkGoroutines(t)
	c := startAgent(t, ServeOptions{})
	proc, client := startSFTP(t, c)
	if _, err := client.Getwd(); err != nil {
		t.Fatalf("Getwd: %v", err)
	}
	// Closing the connection while the SFTP server runs must end it and
	// every goroutine, which checkGoroutines verifies.
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := waitStatus(t, proc, 10*time.Second); err == nil {
		t.Errorf("Wait after Close returned no error")
	}
	_ = client.Close()
}
