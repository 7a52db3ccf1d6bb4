//go:build !linux && !darwin

package krun

// libraryCandidates are the names Load passes to dlopen. libkrun
// supports only Linux and macOS, so on other systems Load is expected to fail
// unless THROWAWAYSH_LIBKRUN names a library.
var libraryCandidates = []string{"libkrun.so.1", "libkrun.so"}
