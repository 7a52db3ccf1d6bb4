package agent

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func validMessages() []Message {
	return []Message{
		&HelloMsg{Version: 1, Software: "throwawaysh v1.0.0"},
		&StartMsg{ID: 1, TTY: true},
		&StartMsg{
			ID: 7, Command: "echo \"$HOME\" <&> \u2028 \x01\ttab\nline", TTY: true, Term: "xterm-256color",
			Rows: 65535, Cols: 80, Env: []string{"LANG=C.UTF-8", "EMPTY="},
			Modes: map[uint8]uint32{1: 3, 53: 0, 128: 38400, 159: 4294967295},
		},
		&StartMsg{ID: 2, Subsystem: SubsystemSFTP},
		&StartedMsg{ID: 1, PID: 4242},
		&ResizeMsg{ID: 1, Rows: 0, Cols: 0},
		&ResizeMsg{ID: 4294967295, Rows: 50, Cols: 200},
		&SignalMsg{ID: 1, Signal: "INT"},
		&SignalMsg{ID: 1, Signal: "CUSTOM@example.com"},
		&ExitMsg{ID: 1, Status: 0},
		&ExitMsg{ID: 1, Status: 255},
		&ExitMsg{ID: 1, Status: 143, Signal: "TERM"},
		&ExitMsg{ID: ConsoleID, Status: 143, Signal: "TERM"},
		&ErrorMsg{ID: 0, Message: "connection-level\tproblem"},
		&ErrorMsg{ID: 3, Message: "no process with id 3"},
		&AttachMsg{ID: 2},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range validMessages() {
		line, err := EncodeMessage(m)
		if err != nil {
			t.Errorf("EncodeMessage(%#v): %v", m, err)
			continue
		}
		if bytes.ContainsRune(line, '\n') {
			t.Errorf("EncodeMessage(%#v) = %q, contains a newline", m, line)
		}
		got, err := DecodeMessage(line)
		if err != nil {
			t.Errorf("DecodeMessage(%s): %v", line, err)
			continue
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("round trip of %s:\n got %#v\nwant %#v", line, got, m)
		}
	}
}

func TestEncodeMessageKeepsRequiredZeros(t *testing.T) {
	tests := []struct {
		msg  Message
		want string
	}{
		{&ExitMsg{ID: 1, Status: 0}, `{"type":"exit","id":1,"status":0}`},
		{&ResizeMsg{ID: 2, Rows: 0, Cols: 0}, `{"type":"resize","id":2,"rows":0,"cols":0}`},
		{&StartMsg{ID: 3, TTY: false}, `{"type":"start","id":3,"tty":false}`},
		{&ErrorMsg{ID: 0, Message: "x"}, `{"type":"error","id":0,"message":"x"}`},
	}
	for _, tt := range tests {
		// StartMsg with tty false is valid on the wire; agents reject it.
		line, err := EncodeMessage(tt.msg)
		if err != nil {
			t.Errorf("EncodeMessage(%#v): %v", tt.msg, err)
			continue
		}
		if string(line) != tt.want {
			t.Errorf("EncodeMessage(%#v) = %s, want %s", tt.msg, line, tt.want)
		}
	}
}

func TestDecodeMessageRejects(t *testing.T) {
	tests := []struct {
		name string
		line string
		want string // must appear in the error
	}{
		{"empty", ``, "empty line"},
		{"not json", `hello`, "malformed JSON"},
		{"array", `[1,2]`, "not a message object"},
		{"trailing data", `{"type":"attach","id":1} {}`, "malformed JSON"},
		{"invalid utf8", "{\"type\":\"error\",\"id\":1,\"message\":\"\xff\"}", "UTF-8"},
		{"missing type", `{"id":1}`, `"type" is missing`},
		{"unknown type", `{"type":"reboot"}`, `unknown message type "reboot"`},
		{"type not string", `{"type":5}`, `field "type"`},
		{"hello missing version", `{"type":"hello","software":"x"}`, `"version" is missing`},
		{"hello version zero", `{"type":"hello","version":0,"software":"x"}`, `"version": 0 is out of range`},
		{"hello missing software", `{"type":"hello","version":1}`, `"software" is missing`},
		{"hello empty software", `{"type":"hello","version":1,"software":""}`, `"software" is empty`},
		{"hello long software", `{"type":"hello","version":1,"software":"` + strings.Repeat("s", 129) + `"}`, `"software": 129 bytes`},
		{"hello control char", `{"type":"hello","version":1,"software":"a\u001b[31m"}`, `"software": control character`},
		{"start missing id", `{"type":"start","tty":true}`, `"id" is missing`},
		{"start unknown subsystem", `{"type":"start","id":1,"tty":false,"subsystem":"shell"}`, `"subsystem": "shell" is not a supported subsystem`},
		{"start subsystem with command", `{"type":"start","id":1,"tty":false,"subsystem":"sftp","command":"ls"}`, `"command" must be empty for subsystem "sftp"`},
		{"start subsystem with tty", `{"type":"start","id":1,"tty":true,"subsystem":"sftp"}`, `"tty" must be false for subsystem "sftp"`},
		{"start subsystem not string", `{"type":"start","id":1,"tty":false,"subsystem":1}`, `field "subsystem"`},
		{"start id zero", `{"type":"start","id":0,"tty":true}`, `"id": 0 is out of range`},
		{"start id negative", `{"type":"start","id":-1,"tty":true}`, `"id": -1 is out of range`},
		{"start id too big", `{"type":"start","id":4294967296,"tty":true}`, `"id": 4294967296 is out of range`},
		{"start id fraction", `{"type":"start","id":1.5,"tty":true}`, `field "id"`},
		{"start id string", `{"type":"start","id":"1","tty":true}`, `field "id"`},
		{"start missing tty", `{"type":"start","id":1}`, `"tty" is missing`},
		{"start rows too big", `{"type":"start","id":1,"tty":true,"rows":65536}`, `"rows": 65536 is out of range 0..65535`},
		{"start cols negative", `{"type":"start","id":1,"tty":true,"cols":-2}`, `"cols": -2 is out of range`},
		{"start command nul", `{"type":"start","id":1,"tty":true,"command":"a\u0000b"}`, `"command": NUL byte`},
		{"start command long", `{"type":"start","id":1,"tty":true,"command":"` + strings.Repeat("x", MaxCommandSize+1) + `"}`, `"command": 262145 bytes`},
		{"start term control", `{"type":"start","id":1,"tty":true,"term":"a\nb"}`, `"term": control character`},
		{"start term long", `{"type":"start","id":1,"tty":true,"term":"` + strings.Repeat("t", 65) + `"}`, `"term": 65 bytes`},
		{"start env no equals", `{"type":"start","id":1,"tty":true,"env":["A=1","NOEQUALS"]}`, `"env[1]": "NOEQUALS" is not of the form KEY=value`},
		{"start env empty key", `{"type":"start","id":1,"tty":true,"env":["=1"]}`, `"env[0]"`},
		{"start env nul", `{"type":"start","id":1,"tty":true,"env":["A=\u0000"]}`, `"env[0]": NUL byte`},
		{"start env too many", `{"type":"start","id":1,"tty":true,"env":[` + strings.TrimSuffix(strings.Repeat(`"A=1",`, 65), ",") + `]}`, `"env": 65 entries`},
		{"start env not array", `{"type":"start","id":1,"tty":true,"env":"A=1"}`, `field "env"`},
		{"start mode key zero", `{"type":"start","id":1,"tty":true,"modes":{"0":1}}`, `"modes": key "0"`},
		{"start mode key 160", `{"type":"start","id":1,"tty":true,"modes":{"160":1}}`, `"modes": key "160"`},
		{"start mode key padded", `{"type":"start","id":1,"tty":true,"modes":{"053":1}}`, `"modes": key "053"`},
		{"start mode key word", `{"type":"start","id":1,"tty":true,"modes":{"echo":1}}`, `"modes": key "echo"`},
		{"start mode value big", `{"type":"start","id":1,"tty":true,"modes":{"53":4294967296}}`, `"modes": opcode 53 has value 4294967296`},
		{"started missing pid", `{"type":"started","id":1}`, `"pid" is missing`},
		{"started pid zero", `{"type":"started","id":1,"pid":0}`, `"pid": 0 is out of range`},
		{"resize missing rows", `{"type":"resize","id":1,"cols":3}`, `"rows" is missing`},
		{"resize missing cols", `{"type":"resize","id":1,"rows":3}`, `"cols" is missing`},
		{"resize cols too big", `{"type":"resize","id":1,"rows":3,"cols":70000}`, `"cols": 70000 is out of range`},
		{"signal missing name", `{"type":"signal","id":1}`, `"signal" is missing`},
		{"signal empty name", `{"type":"signal","id":1,"signal":""}`, `"signal" is empty`},
		{"signal bad chars", `{"type":"signal","id":1,"signal":"INT; rm"}`, `"signal": "INT; rm" contains a character`},
		{"signal long", `{"type":"signal","id":1,"signal":"` + strings.Repeat("A", 33) + `"}`, `"signal": 33 bytes`},
		{"exit missing status", `{"type":"exit","id":1}`, `"status" is missing`},
		{"exit status too big", `{"type":"exit","id":1,"status":256}`, `"status": 256 is out of range 0..255`},
		{"exit unknown signal", `{"type":"exit","id":1,"status":130,"signal":"NOPE"}`, `"signal": "NOPE" is not a Linux signal name`},
		{"exit status mismatch", `{"type":"exit","id":1,"status":130,"signal":"TERM"}`, `"status": 130 does not match signal TERM, which needs 143`},
		{"error missing message", `{"type":"error","id":1}`, `"message" is missing`},
		{"error empty message", `{"type":"error","id":1,"message":""}`, `"message" is empty`},
		{"error negative id", `{"type":"error","id":-1,"message":"x"}`, `"id": -1 is out of range`},
		{"error long message", `{"type":"error","id":1,"message":"` + strings.Repeat("m", MaxErrorSize+1) + `"}`, `"message": 1025 bytes`},
		{"attach missing id", `{"type":"attach"}`, `"id" is missing`},
		{"too long", `{"type":"error","id":1,"message":"` + strings.Repeat("m", MaxMessageSize) + `"}`, "over the 2097152-byte limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := DecodeMessage([]byte(tt.line))
			if err == nil {
				t.Fatalf("DecodeMessage accepted %.200s as a %s message", tt.line, m.MessageType())
			}
			if !strings.HasPrefix(err.Error(), "agent: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestDecodeMessageIgnoresUnknownFields(t *testing.T) {
	// A hello from a later version may carry more fields; the host must
	// still read its version to report the mismatch.
	m, err := DecodeMessage([]byte(`{"type":"hello","version":2,"software":"future","features":["x"]}`))
	if err != nil {
		t.Fatalf("DecodeMessage: %v", err)
	}
	hello, ok := m.(*HelloMsg)
	if !ok || hello.Version != 2 {
		t.Fatalf("DecodeMessage = %#v, want a hello with version 2", m)
	}
}

func TestEncodeMessageRejects(t *testing.T) {
	tests := []struct {
		name string
		msg  Message
		want string
	}{
		{"nil", nil, "nil message"},
		{"rows", &StartMsg{ID: 1, TTY: true, Rows: 70000}, `"rows": 70000`},
		{"id zero", &AttachMsg{}, `"id": 0`},
		{"invalid utf8 command", &StartMsg{ID: 1, TTY: true, Command: "\xff"}, `"command" is not valid UTF-8`},
		{"mode opcode", &StartMsg{ID: 1, TTY: true, Modes: map[uint8]uint32{200: 1}}, `opcode 200`},
		{"line limit", &StartMsg{ID: 1, TTY: true, Command: strings.Repeat("\x01", MaxCommandSize), Env: fullEnv("\x01")}, "over the 2097152-byte line limit"},
		{"negative status", &ExitMsg{ID: 1, Status: -1}, `"status": -1`},
		{"subsystem name", &StartMsg{ID: 1, Subsystem: "exec"}, `"exec" is not a supported subsystem`},
		{"subsystem tty", &StartMsg{ID: 1, TTY: true, Subsystem: SubsystemSFTP}, `"tty" must be false`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := EncodeMessage(tt.msg)
			if err == nil {
				t.Fatalf("EncodeMessage(%#v) succeeded", tt.msg)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestEncodeMessageMaxCommand(t *testing.T) {
	m := &StartMsg{ID: 1, TTY: true, Command: strings.Repeat("x", MaxCommandSize), Env: []string{"A=" + strings.Repeat("y", MaxEnvEntrySize-2)}}
	line, err := EncodeMessage(m)
	if err != nil {
		t.Fatalf("EncodeMessage of a command of %d bytes: %v", MaxCommandSize, err)
	}
	if _, err := DecodeMessage(line); err != nil {
		t.Fatalf("DecodeMessage: %v", err)
	}
}

func TestReadLine(t *testing.T) {
	maxLine := `{"type":"error","id":1,"message":"` + strings.Repeat("m", MaxErrorSize) + `"}`
	input := "first\n" + strings.Repeat("x", MaxMessageSize) + "\n" + maxLine + "\nlast"
	r := bufio.NewReaderSize(strings.NewReader(input), 16)

	line, err := readLine(r)
	if err != nil || string(line) != "first" {
		t.Fatalf("readLine = %q, %v; want \"first\"", line, err)
	}
	line, err = readLine(r)
	if err != nil || len(line) != MaxMessageSize {
		t.Fatalf("readLine of a line of exactly %d bytes = %d bytes, %v", MaxMessageSize, len(line), err)
	}
	line, err = readLine(r)
	if err != nil || string(line) != maxLine {
		t.Fatalf("readLine = %.40q, %v; want the error message line", line, err)
	}
	if _, err := readLine(r); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("readLine of a line cut by end of file: err = %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestReadLineTooLong(t *testing.T) {
	// The reader must stop at the limit, not buffer the whole line.
	source := &countingReader{r: strings.NewReader(strings.Repeat("x", 10*MaxMessageSize) + "\n")}
	_, err := readLine(bufio.NewReader(source))
	if !errors.Is(err, errLineTooLong) {
		t.Fatalf("readLine of an oversize line: err = %v, want errLineTooLong", err)
	}
	if source.n > 2*MaxMessageSize {
		t.Errorf("readLine read %d bytes of an oversize line, want at most %d", source.n, 2*MaxMessageSize)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += n
	return n, err
}

func TestSupportedSignal(t *testing.T) {
	for _, name := range []string{"INT", "TERM", "HUP", "KILL", "QUIT", "USR1", "USR2", "ALRM", "ABRT", "PIPE", "FPE", "ILL", "SEGV"} {
		if !SupportedSignal(name) {
			t.Errorf("SupportedSignal(%q) = false, want true", name)
		}
		if _, ok := signalNumber(name); !ok {
			t.Errorf("signalNumber(%q) has no number", name)
		}
	}
	for _, name := range []string{"", "SIGINT", "int", "WINCH", "STOP", "CUSTOM@example.com"} {
		if SupportedSignal(name) {
			t.Errorf("SupportedSignal(%q) = true, want false", name)
		}
	}
	if got := signalName(15); got != "TERM" {
		t.Errorf("signalName(15) = %q, want TERM", got)
	}
	if got := signalName(40); got != "" {
		t.Errorf("signalName(40) = %q, want empty for a real-time signal", got)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, m := range validMessages() {
		line, err := EncodeMessage(m)
		if err != nil {
			f.Fatalf("EncodeMessage(%#v): %v", m, err)
		}
		f.Add(line)
	}
	for _, seed := range []string{
		``, `{}`, `null`, `[]`, `{"type":null}`, `{"type":"start","id":1,"tty":true,"modes":{"1":3,"053":1}}`,
		`{"type":"exit","id":1,"status":137,"signal":"KILL"}`, `{"type":"exit","id":0,"status":143,"signal":"TERM"}`,
		`{"type":"exit","id":-1,"status":0}`, `{"type":"hello","version":1e3,"software":"x"}`,
		`{"TYPE":"attach","ID":5}`, `{"type":"start","id":1,"tty":true,"env":[null]}`,
		"{\"type\":\"error\",\"id\":0,\"message\":\"\\ud800\"}",
		`{"type":"start","id":1,"tty":false,"subsystem":"sftp","term":"x","rows":1}`,
		`{"type":"start","id":1,"tty":false,"subsystem":"SFTP"}`, `{"type":"start","id":1,"tty":false,"subsystem":""}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := DecodeMessage(line)
		if err != nil {
			if m != nil {
				t.Fatalf("DecodeMessage returned %#v with error %v", m, err)
			}
			return
		}
		encoded, err := EncodeMessage(m)
		if err != nil {
			t.Fatalf("DecodeMessage accepted %q as %#v, which EncodeMessage rejects: %v", line, m, err)
		}
		if len(encoded) > MaxMessageSize {
			t.Fatalf("EncodeMessage returned %d bytes, over MaxMessageSize", len(encoded))
		}
		again, err := DecodeMessage(encoded)
		if err != nil {
			t.Fatalf("DecodeMessage of re-encoded %q: %v", encoded, err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip changed the message:\nfirst  %#v\nsecond %#v", m, again)
		}
	})
}

// fullEnv returns the most env entries start may carry, each of the
// maximum size and filled with fill.
func fullEnv(fill string) []string {
	env := make([]string, MaxEnvEntries)
	for i := range env {
		env[i] = "A=" + strings.Repeat(fill, MaxEnvEntrySize-2)
	}
	return env
}
