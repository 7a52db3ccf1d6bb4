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
	// ExitTimeout means the server ended the session because it ran longer
	// than the session timeout or saw no input and no output for the idle
	// timeout (see Timeout). The VM was killed.
	ExitTimeout = 250
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
// that a Tracker stopped ends with ExitShutdown and the Tracker's message,
// and one that the Timeout middleware ended gets its message and
// ExitTimeout, instead of r, which is then only the killed VM's status.
func finish(s ssh.Session, r Result) {
	expired, ok := claimEnd(s.Context())
	if !ok {
		return
	}
	if message, stopped := stopMessage(s.Context()); stopped {
		writeUserMessage(s, message)
		sendResult(s, Result{Status: ExitShutdown, Err: errStopped})
		return
	}
	if expired != nil {
		endTimedOut(s, expired)
		return
	}
	sendResult(s, r)
}

// EndSession ends session s with status. It is for a handler of an
// embedding app, placed between VM and Route, that decides that the
// session must not go on. The client gets "throwawaysh: " and userMessage
// as one line on stderr, then the status, end of file and close, and the
// session's log gets err. Do not call Route's handler after it. userMessage must not
// reveal host details; status should be the command's or one of the
// reserved Exit statuses.
func EndSession(s ssh.Session, status int, err error, userMessage string) {
	fail(s, status, err, userMessage)
}

// fail sends the client the reason the session failed, in one line on stderr, and
// ends it with status. The log line for the same failure carries err. A
// session that a Tracker stopped or the Timeout middleware ended reports
// that instead, because its failure is the expected result of killing the
// VM; fail then logs it at info level.
func fail(s ssh.Session, status int, err error, userMessage string) {
	logger := Logger(s.Context())
	expired, ok := claimEnd(s.Context())
	if !ok {
		return
	}
	if message, stopped := stopMessage(s.Context()); stopped {
		logger.Info("session stopped", "err", err)
		writeUserMessage(s, message)
		sendResult(s, Result{Status: ExitShutdown, Err: errStopped})
		return
	}
	if expired != nil {
		logger.Info("session timed out", "err", err)
		endTimedOut(s, expired)
		return
	}
	if status == ExitCapacity {
		// The client's own doing, which it can repeat without limit.
		logger.Warn("session rejected", "status", status, "err", err)
	} else {
		logger.Error("session failed", "status", status, "err", err)
	}
	writeUserMessage(s, userMessage)
	sendResult(s, Result{Status: status, Err: err})
}

// claimEnd marks the session as ending. It returns ok=false when the
// Timeout middleware has already sent the session's status, so nothing
// more may be sent, and the timeout's expiry when one has fired.
func claimEnd(ctx ssh.Context) (expired *timeoutExpiry, ok bool) {
	watch, found := ctx.Value(timeoutKey).(*timeoutWatch)
	if !found {
		return nil, true
	}
	return watch.claimEnd()
}

// endTimedOut writes the message of the timeout that ended the session
// and sends ExitTimeout.
func endTimedOut(s ssh.Session, expired *timeoutExpiry) {
	writeUserMessage(s, expired.message)
	sendResult(s, Result{Status: ExitTimeout, Err: expired.err})
}

// sendResult records r and sends it in the order that finish describes.
func sendResult(s ssh.Session, r Result) {
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
	observeCommandExited(s.Context())
}

// writeUserMessage writes "throwawaysh: " and message to the client's
// stderr as one line.
func writeUserMessage(s ssh.Session, message string) {
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
