package krun

// libraryCandidates are the names Load passes to dlopen, in order.
// Homebrew installs into /opt/homebrew/lib on Apple silicon, which dlopen
// does not search for a bare name, and into /usr/local/lib on Intel. Both are
// also tried by full path.
var libraryCandidates = []string{
	"libkrun.1.dylib",
	"libkrun.dylib",
	"/opt/homebrew/lib/libkrun.1.dylib",
	"/usr/local/lib/libkrun.1.dylib",
}
