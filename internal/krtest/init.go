package krtest

import (
	"fmt"
	"os"
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

func initFailed(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "init: "+format+"\n", args...)
	return initSetupFailed
}
