// Package middleware runs SSH sessions in throwaway libkrun microVMs.
//
// It provides Wish middlewares and server options that compose into a
// complete service or can be used one by one in another Wish app:
//
//   - PasswordAuth, PublicKeyAuth (with LoadAuthorizedKeys) and
//     AllowPasswordless: authentication (server options).
//   - TrackAuthFailures: logs failed authentication attempts and slows
//     down repeated ones from one address (server option).
//   - FilterRequests: passes only allowed env variables to the guest and
//     rejects agent and X11 forwarding (server option).
//   - RawPTY: records pty-req without the SSH library's PTY emulation, so
//     the guest's terminal output reaches the client unchanged. It is a
//     server option, and Route needs it for PTY sessions.
//   - Logging: gives each session an id and a logger, and logs its start
//     and end.
//   - Limit: rejects a session over a limit on active sessions in all,
//     per client address or per connection, before its VM boots.
//   - VM: boots one microVM per session and destroys it when the session
//     ends.
//   - Timeout: ends a session that runs too long or is idle too long and
//     kills its VM.
//   - Route: connects the session to the VM, through the VM console when
//     there is no PTY and through the guest agent when there is one or
//     when the session is an SFTP subsystem.
//   - SFTP: serves the "sftp" subsystem through the same middlewares
//     (server option), because subsystem requests bypass the chain.
//   - LimitStartups: caps the connections that have not finished
//     authentication, in all and per client (server option).
//   - Tracker: records the live sessions, so that a stopping server can
//     end each with a message and ExitShutdown.
//   - Keepalive: sends OpenSSH keepalives and closes connections whose
//     client stopped replying (server option).
//   - QuickAck: acknowledges small TCP reads at once, which saves OpenSSH
//     clients up to 40 ms once or twice per connection (server option).
//
// In wish.WithMiddleware the last middleware listed runs first, so a full
// chain is listed innermost first:
//
//	wish.WithMiddleware(
//		middleware.Route(),
//		middleware.Timeout(middleware.WithIdleTimeout(15*time.Minute)),
//		middleware.VM(launcher, middleware.WithRootfs(dir)),
//		middleware.Limit(middleware.WithMaxSessions(32)),
//		middleware.Logging(logger),
//	)
//
// Middlewares pass state through typed keys in the session's context. Each
// session gets a context of its own (see SessionContext), because the SSH
// library's context is shared by every session of a connection. Counts
// and settings live in the values that Limit, Tracker, FailureTracker and
// the options return, so several servers in one process share none. The
// only package variable a caller can change is DefaultAcceptEnv, which
// FilterRequests copies.
//
// An app adds its own middlewares between VM and Route: GuestFrom returns
// the session's VM there, and Guest.Agent the guest agent that runs more
// processes in it. WithSettingsFunc chooses the rootfs and resources of
// each session's VM, for example by user name. The examples/peruser
// directory of the repository holds a complete app built this way.
package middleware
