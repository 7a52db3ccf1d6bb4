package krtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/throwawaysh/throwawaysh/krun"
)

// Exit statuses of the stand-in init, the same as libkrun's guest init.
const (
	initSetupFailed   = 125
	initNotExecutable = 126
	initNotFound      = 127
)

// RunInitIfRequested acts as the guest init and exits when the test binary
// was started by Launcher; otherwise it returns at once. Call it first in
// TestMain.
func RunInitIfRequested() {
	if os.Getenv(initMarker) != "1" {
		return
	}
	os.Exit(runInit())
}

func runInit() int {
	data, err := io.ReadAll(io.LimitReader(os.NewFile(3, "spec"), 64<<20))
	if err != nil {
		return initFailed("read spec: %v", err)
	}
	var spec krun.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return initFailed("decode spec: %v", err)
	}

	// libkrun's VMM process ends at once on SIGTERM and SIGHUP and passes
	// SIGINT to the workload. As PID 1 of its namespace, this process
	// receives only the signals it handles, so it must handle them all.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)

	hostExec := filepath.Join(spec.Root, spec.Exec)
	info, err := os.Stat(hostExec)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(os.Stderr, "init: %s: not found\n", spec.Exec)
		return initNotFound
	case err != nil:
		return initFailed("stat %s: %v", spec.Exec, err)
	case info.IsDir() || info.Mode().Perm()&0o111 == 0:
		fmt.Fprintf(os.Stderr, "init: %s: not executable\n", spec.Exec)
		return initNotExecutable
	}

	cmd := exec.Command(hostExec, guestArgs(spec)...)
	cmd.Args[0] = spec.Exec
	cmd.Env = slices.Clone(spec.Env)
	cmd.Dir = filepath.Join(spec.Root, spec.Workdir)
	if _, err := os.Stat(cmd.Dir); err != nil {
		cmd.Dir = "/"
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "init: %s: %v\n", spec.Exec, err)
		return initNotExecutable
	}

	exited := make(chan int, 1)
	go func() {
		_ = cmd.Wait()
		exited <- workloadStatus(cmd.ProcessState)
	}()
	for {
		select {
		case status := <-exited:
			return status
		case sig := <-signals:
			if sig == syscall.SIGINT {
				_ = cmd.Process.Signal(sig)
				continue
			}
			return 128 + int(sig.(syscall.Signal))
		}
	}
}

// guestArgs returns the workload's arguments with libkrun's host-side
// features emulated. The guest paths of Spec.Files become their host paths
// in the directory named by filesEnv, where Launcher wrote them, and the
// guest agent is pointed at the unix socket of its vsock port.
func guestArgs(spec krun.Spec) []string {
	args := slices.Clone(spec.Args)
	filesDir := os.Getenv(filesEnv)
	for name := range spec.Files {
		for i := range args {
			args[i] = strings.ReplaceAll(args[i], "/"+name, filepath.Join(filesDir, name))
		}
	}
	if i := slices.Index(args, "--vsock-port"); i >= 0 && i+1 < len(args) {
		for _, port := range spec.VsockPorts {
			if fmt.Sprint(port.Port) == args[i+1] {
				// Flags end at "--", after which the agent's --exec
				// command follows.
				end := slices.Index(args, "--")
				if end < 0 {
					end = len(args)
				}
				args = slices.Insert(args, end, "--connect", "unix:"+port.Path)
			}
		}
	}
	return args
}

func workloadStatus(state *os.ProcessState) int {
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return state.ExitCode()
}

func initFailed(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "init: "+format+"\n", args...)
	return initSetupFailed
}
