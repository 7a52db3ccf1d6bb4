package middleware

import (
	"sync"

	"charm.land/ssh"
)

var ptyRequestsKey = &contextKey{"throwawaysh-pty-requests"}

// ptyRequests holds the pty-req of each session of one connection, keyed
// by the session the SSH library created.
type ptyRequests struct {
	mu    sync.Mutex
	bySes map[ssh.Session]ssh.Pty
}

// RawPTY returns a server option that accepts pty-req without the SSH
// library's PTY emulation. The emulation rewrites every "\n" the handler
// writes into "\r\n", which corrupts the output of a real terminal in the
// guest. With RawPTY the guest's own line discipline decides. Route needs
// it for PTY sessions and fails them when the server emulates PTYs.
//
// With RawPTY, Session.Pty reports no PTY; use PTYRequest instead.
// Window changes still arrive on the channel that Session.Pty returns.
func RawPTY() ssh.Option {
	return func(srv *ssh.Server) error {
		srv.PtyHandler = func(ctx ssh.Context, s ssh.Session, req ssh.Pty) (func() error, error) {
			ctx.Lock()
			reqs, ok := ctx.Value(ptyRequestsKey).(*ptyRequests)
			if !ok {
				reqs = &ptyRequests{bySes: map[ssh.Session]ssh.Pty{}}
				ctx.SetValue(ptyRequestsKey, reqs)
			}
			ctx.Unlock()

			reqs.mu.Lock()
			reqs.bySes[s] = req
			reqs.mu.Unlock()

			// The library calls this when the channel's requests end, so the
			// entry lives exactly as long as the session.
			forget := func() error {
				reqs.mu.Lock()
				delete(reqs.bySes, s)
				reqs.mu.Unlock()
				return nil
			}
			return forget, nil
		}
		return nil
	}
}

// PTYRequest returns the pty-req the client sent for s, as recorded by
// RawPTY, and whether there was one. Without RawPTY it falls back to
// Session.Pty.
func PTYRequest(s ssh.Session) (ssh.Pty, bool) {
	raw := unwrapSession(s)
	if reqs, ok := s.Context().Value(ptyRequestsKey).(*ptyRequests); ok {
		reqs.mu.Lock()
		req, found := reqs.bySes[raw]
		reqs.mu.Unlock()
		if found {
			return req, true
		}
	}
	req, _, ok := s.Pty()
	return req, ok
}
