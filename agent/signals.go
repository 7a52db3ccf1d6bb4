package agent

// linuxSignals maps signal names without "SIG" to their Linux numbers. The
// numbers are written out instead of taken from the syscall package because
// exit statuses carry guest (Linux) numbers even when the host runs another
// OS, where syscall's numbers differ.
var linuxSignals = map[string]int{
	"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7,
	"FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13,
	"ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19,
	"TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25,
	"VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "PWR": 30, "SYS": 31,
}

// rfc4254Signals are the signal names that RFC 4254 section 6.10 defines,
// the only ones a signal message may carry.
var rfc4254Signals = map[string]bool{
	"ABRT": true, "ALRM": true, "FPE": true, "HUP": true, "ILL": true,
	"INT": true, "KILL": true, "PIPE": true, "QUIT": true, "SEGV": true,
	"TERM": true, "USR1": true, "USR2": true,
}

// SupportedSignal reports whether name, without "SIG", is a signal that a
// signal message may carry: one of the 13 that RFC 4254 section 6.10 names
// (ABRT, ALRM, FPE, HUP, ILL, INT, KILL, PIPE, QUIT, SEGV, TERM, USR1, USR2).
func SupportedSignal(name string) bool {
	return rfc4254Signals[name]
}

// signalNumber returns the Linux number of the signal name without "SIG".
func signalNumber(name string) (int, bool) {
	n, ok := linuxSignals[name]
	return n, ok
}

// signalName returns the name without "SIG" of Linux signal number n, or ""
// for numbers without a name here (real-time signals).
func signalName(n int) string {
	for name, number := range linuxSignals {
		if number == n {
			return name
		}
	}
	return ""
}
