package middleware

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/throwawaysh/throwawaysh/agent"
)

// ErrNoAgent is wrapped by the error of Guest.Agent in a console session.
// There the VM's workload is the user's command, and an agent, if the
// rootfs has one, only reports how that command ended.
var ErrNoAgent = errors.New("middleware: no guest agent serves this session")

// errAgentClosed is the error of Guest.Agent after the VM middleware has
// ended the session.
var errAgentClosed = errors.New("middleware: the session has ended and its guest agent connection is closed")

// agentConnection is a session's connection to its guest agent, made once
// by the first call of Guest.Agent.
type agentConnection struct {
	once                  sync.Once
	client                *agent.Client
	err                   error
	stopCloseOnDisconnect func() bool
}

// agentConnectError is a failure of the protocol handshake with an agent
// that did connect, which Route reports with ExitAgentLost.
type agentConnectError struct{ err error }

func (e *agentConnectError) Error() string { return "connect to guest agent: " + e.err.Error() }
func (e *agentConnectError) Unwrap() error { return e.err }

// Agent returns the client of the session's guest agent, through which a
// middleware between VM and Route can run more processes in the session's
// VM with agent.Client.Start, next to the one that Route starts. It works
// in ModePTY and ModeSubsystem sessions. In ModeConsole it returns an error
// that wraps ErrNoAgent.
//
// The first call waits for the agent to connect and runs the protocol
// handshake. It gives up when the boot timeout (WithBootTimeout) passes,
// the VM ends or the client disconnects. Later calls, Route's included,
// return the same client or the same error, so a middleware that ignores
// the error can still call the next handler and let Route report it to
// the client.
//
// The VM middleware closes the client when the handlers after it return,
// and a client disconnect closes it earlier. Processes started through it
// end with the VM. The agent runs every process in a PTY (StartRequest.TTY
// must be true), so a process's stdout and stderr arrive merged, with
// "\r\n" line ends, and at most 16 processes run at a time per session,
// Route's included.
func (g *Guest) Agent() (*agent.Client, error) {
	if g.Mode == ModeConsole {
		return nil, fmt.Errorf("%w: console sessions run the command as the VM's workload; only PTY and SFTP sessions have an agent that starts processes", ErrNoAgent)
	}
	if g.ctx == nil || g.agentListener == nil {
		return nil, fmt.Errorf("%w: the Guest was not created by the VM middleware", ErrNoAgent)
	}
	g.agentConn.once.Do(g.connectAgent)
	return g.agentConn.client, g.agentConn.err
}

// connectAgent waits for the guest agent to connect and runs the protocol
// handshake, storing the client or the error in g.agentConn.
func (g *Guest) connectAgent() {
	ctx := g.ctx
	logger := Logger(ctx)
	vm := g.VM

	// The agent writes its own log to the VM console. It goes to the
	// server's log, never to the client.
	_ = vm.Stdin().Close()
	consoleDone := logConsole(vm, logger)
	exited := make(chan vmExit, 1)
	go func() {
		<-consoleDone
		status, err := vm.Wait()
		exited <- vmExit{status: status, err: err}
	}()

	conn, err := acceptAgent(ctx, g, exited)
	if err != nil {
		g.agentConn.err = err
		return
	}
	client, err := agent.Connect(ctx, conn, logger)
	if err != nil {
		_ = conn.Close()
		g.agentConn.err = &agentConnectError{err: err}
		return
	}
	g.agentConn.client = client
	g.trackAgent(client)
	// A client that goes away ends every call on the agent at once, even
	// if the VM's socket stays open a moment longer.
	g.agentConn.stopCloseOnDisconnect = context.AfterFunc(ctx, func() { _ = client.Close() })
}

// closeAgent closes the agent client, if Agent made one, and makes later
// calls of Agent fail. It waits for a connection attempt in progress, which
// ends soon once the VM has been killed.
func (g *Guest) closeAgent() {
	g.agentConn.once.Do(func() { g.agentConn.err = errAgentClosed })
	if g.agentConn.client != nil {
		g.agentConn.stopCloseOnDisconnect()
		_ = g.agentConn.client.Close()
	}
}
