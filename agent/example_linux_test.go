package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
)

func ExampleConnect() {
	// The host listens before the VM starts; the agent in the VM dials in.
	// Here a goroutine dials instead of the VM, to show the calls.
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	ln, err := Listen(filepath.Join(dir, "agent.sock"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	go func() {
		conn, err := net.Dial("unix", ln.Addr().String())
		if err == nil {
			_ = Serve(context.Background(), conn, ServeOptions{Shell: "/bin/sh"})
		}
	}()

	conn, err := ln.Accept()
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	client, err := Connect(ctx, conn, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	proc, err := client.Start(ctx, StartRequest{Command: "echo hello; exit 3", TTY: true, Term: "xterm", Rows: 24, Cols: 80})
	if err != nil {
		fmt.Println(err)
		return
	}
	output, _ := io.ReadAll(proc) // all output, then end of file
	status, err := proc.Wait()
	fmt.Printf("%q %d %v\n", output, status.Code, err)
	// Output: "hello\r\n" 3 <nil>
}
