package agent

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file contains the field checks of every message type, which
// DecodeMessage and EncodeMessage share. Their errors name the field and
// have no package prefix.

func (m *HelloMsg) validate() error {
	if m.Version < 1 || m.Version > math.MaxInt32 {
		return fmt.Errorf("field %q: %d is out of range 1..%d", "version", m.Version, math.MaxInt32)
	}
	return checkLabel("software", m.Software, 1, MaxSoftwareSize)
}

func (m *StartMsg) validate() error {
	if err := checkID(m.ID); err != nil {
		return err
	}
	if len(m.Command) > MaxCommandSize {
		return fmt.Errorf("field %q: %d bytes, over the %d-byte limit", "command", len(m.Command), MaxCommandSize)
	}
	if err := checkUTF8NoNUL("command", m.Command); err != nil {
		return err
	}
	if err := checkLabel("term", m.Term, 0, MaxTermSize); err != nil {
		return err
	}
	if err := checkDimensions(m.Rows, m.Cols); err != nil {
		return err
	}
	if err := checkEnv(m.Env); err != nil {
		return err
	}
	for opcode := range m.Modes {
		if opcode < 1 || opcode > 159 {
			return fmt.Errorf("field %q: opcode %d is not a terminal mode opcode 1..159", "modes", opcode)
		}
	}
	return checkSubsystem(m)
}

// checkSubsystem checks start's subsystem and the fields that a subsystem
// must leave empty.
func checkSubsystem(m *StartMsg) error {
	switch {
	case m.Subsystem == "":
		return nil
	case m.Subsystem != SubsystemSFTP:
		return fmt.Errorf("field %q: %s is not a supported subsystem; use %q", "subsystem", quote(m.Subsystem, 32), SubsystemSFTP)
	case m.Command != "":
		return fmt.Errorf("field %q must be empty for subsystem %q", "command", m.Subsystem)
	case m.TTY:
		return fmt.Errorf("field %q must be false for subsystem %q", "tty", m.Subsystem)
	}
	return nil
}

func (m *StartedMsg) validate() error {
	if err := checkID(m.ID); err != nil {
		return err
	}
	if m.PID < 1 || m.PID > math.MaxInt32 {
		return fmt.Errorf("field %q: %d is out of range 1..%d", "pid", m.PID, math.MaxInt32)
	}
	return nil
}

func (m *ResizeMsg) validate() error {
	if err := checkID(m.ID); err != nil {
		return err
	}
	return checkDimensions(m.Rows, m.Cols)
}

func (m *SignalMsg) validate() error {
	// Every id is valid here, because id 0 is the console command.
	return checkSignalName(m.Signal)
}

func (m *ExitMsg) validate() error {
	// Every id is valid here, because id 0 is the console report.
	if m.Status < 0 || m.Status > 255 {
		return fmt.Errorf("field %q: %d is out of range 0..255", "status", m.Status)
	}
	if m.Signal == "" {
		return nil
	}
	number, ok := signalNumber(m.Signal)
	if !ok {
		return fmt.Errorf("field %q: %s is not a Linux signal name", "signal", quote(m.Signal, MaxSignalNameSize))
	}
	if m.Status != 128+number {
		return fmt.Errorf("field %q: %d does not match signal %s, which needs %d", "status", m.Status, m.Signal, 128+number)
	}
	return nil
}

func (m *ErrorMsg) validate() error {
	return checkLabel("message", m.Message, 1, MaxErrorSize)
}

func (m *AttachMsg) validate() error {
	return checkID(m.ID)
}

func checkID(id uint32) error {
	if id == 0 {
		return fmt.Errorf("field %q: 0 is out of range 1..%d", "id", uint32(math.MaxUint32))
	}
	return nil
}

func checkDimensions(rows, cols uint32) error {
	if rows > MaxDimension {
		return fmt.Errorf("field %q: %d is out of range 0..%d", "rows", rows, MaxDimension)
	}
	if cols > MaxDimension {
		return fmt.Errorf("field %q: %d is out of range 0..%d", "cols", cols, MaxDimension)
	}
	return nil
}

// checkLabel checks a short text field: valid UTF-8 of min to max bytes,
// without control characters other than tab, so that it reads safely in
// logs and error messages.
func checkLabel(name, value string, min, max int) error {
	switch {
	case min > 0 && value == "":
		return fmt.Errorf("field %q is empty", name)
	case len(value) > max:
		return fmt.Errorf("field %q: %d bytes, over the %d-byte limit", name, len(value), max)
	case !utf8.ValidString(value):
		return fmt.Errorf("field %q is not valid UTF-8", name)
	}
	for i, r := range value {
		if isControl(r) && r != '\t' {
			return fmt.Errorf("field %q: control character %U at byte %d", name, r, i)
		}
	}
	return nil
}

func checkUTF8NoNUL(name, value string) error {
	if !utf8.ValidString(value) {
		return fmt.Errorf("field %q is not valid UTF-8", name)
	}
	if i := strings.IndexByte(value, 0); i >= 0 {
		return fmt.Errorf("field %q: NUL byte at offset %d", name, i)
	}
	return nil
}

func checkEnv(env []string) error {
	if len(env) > MaxEnvEntries {
		return fmt.Errorf("field %q: %d entries, over the limit of %d", "env", len(env), MaxEnvEntries)
	}
	for i, entry := range env {
		name := fmt.Sprintf("env[%d]", i)
		if len(entry) > MaxEnvEntrySize {
			return fmt.Errorf("field %q: %d bytes, over the %d-byte limit", name, len(entry), MaxEnvEntrySize)
		}
		if err := checkUTF8NoNUL(name, entry); err != nil {
			return err
		}
		if key, _, ok := strings.Cut(entry, "="); !ok || key == "" {
			return fmt.Errorf("field %q: %s is not of the form KEY=value", name, quote(entry, 64))
		}
	}
	return nil
}

// checkSignalName checks the form of a signal name, not whether the agent
// supports it, because RFC 4254 also allows names like "NAME@example.com".
func checkSignalName(name string) error {
	if name == "" {
		return fmt.Errorf("field %q is empty", "signal")
	}
	if len(name) > MaxSignalNameSize {
		return fmt.Errorf("field %q: %d bytes, over the %d-byte limit", "signal", len(name), MaxSignalNameSize)
	}
	for _, r := range name {
		ok := r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("@.+_-", r)
		if !ok {
			return fmt.Errorf("field %q: %s contains a character other than letters, digits and @.+_-", "signal", quote(name, MaxSignalNameSize))
		}
	}
	return nil
}

func isControl(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0)
}

// quote returns s quoted for an error message, cut to max bytes so that a
// peer's value cannot make the message long.
func quote(s string, max int) string {
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}
