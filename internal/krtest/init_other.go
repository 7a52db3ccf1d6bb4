//go:build !linux

package krtest

import "runtime"

func runInit() int {
	return initFailed("the stand-in init needs Linux namespaces, not %s", runtime.GOOS)
}
