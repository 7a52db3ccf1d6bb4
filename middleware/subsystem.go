package middleware

import (
	"context"
	"fmt"
	"time"

	"charm.land/ssh"
	"charm.land/wish/v2"

	"github.com/throwawaysh/throwawaysh/agent"
)

// SFTP returns a server option that serves the "sftp" subsystem through
// mw, which it composes as wish.WithMiddleware does. Pass the same
// middlewares in the same order as to wish.WithMiddleware, so that
// subsystem sessions get the same logging and VM: the guest agent then
// serves SFTP inside the session's VM. The SSH library sends subsystem
// requests to SubsystemHandlers and never to the middleware chain, which
// is why the chain must be given twice.
func SFTP(mw ...wish.Middleware) ssh.Option {
	return func(srv *ssh.Server) error {
		handler := func(ssh.Session) {}
		for _, m := range mw {
			handler = m(handler)
		}
		if srv.SubsystemHandlers == nil {
			srv.SubsystemHandlers = map[string]ssh.SubsystemHandler{}
		}
		srv.SubsystemHandlers[agent.SubsystemSFTP] = ssh.SubsystemHandler(handler)
		return nil
	}
}

// routeSubsystem connects the channel to a subsystem that the guest agent
// serves. Unlike routePTY it forwards no window changes or signals, because
// a subsystem has no terminal and no process of its own.
func routeSubsystem(s ssh.Session, guest *Guest) {
	ctx := s.Context()
	logger := Logger(ctx)
	defer killOnDisconnect(s, guest)()

	name := s.Subsystem()
	if name != agent.SubsystemSFTP {
		fail(s, ExitVMFailed, fmt.Errorf("route: subsystem %q is not supported", name),
			fmt.Sprintf("the subsystem %q is not supported; only %q is", name, agent.SubsystemSFTP))
		return
	}
	client, ok := connectAgent(s, guest, "the VM did not start its SFTP server; try again, and tell the operator if it keeps failing")
	if !ok {
		return
	}

	// An agent that never replies to start must not hold the session open.
	startCtx, cancelStart := context.WithTimeout(ctx, agentStartTimeout)
	defer cancelStart()
	proc, err := client.Start(startCtx, agent.StartRequest{Subsystem: name})
	if err != nil && clientGone(s, -1) {
		return
	}
	if err != nil {
		fail(s, ExitAgentLost, fmt.Errorf("start guest subsystem %s: %w", name, err), "the guest agent could not start the SFTP server; try again, and tell the operator if it keeps failing")
		return
	}
	logger.Info("guest ready", "signal", "agent connected", "duration", time.Since(guest.Booted))
	observeGuestReady(ctx)

	relayProcess(s, proc, "the connection to the guest agent was lost before the SFTP session finished")
}
