package middleware

import "time"

// WithTimeoutGrace sets how long the Timeout middleware waits for a session
// to end after it killed the VM, in place of defaultTimeoutGrace.
func WithTimeoutGrace(d time.Duration) TimeoutOption {
	return func(c *timeoutConfig) { c.grace = d }
}
