package middleware

import (
	"sync"

	"charm.land/ssh"
)

var ptyRequestsKey = &contextKey{"throwawaysh-pty-requests"}

// ptyRequests holds the PTY state of each session of one connection, keyed
// by the session the SSH library created.
type ptyRequests struct {
	mu    sync.Mutex
	bySes map[ssh.Session]*ptyState
}

// ptyState is one session's pty-req and its latest window size.
type ptyState struct {
	req ssh.Pty

	mu     sync.Mutex
	window ssh.Window
	// changed has room for one signal: a reader that finds it set reads
	// window, which holds the newest size, so signals can coalesce.
	changed chan struct{}
	// closed is closed when the channel's requests end.
	closed chan struct{}
}

// watchWindows reads every window-change as the SSH library delivers it.
// The library hands them over on a channel with room for one and blocks
// the session's whole request loop until someone reads. Reading from the
// moment of pty-req keeps a client that resizes before the shell starts,
// or a session that fails early, from wedging the connection.
func (p *ptyState) watchWindows(windows <-chan ssh.Window) {
	defer close(p.closed)
	for w := range windows {
		p.mu.Lock()
		p.window = w
		p.mu.Unlock()
		select {
		case p.changed <- struct{}{}:
		default:
		}
	}
}

func (p *ptyState) latestWindow() ssh.Window {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.window
}

// RawPTY returns a server option that accepts pty-req without the SSH
// library's PTY emulation. The emulation rewrites every "\n" the handler
// writes into "\r\n", which corrupts the output of a real terminal in the
// guest. With RawPTY the guest's own line discipline decides. Route needs
// it for PTY sessions and fails them when the server emulates PTYs.
//
// With RawPTY, Session.Pty reports no PTY; use PTYRequest instead.
func RawPTY() ssh.Option {
	return func(srv *ssh.Server) error {
		srv.PtyHandler = func(ctx ssh.Context, s ssh.Session, req ssh.Pty) (func() error, error) {
			ctx.Lock()
			reqs, ok := ctx.Value(ptyRequestsKey).(*ptyRequests)
			if !ok {
				reqs = &ptyRequests{bySes: map[ssh.Session]*ptyState{}}
				ctx.SetValue(ptyRequestsKey, reqs)
			}
			ctx.Unlock()

			state := &ptyState{req: req, window: req.Window, changed: make(chan struct{}, 1), closed: make(chan struct{})}
			// The library has made the window channel, with the pty-req's
			// own size in it, before it calls this handler.
			_, windows, _ := s.Pty()
			go state.watchWindows(windows)

			reqs.mu.Lock()
			reqs.bySes[s] = state
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

// ptyStateOf returns the state RawPTY recorded for s, or nil.
func ptyStateOf(s ssh.Session) *ptyState {
	reqs, ok := s.Context().Value(ptyRequestsKey).(*ptyRequests)
	if !ok {
		return nil
	}
	reqs.mu.Lock()
	defer reqs.mu.Unlock()
	return reqs.bySes[unwrapSession(s)]
}

// PTYRequest returns the pty-req the client sent for s, as recorded by
// RawPTY, and whether there was one. Without RawPTY it falls back to
// Session.Pty.
func PTYRequest(s ssh.Session) (ssh.Pty, bool) {
	if state := ptyStateOf(s); state != nil {
		return state.req, true
	}
	req, _, ok := s.Pty()
	return req, ok
}
