package krun

// CheckKVM returns nil when this host can run libkrun guests: /dev/kvm opens
// read-write and is not provided by kvm_pvm, which cannot boot libkrun's
// guest kernel. Otherwise the error wraps ErrKVMUnusable and explains what
// to fix. A nil result does not prove that a guest boots: libkrunfw may still
// be missing, and nested virtualization may still fail at run time.
func CheckKVM() error {
	return checkKVMDevice("/dev/kvm", "/sys/module/kvm_pvm")
}
