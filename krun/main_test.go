package krun

import (
	"os"
	"testing"
)

// TestMain lets this test binary serve as the VM process of the
// KrunLauncher tests, which start it again with the child marker set.
func TestMain(m *testing.M) {
	RunChildIfRequested()
	os.Exit(m.Run())
}
