package middleware

import (
	"errors"
	"fmt"

	"charm.land/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// Exit statuses that throwawaysh itself produces, so a script can tell a
// failure of the service from its own command's status. They sit just
// below 255, which the OpenSSH client uses for its own errors. A guest
// command can exit with these values too, so the message on stderr, which
// always starts with "throwawaysh:", marks a failure of the service.
const (
	// ExitShutdown means the server is shutting down: it killed the
	// session's VM before the command finished, or did not start one. The
	// client gets the reason on stderr first. Trying again after the
	// server is back can succeed.
	ExitShutdown = 249
	// ExitCapacity means the server refused the session because a limit
	// was reached: sessions in all, per client address or per connection.
	// Trying again later can succeed.
	ExitCapacity = 251
	// ExitAgentLost means the guest agent disconnected or broke the
	// protocol before it reported the command's exit status.
	ExitAgentLost = 252
	// ExitVMFailed means the VM could not be started or its workload could
	// not run: libkrun failed, the guest agent is missing from the rootfs,
	// or the guest did not become ready in time.
	ExitVMFailed = 253
)

// Result is the outcome of a session. Route stores it in the session context
// before it closes the channel, and Logging reads it for "session end".
type Result struct {
	// Status is the exit status sent to the client.
	Status int
	// Signal is the name of the signal that killed the command ("TERM"),
	// when it died of one; the client then gets exit-signal.
	Signal string
	// Err is the failure of throwawaysh itself, if any.
	Err error
	// ClientGone is true when the client's connection ended before the
	// session did, so no status reached it. Status is then the VM's, or -1.
	ClientGone bool
}

// SessionResult returns the result Route stored for the session, and
// whether there is one.
func SessionResult(ctx ssh.Context) (Result, bool) {
	r, ok := ctx.Value(resultKey).(*Result)
	if !ok {
		return Result{}, false
	}
	return *r, true
}

// errStopped is the Result.Err of a session that a Tracker stopped.
var errStopped = errors.New("session stopped by server shutdown")

// finish records r, sends the exit status (or exit-signal), then end of
// file and close, in the order OpenSSH's sshd uses: some clients report
// success for a failing command when end of file comes first. A session
// that a Tracker stopped ends with ExitShutdown and the Tracker's message
// instead of r, whatever ended its VM.
func finish(s ssh.Session, r Result) {
	if message, stopped := stopMessage(s.Context()); stopped {
		writeUserLine(s, message)
		r = Result{Status: ExitShutdown, Err: errStopped}
	}
	s.Context().SetValue(resultKey, &r)

	if r.Signal != "" {
		msg := struct {
			Signal     string
			CoreDumped bool
			Error      string
			Lang       string
		}{Signal: r.Signal}
		if _, err := s.SendRequest("exit-signal", false, gossh.Marshal(&msg)); err != nil {
			Logger(s.Context()).Debug("send exit-signal", "err", err)
		}
	} else {
		msg := struct{ Status uint32 }{uint32(r.Status)}
		if _, err := s.SendRequest("exit-status", false, gossh.Marshal(&msg)); err != nil {
			Logger(s.Context()).Debug("send exit-status", "err", err)
		}
	}
	_ = s.CloseWrite()
	_ = s.Close()
}

// fail sends the client the reason the session failed, in one line on stderr, and
// ends it with status. The log line for the same failure carries err.
//
// In a session that a Tracker stopped, the failure is the expected result
// of killing the VM, so fail logs it at info level and leaves the message
// to finish.
func fail(s ssh.Session, status int, err error, userMessage string) {
	logger := Logger(s.Context())
	if _, stopped := stopMessage(s.Context()); stopped {
		logger.Info("session stopped", "err", err)
		finish(s, Result{Status: status, Err: err})
		return
	}
	logger.Error("session failed", "status", status, "err", err)
	writeUserLine(s, userMessage)
	finish(s, Result{Status: status, Err: err})
}

// writeUserLine writes "throwawaysh: " and message as one line on the
// session's stderr.
func writeUserLine(s ssh.Session, message string) {
	newline := "\n"
	if ModeOf(s) == ModePTY {
		// The client's terminal is in raw mode; a bare "\n" would not
		// return the cursor to the start of the line.
		newline = "\r\n"
	}
	if _, err := fmt.Fprintf(s.Stderr(), "throwawaysh: %s%s", message, newline); err != nil {
		Logger(s.Context()).Debug("write message to client", "err", err)
	}
}
