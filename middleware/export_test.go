package middleware

import "time"

// SetTimeoutGrace sets how long the Timeout middleware waits for a session
// to end after it killed the VM, until the test ends.
func SetTimeoutGrace(d time.Duration) (restore func()) {
	previous := timeoutGrace
	timeoutGrace = d
	return func() { timeoutGrace = previous }
}
