// Package agent implements the guest agent of PTY and SFTP sessions, its
// exit reporter for sessions without a PTY (RunConsole), the host-side
// client that drives it, and the wire protocol between them.
//
// For an SSH session with a PTY the host boots a VM whose workload is the
// agent (cmd/throwawaysh-guest-agent). The agent dials the host and receives
// what to run. It runs that in a pseudo-terminal and forwards bytes, window
// sizes, signals and the exit status. This comment is the one place that
// defines the protocol, and the code follows it.
//
// # Transport
//
// One stream connection carries everything: vsock in the VM (libkrun bridges
// guest CID 2, port DefaultVsockPort, to a unix socket on the host), or a
// unix socket in tests. The connection is multiplexed with yamux
// (github.com/hashicorp/yamux) because its streams have independent
// per-stream flow control. So a slow SSH client back-pressures one
// process's output without stalling the control messages next to it.
//
//   - The agent dials, so the agent is the yamux client and the host the
//     yamux server. The host listens before the VM starts, so no side has
//     to retry.
//   - The host opens every stream. A stream opened by the agent is a
//     protocol violation and ends the connection, so a hostile guest cannot
//     make the host buffer data on streams that no one reads.
//   - Each stream's receive window is fixed at 256 KiB (yamux's minimum), so
//     every stream buffers at most that much in the receiver.
//   - yamux keepalive is off. The peer is local: when the VM dies, the VMM
//     process dies and the host reads end of file. A ping timeout would only
//     end sessions whose guest is busy.
//   - Neither side sends yamux pings, and the host ends the connection at
//     the agent's first one: yamux answers each ping from a new goroutine,
//     so a flood of pings could start goroutines without bound.
//
// # Control stream
//
// The first stream the host opens is the control stream (yamux gives
// server-opened streams even IDs, so its ID is 2). Each message on it is one
// JSON object on one line, terminated by "\n", of at most MaxMessageSize
// bytes without the newline. A longer line is a protocol violation, which
// bounds what either side buffers for a message. Every message has a
// "type" field. Decoders ignore unknown fields, so that a hello from any
// version decodes far enough to compare versions. DecodeMessage defines
// the exact field ranges. A control write that cannot complete within 10
// seconds ends the connection, because the peer reads that stream all the
// time and a stuck peer would leave the other side waiting forever. So does
// any write to the connection itself that waits 10 seconds, because yamux
// reads the connection all the time and buffers each stream's data within
// its window.
//
// Version 1 messages (→ agent means host to agent):
//
//	hello   both    {version, software}
//	start   → agent {id, command, tty, term, rows, cols, env, modes, subsystem}
//	started → host  {id, pid}
//	resize  → agent {id, rows, cols}
//	signal  → agent {id, signal}
//	exit    → host  {id, status, signal}
//	error   → host  {id, message}
//	attach  → agent {id}, only as the first line of a data stream
//
// Rules, each with its reason:
//
//   - Both sides send hello first, without waiting for the peer's, so the
//     exchange costs one round trip. Each side rejects any version other
//     than ProtocolVersion (ErrVersionMismatch), because the agent is
//     installed into the guest root separately and must come from the same
//     release. hello keeps this shape in every version, so that mismatches
//     stay detectable.
//   - The host picks process ids, starting at 1 and never reusing one on a
//     connection, so that a late message cannot be taken for a newer
//     process. Id 0 is invalid everywhere except in error, where it means
//     that the error concerns the connection (for example a control line the
//     agent could not decode). The sender closes the connection next.
//   - start with an empty command runs an interactive login shell. tty must
//     be true for version 1 agents unless subsystem is set. It exists so
//     that a later version can run commands without a PTY. rows and cols
//     of 0 mean "unknown", as in RFC 4254 section 6.2. Both are at most
//     65535 because the kernel's struct winsize holds them in 16 bits.
//     modes maps RFC 4254 terminal mode opcodes (1 to 159) to their
//     values. The agent applies those that Linux supports and ignores the
//     rest, as RFC 4254 section 8 allows.
//   - start with subsystem "sftp" (the only subsystem) serves the SFTP
//     protocol in the agent itself, so that a rootfs needs no sftp-server.
//     command must be empty and tty false, because a subsystem has neither.
//     The agent ignores term, rows, cols, env and modes. started carries the
//     agent's own pid. The data stream then carries SFTP packets in both
//     directions, and paths resolve in the guest filesystem from the
//     account's home directory (/ when it does not exist). When the host
//     closes its write half the SFTP server ends, the agent closes its
//     write half and sends exit with status 0, or 1 when the server failed.
//     A subsystem has no PTY, so resize and signal for it get error.
//   - The agent replies to start with started once the process runs, or
//     with error. It sends started before anything else about that
//     process, so the host always learns the pid first.
//   - After started the host opens one data stream for the process. Its
//     first line is an attach message, then raw bytes follow: host to agent
//     is PTY input, agent to host is PTY output. Keeping terminal bytes off
//     the control stream lets yamux flow control act on them alone. Until
//     the data stream arrives the agent does not read the PTY, so early
//     output waits in the kernel's PTY buffer and nothing is lost. A
//     process without a data stream after 10 seconds is hung up.
//   - End of input (the host closes its write half) changes nothing in the
//     guest, as with OpenSSH, because a PTY has no half-close. A user ends
//     input with the terminal's EOF character.
//   - A 0 in resize keeps that dimension's current value, so that the host
//     can forward window changes from clients that report only one. A
//     resize that arrives after the process exited is ignored.
//   - signal names are those of RFC 4254 section 6.10 without "SIG" (see
//     SupportedSignal). The agent sends them to the PTY's foreground process
//     group, so INT interrupts a whole pipeline, as Ctrl-C would. It replies
//     to an unknown name or id with error and keeps serving.
//   - When the process has exited, the agent first reads the PTY until it
//     returns EIO (no process holds the terminal open any more) or until 200
//     ms pass without output (background jobs can keep it open forever). It
//     also stops once it has waited 2 seconds for output in all or read 1
//     MiB since the exit, so that a background job that keeps writing cannot
//     hold the exit back. It then closes its write half of the data stream,
//     sends SIGHUP and SIGCONT to what is left in the process's session, as
//     a terminal hangup does, and only then sends exit. So all output
//     reaches the host before the exit status.
//   - The host relies on that order: when exit arrives, it returns the
//     output it has buffered (at most the 256 KiB receive window) and then
//     end of file, even when the agent keeps the data stream open.
//   - exit carries the exit code, or 128+N and the signal's name when signal
//     N killed the process, as a shell reports it. Signal names in exit use
//     Linux numbering whatever the host's OS, because the guest is Linux.
//   - exit with id 0 is the console report. Without a PTY the host runs the
//     command as the VM's workload with its stdin, stdout and stderr on the
//     VM console, so that the bytes stay exact. The VM's exit status then
//     holds only 128+N for signal N, which cannot be told from "exit 143".
//     So when the rootfs has the agent, the workload is the agent started
//     with --exec: it runs the command as its child on the console, dials
//     the host and, once the child has ended, sends one exit with id 0 and
//     the exact status and signal. The host opens no stream on such a
//     connection. After hello it sends only signal with id 0, which the
//     agent delivers to the child's process group, as sshd delivers a
//     signal request to a command without a PTY. The agent accepts no
//     other request there. The agent then exits with the child's status,
//     so the VM's status still tells the code when the report is lost.
//   - error reports a request that failed. For a running process it changes
//     nothing else, and exit still follows.
//   - Either side may close the connection at any time. The agent then
//     hangs up every process it still runs, and kills the session of each
//     process that is still running 2 seconds later.
package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ProtocolVersion is the version of the wire protocol that this package
// speaks. Both sides must speak the same one.
const ProtocolVersion = 1

// DefaultVsockPort is the guest vsock port on which the agent dials the host.
// libkrun's transparent socket impersonation uses vsock port 620 and ports
// 1024 to 1031 for its own requests, so the agent stays clear of those.
const DefaultVsockPort = 7022

// Limits of the wire protocol. Each bounds what a hostile peer can make the
// other side buffer or pass on.
const (
	// MaxMessageSize is the maximum length of one control line in bytes,
	// without its newline. It leaves room for a MaxCommandSize command even
	// when JSON escapes most of its bytes (up to 6 bytes each).
	MaxMessageSize = 2 << 20
	// MaxCommandSize is the maximum length of start's command in bytes: the
	// SSH packet limit of OpenSSH and x/crypto/ssh (256 KiB), so that every
	// command a client can send fits.
	MaxCommandSize = 256 << 10
	// MaxEnvEntries is the maximum number of entries in start's env.
	MaxEnvEntries = 64
	// MaxEnvEntrySize is the maximum length of one env entry in bytes.
	MaxEnvEntrySize = 4 << 10
	// MaxTermSize is the maximum length of start's term in bytes.
	MaxTermSize = 64
	// MaxSoftwareSize is the maximum length of hello's software in bytes.
	MaxSoftwareSize = 128
	// MaxErrorSize is the maximum length of error's message in bytes.
	MaxErrorSize = 1024
	// MaxSignalNameSize is the maximum length of a signal name in bytes.
	MaxSignalNameSize = 32
	// MaxDimension is the maximum number of rows or columns, the range of
	// the kernel's 16-bit struct winsize fields.
	MaxDimension = math.MaxUint16
)

// ConsoleID is the id of the exit message that an agent started with
// --exec sends for the command it runs on the VM console. No process
// started with start has it, because those ids start at 1.
const ConsoleID uint32 = 0

// Message types, the values of the "type" field.
const (
	TypeHello   = "hello"
	TypeStart   = "start"
	TypeStarted = "started"
	TypeResize  = "resize"
	TypeSignal  = "signal"
	TypeExit    = "exit"
	TypeError   = "error"
	TypeAttach  = "attach"
)

// Message is one decoded protocol message: *HelloMsg, *StartMsg,
// *StartedMsg, *ResizeMsg, *SignalMsg, *ExitMsg, *ErrorMsg or *AttachMsg.
// The set is closed: only those types implement it.
type Message interface {
	// MessageType returns the value of the message's "type" field.
	MessageType() string
	// validate checks every field against the protocol's ranges.
	validate() error
}

// HelloMsg opens the control stream in both directions.
type HelloMsg struct {
	// Version is the sender's protocol version, 1 or more.
	Version int `json:"version"`
	// Software names the sender's program and release, for logs only.
	Software string `json:"software"`
}

// StartMsg requests a new process from the agent.
type StartMsg struct {
	// ID is the process id that the host chose, 1 or more.
	ID uint32 `json:"id"`
	// Command is run with the shell's -c. Empty means an interactive login
	// shell. It must not contain NUL, which no exec argument can hold.
	Command string `json:"command,omitempty"`
	// TTY requests a pseudo-terminal. Version 1 agents reject false unless
	// Subsystem is set, which needs false.
	TTY bool `json:"tty"`
	// Term is the TERM value. Empty leaves TERM unset unless Env sets it.
	Term string `json:"term,omitempty"`
	// Rows and Cols are the initial window size, 0 to MaxDimension, where 0
	// means unknown.
	Rows uint32 `json:"rows,omitempty"`
	Cols uint32 `json:"cols,omitempty"`
	// Env holds extra "KEY=value" entries. They override the agent's
	// defaults for TERM, HOME, USER, LOGNAME, SHELL and PATH.
	Env []string `json:"env,omitempty"`
	// Modes maps RFC 4254 terminal mode opcodes (1 to 159) to values.
	Modes map[uint8]uint32 `json:"modes,omitempty"`
	// Subsystem names a subsystem that the agent serves itself, and is
	// empty for a shell or command. SubsystemSFTP is the only one; it
	// needs an empty Command and TTY false.
	Subsystem string `json:"subsystem,omitempty"`
}

// SubsystemSFTP is the value of StartMsg.Subsystem that serves SFTP.
const SubsystemSFTP = "sftp"

// StartedMsg reports that the process of ID runs with process id PID.
type StartedMsg struct {
	ID  uint32 `json:"id"`
	PID int    `json:"pid"`
}

// ResizeMsg changes the window size of process ID's PTY. A 0 keeps that
// dimension as it is.
type ResizeMsg struct {
	ID   uint32 `json:"id"`
	Rows uint32 `json:"rows"`
	Cols uint32 `json:"cols"`
}

// SignalMsg sends a signal, named as in RFC 4254 without "SIG", to process
// ID's foreground process group. The decoder accepts any well-formed name;
// the agent replies to names outside SupportedSignal with an error message.
type SignalMsg struct {
	ID     uint32 `json:"id"`
	Signal string `json:"signal"`
}

// ExitMsg reports how process ID ended. It follows all of its output.
type ExitMsg struct {
	// ID is the process id, or ConsoleID for the report of an agent that
	// runs the console command (--exec).
	ID uint32 `json:"id"`
	// Status is the exit code, or 128+N when signal N killed the process.
	Status int `json:"status"`
	// Signal names the signal that killed the process, without "SIG", and
	// is empty otherwise. It is also empty for signals without a name in
	// this package (real-time signals), which leaves only Status to tell.
	Signal string `json:"signal,omitempty"`
}

// ErrorMsg reports a failed request. ID 0 means that the error concerns the
// whole connection, which the sender closes next.
type ErrorMsg struct {
	ID      uint32 `json:"id"`
	Message string `json:"message"`
}

// AttachMsg is the first line of a data stream and names its process.
type AttachMsg struct {
	ID uint32 `json:"id"`
}

func (*HelloMsg) MessageType() string   { return TypeHello }
func (*StartMsg) MessageType() string   { return TypeStart }
func (*StartedMsg) MessageType() string { return TypeStarted }
func (*ResizeMsg) MessageType() string  { return TypeResize }
func (*SignalMsg) MessageType() string  { return TypeSignal }
func (*ExitMsg) MessageType() string    { return TypeExit }
func (*ErrorMsg) MessageType() string   { return TypeError }
func (*AttachMsg) MessageType() string  { return TypeAttach }

// wireMessage is the decoding target for every message type. Pointers tell
// a missing field from a zero value, and int64 numbers let the range checks
// name the field instead of failing inside encoding/json.
type wireMessage struct {
	Type     *string          `json:"type"`
	Version  *int64           `json:"version"`
	Software *string          `json:"software"`
	ID       *int64           `json:"id"`
	Command  *string          `json:"command"`
	TTY      *bool            `json:"tty"`
	Term     *string          `json:"term"`
	Rows     *int64           `json:"rows"`
	Cols     *int64           `json:"cols"`
	Env      []string         `json:"env"`
	Modes    map[string]int64 `json:"modes"`
	PID      *int64           `json:"pid"`
	Status   *int64           `json:"status"`
	Signal   *string          `json:"signal"`
	Message  *string          `json:"message"`
	// Subsystem is start's subsystem.
	Subsystem *string `json:"subsystem"`
}

// DecodeMessage decodes and validates one control line, without its
// newline. The error names the message type and the field that is missing,
// malformed or out of range, or the unknown type. Every message it accepts
// also passes EncodeMessage, so it can be sent on unchanged.
func DecodeMessage(line []byte) (Message, error) {
	m, err := decodeMessage(line)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return m, nil
}

// decodeMessage is DecodeMessage without the package prefix on errors.
func decodeMessage(line []byte) (Message, error) {
	if len(line) == 0 {
		return nil, errors.New("invalid message: empty line")
	}
	if len(line) > MaxMessageSize {
		return nil, fmt.Errorf("invalid message: %d bytes, over the %d-byte limit", len(line), MaxMessageSize)
	}
	if !utf8.Valid(line) {
		return nil, errors.New("invalid message: not valid UTF-8")
	}

	var w wireMessage
	if err := json.Unmarshal(line, &w); err != nil {
		return nil, fmt.Errorf("invalid message: %s", describeJSONError(err))
	}
	if w.Type == nil {
		return nil, errors.New(`invalid message: field "type" is missing`)
	}

	m, err := w.message()
	if err != nil {
		return nil, err
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("invalid %s message: %w", m.MessageType(), err)
	}

	// A valid message can re-encode longer than it arrived, because
	// encoding/json escapes U+2028 and U+2029. The field limits keep that
	// under MaxMessageSize today, and checking here keeps the promise that
	// every accepted message can be sent again if the limits change.
	if _, err := encodeMessage(m); err != nil {
		return nil, err
	}
	return m, nil
}

// message converts the wire form into its typed message and checks which
// fields are present and in range for the integer types. validate checks
// the rest.
func (w *wireMessage) message() (Message, error) {
	f := fieldReader{typ: *w.Type}
	var m Message
	switch *w.Type {
	case TypeHello:
		m = &HelloMsg{
			Version:  int(f.integer("version", w.Version, 1, math.MaxInt32, true)),
			Software: f.text("software", w.Software, true),
		}
	case TypeStart:
		m = &StartMsg{
			ID:      f.id(w.ID),
			Command: f.text("command", w.Command, false),
			TTY:     f.boolean("tty", w.TTY, true),
			Term:    f.text("term", w.Term, false),
			Rows:    uint32(f.integer("rows", w.Rows, 0, MaxDimension, false)),
			Cols:    uint32(f.integer("cols", w.Cols, 0, MaxDimension, false)),
			Env:     w.Env,
			Modes:   f.modes(w.Modes),

			Subsystem: f.text("subsystem", w.Subsystem, false),
		}
	case TypeStarted:
		m = &StartedMsg{ID: f.id(w.ID), PID: int(f.integer("pid", w.PID, 1, math.MaxInt32, true))}
	case TypeResize:
		m = &ResizeMsg{
			ID:   f.id(w.ID),
			Rows: uint32(f.integer("rows", w.Rows, 0, MaxDimension, true)),
			Cols: uint32(f.integer("cols", w.Cols, 0, MaxDimension, true)),
		}
	case TypeSignal:
		m = &SignalMsg{
			// Id 0 is the console command.
			ID:     uint32(f.integer("id", w.ID, 0, math.MaxUint32, true)),
			Signal: f.text("signal", w.Signal, true),
		}
	case TypeExit:
		m = &ExitMsg{
			// Id 0 is the console report.
			ID:     uint32(f.integer("id", w.ID, 0, math.MaxUint32, true)),
			Status: int(f.integer("status", w.Status, 0, 255, true)),
			Signal: f.text("signal", w.Signal, false),
		}
	case TypeError:
		m = &ErrorMsg{
			ID:      uint32(f.integer("id", w.ID, 0, math.MaxUint32, true)),
			Message: f.text("message", w.Message, true),
		}
	case TypeAttach:
		m = &AttachMsg{ID: f.id(w.ID)}
	default:
		return nil, fmt.Errorf("unknown message type %s", quote(*w.Type, 32))
	}
	if f.err != nil {
		return nil, fmt.Errorf("invalid %s message: %w", *w.Type, f.err)
	}
	// Empty and missing lists decode alike, so that a decoded message
	// equals itself after a round trip.
	if start, ok := m.(*StartMsg); ok && len(start.Env) == 0 {
		start.Env = nil
	}
	return m, nil
}

// fieldReader extracts fields from a wireMessage and keeps the first error.
type fieldReader struct {
	typ string
	err error
}

func (f *fieldReader) fail(format string, args ...any) {
	if f.err == nil {
		f.err = fmt.Errorf(format, args...)
	}
}

func (f *fieldReader) integer(name string, v *int64, lo, hi int64, required bool) int64 {
	if v == nil {
		if required {
			f.fail("field %q is missing", name)
		}
		return 0
	}
	if *v < lo || *v > hi {
		f.fail("field %q: %d is out of range %d..%d", name, *v, lo, hi)
		return 0
	}
	return *v
}

func (f *fieldReader) id(v *int64) uint32 {
	return uint32(f.integer("id", v, 1, math.MaxUint32, true))
}

func (f *fieldReader) text(name string, v *string, required bool) string {
	if v == nil {
		if required {
			f.fail("field %q is missing", name)
		}
		return ""
	}
	return *v
}

func (f *fieldReader) boolean(name string, v *bool, required bool) bool {
	if v == nil {
		if required {
			f.fail("field %q is missing", name)
		}
		return false
	}
	return *v
}

// modes converts the JSON object's decimal keys into opcodes. Keys must be
// in canonical form ("53", not "053"), so that two keys cannot name the
// same opcode.
func (f *fieldReader) modes(in map[string]int64) map[uint8]uint32 {
	if len(in) == 0 {
		return nil
	}
	out := make(map[uint8]uint32, len(in))
	for key, value := range in {
		opcode, err := strconv.ParseUint(key, 10, 8)
		if err != nil || strconv.FormatUint(opcode, 10) != key || opcode < 1 || opcode > 159 {
			f.fail("field %q: key %s is not a terminal mode opcode 1..159", "modes", quote(key, 16))
			return nil
		}
		if value < 0 || value > math.MaxUint32 {
			f.fail("field %q: opcode %d has value %d, out of range 0..%d", "modes", opcode, value, uint32(math.MaxUint32))
			return nil
		}
		out[uint8(opcode)] = uint32(value)
	}
	return out
}

// describeJSONError turns an encoding/json error into a sentence that names
// the field or the byte offset.
func describeJSONError(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return fmt.Sprintf("field %q: a JSON %s cannot be a %s", typeErr.Field, typeErr.Value, jsonKind(typeErr.Type.Kind().String()))
	case errors.As(err, &typeErr):
		return fmt.Sprintf("a JSON %s is not a message object", typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("malformed JSON at byte %d: %v", syntaxErr.Offset, err)
	default:
		return err.Error()
	}
}

// jsonKind names a Go kind in JSON terms for error messages.
func jsonKind(kind string) string {
	switch {
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"):
		return "integer"
	case kind == "ptr":
		return "value of this type"
	case kind == "slice":
		return "array"
	case kind == "map", kind == "struct":
		return "object"
	default:
		return kind
	}
}

// EncodeMessage validates m and returns its JSON form, one line without the
// newline. It fails, naming the field, when m is out of the protocol's
// ranges or encodes to more than MaxMessageSize bytes.
func EncodeMessage(m Message) ([]byte, error) {
	line, err := encodeMessage(m)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return line, nil
}

// encodeMessage is EncodeMessage without the package prefix on errors.
func encodeMessage(m Message) ([]byte, error) {
	if m == nil {
		return nil, errors.New("encode message: nil message")
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("invalid %s message: %w", m.MessageType(), err)
	}

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Without HTML escaping "<", ">" and "&" stay one byte each.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encode %s message: %w", m.MessageType(), err)
	}
	fields := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))

	// The type goes first, in front of the message's own fields. Every
	// message type has at least one field that is never omitted, so fields
	// is never "{}".
	line := make([]byte, 0, len(fields)+len(m.MessageType())+12)
	line = append(line, `{"type":"`...)
	line = append(line, m.MessageType()...)
	line = append(line, `",`...)
	line = append(line, fields[1:]...)
	if len(line) > MaxMessageSize {
		return nil, fmt.Errorf("invalid %s message: encodes to %d bytes, over the %d-byte line limit; shorten the command or environment", m.MessageType(), len(line), MaxMessageSize)
	}
	return line, nil
}

// errLineTooLong reports a control line over MaxMessageSize.
var errLineTooLong = fmt.Errorf("control line longer than %d bytes", MaxMessageSize)

// readLine reads one newline-terminated line of at most MaxMessageSize
// bytes and returns it without the newline. It stops reading as soon as a
// line is too long, so a peer cannot make it buffer more. End of file in
// the middle of a line is io.ErrUnexpectedEOF; io.EOF means a clean end
// between lines.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > MaxMessageSize+1 {
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, fmt.Errorf("connection closed in the middle of a control line: %w", io.ErrUnexpectedEOF)
		default:
			return nil, err
		}
	}
}

// readMessage reads and decodes one control line. Its errors have no
// package prefix.
func readMessage(r *bufio.Reader) (Message, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, err
	}
	return decodeMessage(line)
}

// encodeLine encodes m as one line with its newline. Its errors have no
// package prefix.
func encodeLine(m Message) ([]byte, error) {
	line, err := encodeMessage(m)
	if err != nil {
		return nil, err
	}
	return append(line, '\n'), nil
}
