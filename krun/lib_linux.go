package krun

// libraryCandidates are the names Load passes to dlopen, in order.
// libkrun.so.1 is the runtime name that distribution packages install, while
// libkrun.so usually exists only with the development package.
var libraryCandidates = []string{"libkrun.so.1", "libkrun.so"}
