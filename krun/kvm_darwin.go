package krun

// CheckKVM returns nil: on macOS libkrun uses Hypervisor.framework, which
// needs no device. The binary that boots VMs must still be signed with the
// com.apple.security.hypervisor entitlement, which this does not check.
func CheckKVM() error { return nil }
