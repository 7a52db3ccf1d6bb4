package agent

import (
	"errors"
	"log/slog"
	"os"
	"time"
)

// ConsoleOptions configures RunConsole. The zero value is ready to use.
type ConsoleOptions struct {
	// Logger receives the agent's own log. nil discards it. It must not
	// write to the command's stdout or stderr, which are the user's.
	Logger *slog.Logger
	// Software names the agent in its hello message. The default is
	// "throwawaysh-guest-agent" and the build's version.
	Software string
	// Signals carries the signals to forward to the command, such as the
	// SIGINT that libkrun passes to the workload. nil forwards none.
	Signals <-chan os.Signal
	// Stdin, Stdout and Stderr are the command's. nil means the agent's
	// own, which the command inherits without any copy by the agent.
	Stdin, Stdout, Stderr *os.File
	// ReportTimeout bounds the wait, after the command ended, for the
	// connection and for the host to take the report. The default is 5
	// seconds.
	ReportTimeout time.Duration
}

// ErrConsoleStart is wrapped by the error of RunConsole when the command
// could not start, so that nothing ran and nothing was reported.
var ErrConsoleStart = errors.New("console command could not start")
