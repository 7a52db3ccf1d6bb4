//go:build !linux

package agent

import (
	"context"
	"errors"
	"net"
)

// Serve runs the guest side of the protocol. The guest is always Linux, so
// on other systems it only closes conn and returns an error.
func Serve(ctx context.Context, conn net.Conn, opts ServeOptions) error {
	_ = conn.Close()
	return errors.New("agent: serve: the guest agent runs only on Linux")
}

// RunConsole runs the console command and reports its exit. The guest is
// always Linux, so on other systems it only returns an error.
func RunConsole(ctx context.Context, argv []string, dial func(context.Context) (net.Conn, error), opts ConsoleOptions) (ExitStatus, error) {
	return ExitStatus{Code: 127}, errors.New("agent: run console command: the guest agent runs only on Linux")
}
