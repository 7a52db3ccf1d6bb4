package krun

import (
	"slices"
	"testing"

	"github.com/throwawaysh/throwawaysh/internal/sandbox"
)

func TestJailConfigFromSpec(t *testing.T) {
	spec := Spec{
		Root:       "/srv/rootfs",
		VsockPorts: []VsockPort{{Port: 7022, Path: "/run/t/s1/agent.sock"}, {Port: 9, Path: "/run/t/s1/other.sock"}},
	}
	cfg := jailConfig(spec)
	if cfg.Root != spec.Root {
		t.Errorf("root = %q, want the spec's", cfg.Root)
	}
	if cfg.Network {
		t.Error("network on for a spec without network")
	}
	if cfg.DiskMiB != DefaultDiskMiB {
		t.Errorf("DiskMiB = %d, want the default %d for a zero Spec.DiskMiB", cfg.DiskMiB, DefaultDiskMiB)
	}
	if want := []string{"/run/t/s1/agent.sock", "/run/t/s1/other.sock"}; !slices.Equal(cfg.Sockets, want) {
		t.Errorf("sockets = %v, want %v", cfg.Sockets, want)
	}
	if !slices.Equal(cfg.Devices, []string{"/dev/kvm", "/dev/null"}) {
		t.Errorf("devices = %v, want only /dev/kvm and /dev/null", cfg.Devices)
	}
	spec.DiskMiB = 64
	if got := jailConfig(spec).DiskMiB; got != 64 {
		t.Errorf("DiskMiB = %d, want the spec's 64", got)
	}
}

func TestJailSpecUsesJailPaths(t *testing.T) {
	spec := Spec{
		Root:       "/srv/rootfs",
		VsockPorts: []VsockPort{{Port: 7022, Path: "/run/t/agent.sock"}},
	}
	jail := &sandbox.Jail{Root: "/root", Sockets: []string{"/sock/0.sock"}}
	got := jailSpec(spec, jail)
	if got.Root != "/root" {
		t.Errorf("root = %q, want the jail's /root", got.Root)
	}
	if got.VsockPorts[0] != (VsockPort{Port: 7022, Path: "/sock/0.sock"}) {
		t.Errorf("vsock port = %+v, want port 7022 at /sock/0.sock", got.VsockPorts[0])
	}
	if spec.VsockPorts[0].Path != "/run/t/agent.sock" {
		t.Errorf("jailSpec changed the caller's spec: %+v", spec.VsockPorts[0])
	}
}
