package middleware

import "charm.land/ssh"

// Mode is the way a session is connected to its VM.
type Mode int

const (
	// ModeConsole runs the command (or a shell reading stdin) as the VM's
	// workload, with stdin, stdout and stderr on the VM console.
	ModeConsole Mode = iota
	// ModePTY runs the guest agent as the VM's workload; it opens a PTY in
	// the guest and runs the shell or command there.
	ModePTY
	// ModeSubsystem runs the guest agent as the VM's workload, as ModePTY
	// does, and the agent serves the session's subsystem (only "sftp")
	// itself, without a PTY.
	ModeSubsystem
)

// String returns the mode's name for logs: "console", "pty" or
// "subsystem".
func (m Mode) String() string {
	switch m {
	case ModeConsole:
		return "console"
	case ModePTY:
		return "pty"
	case ModeSubsystem:
		return "subsystem"
	default:
		return "unknown"
	}
}

// ModeOf returns how s must be connected: ModeSubsystem when the client
// requested a subsystem, ModePTY when it requested a PTY, ModeConsole
// otherwise.
func ModeOf(s ssh.Session) Mode {
	if s.Subsystem() != "" {
		return ModeSubsystem
	}
	if _, ok := PTYRequest(s); ok {
		return ModePTY
	}
	return ModeConsole
}
