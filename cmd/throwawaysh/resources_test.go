package main

import (
	"sync"
	"testing"

	"github.com/throwawaysh/throwawaysh/internal/krtest"
	"github.com/throwawaysh/throwawaysh/krun"
)

// The VM flags reach the spec that the launcher gets, for console and PTY
// sessions alike.
func TestVMFlagsReachSpec(t *testing.T) {
	tests := []struct {
		name         string
		cpus, memory int
		network      string
		wantNetwork  bool
	}{
		{"defaults", krun.DefaultCPUs, krun.DefaultMemoryMiB, "off", false},
		{"set", 3, 512, "tsi", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var specs []krun.Spec
			launcher := &krtest.Launcher{Started: func(spec krun.Spec) {
				mu.Lock()
				defer mu.Unlock()
				specs = append(specs, spec)
			}}
			cfg := testConfig(t, krtestRootfs(t))
			cfg.VMCPUs, cfg.VMMemoryMiB, cfg.GuestNetwork = tt.cpus, tt.memory, tt.network
			srv := startServer(t, cfg, launcher)

			for _, options := range [][]string{nil, {"-tt"}} {
				got := srv.runSSH(t, sshCall{options: options, command: "true"})
				if got.status != 0 {
					t.Fatalf("ssh %q: status %d, stderr %q", options, got.status, got.stderr)
				}
			}

			mu.Lock()
			defer mu.Unlock()
			if len(specs) != 2 {
				t.Fatalf("launcher started %d VMs, want 2", len(specs))
			}
			for i, spec := range specs {
				if spec.CPUs != tt.cpus {
					t.Errorf("VM %d: CPUs = %d, want %d", i, spec.CPUs, tt.cpus)
				}
				if spec.MemoryMiB != tt.memory {
					t.Errorf("VM %d: MemoryMiB = %d, want %d", i, spec.MemoryMiB, tt.memory)
				}
				if spec.Network != tt.wantNetwork {
					t.Errorf("VM %d: Network = %v, want %v", i, spec.Network, tt.wantNetwork)
				}
			}
		})
	}
}
