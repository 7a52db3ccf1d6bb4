package krun

import (
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// specReader returns spec encoded as the parent sends it.
func specReader(t *testing.T, spec Spec) io.ReadCloser {
	t.Helper()
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return io.NopCloser(strings.NewReader(string(data)))
}

func TestReadSpecRoundTrip(t *testing.T) {
	want := Spec{
		ID: "s1", Root: "/r", Exec: "/bin/sh", Args: []string{"/.cmd"}, Env: []string{"A=b"},
		Workdir: "/w", Files: map[string][]byte{".cmd": {0, 1, 2, 255}}, CPUs: 2, MemoryMiB: 64,
		VsockPorts: []VsockPort{{Port: 9, Path: "/p"}}, Network: true,
	}
	got, err := readSpec(specReader(t, want))
	if err != nil {
		t.Fatalf("readSpec: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("readSpec = %+v, want %+v", got, want)
	}
}

func TestReadSpecTooLarge(t *testing.T) {
	// A reader that never ends: readSpec must stop at its limit.
	_, err := readSpec(endlessReader{})
	if err == nil || !strings.Contains(err.Error(), "over the 67108864-byte limit") {
		t.Fatalf("readSpec error = %v, want the size limit", err)
	}
}

func TestReadSpecInvalidJSON(t *testing.T) {
	_, err := readSpec(strings.NewReader(`{"Exec": 3}`))
	if err == nil || !strings.HasPrefix(err.Error(), "krun: read spec: ") {
		t.Fatalf("readSpec error = %v, want a decode error", err)
	}
}

func TestReportFatalLineParses(t *testing.T) {
	// Control bytes expand sixfold in JSON; the line must still fit what the
	// parent reads.
	long := strings.Repeat("\x01", 5000)
	var out strings.Builder
	reportFatal(&out, errors.New(long))

	line := out.String()
	if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
		t.Fatalf("fatal output %q is not one line", line)
	}
	if len(line) > maxLogLineBytes {
		t.Errorf("fatal line has %d bytes, over maxLogLineBytes %d", len(line), maxLogLineBytes)
	}
	var msg childMessage
	if err := json.Unmarshal([]byte(line), &msg); err != nil {
		t.Fatalf("fatal line does not parse: %v", err)
	}
	if !strings.HasSuffix(msg.Fatal, "...") || len(msg.Fatal) != maxFatalBytes+3 {
		t.Errorf("fatal message has %d bytes, want %d ending in ...", len(msg.Fatal), maxFatalBytes+3)
	}
}

type endlessReader struct{}

var spaces = []byte(strings.Repeat(" ", 64<<10))

func (endlessReader) Read(p []byte) (int, error) {
	return copy(p, spaces), nil
}
