package middleware

import (
	"net"
	"net/netip"
	"testing"
)

func TestSourcePrefixGroupsClients(t *testing.T) {
	tests := []struct {
		name   string
		remote net.Addr
		want   string
	}{
		{"IPv4 address", &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4000}, "192.0.2.7/32"},
		{"IPv4-mapped IPv6 address", &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 4000}, "192.0.2.7/32"},
		{"IPv6 address", &net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1"), Port: 4000}, "2001:db8:1:2::/64"},
		{"IPv6 address with zone", &net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 4000, Zone: "eth0"}, "fe80::/64"},
		{"UDP-style address parsed from text", &net.UDPAddr{IP: net.ParseIP("198.51.100.1"), Port: 22}, "198.51.100.1/32"},
		{"unix socket", &net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, "invalid Prefix"},
		{"nil", nil, "invalid Prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sourcePrefix(tt.remote).String(); got != tt.want {
				t.Errorf("sourcePrefix(%v) = %s, want %s", tt.remote, got, tt.want)
			}
		})
	}
}

func TestStartupLimiterCountsAndReleases(t *testing.T) {
	limiter := &startupLimiter{maxTotal: 3, maxPerSource: 2, perSource: map[netip.Prefix]int{}, logger: discardLogger}
	addr := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 1} }

	first, ok := limiter.acquire(addr("2001:db8::1"))
	if !ok {
		t.Fatal("first connection rejected")
	}
	if _, ok := limiter.acquire(addr("2001:db8::2")); !ok {
		t.Fatal("second connection from the same /64 rejected under the per-client cap of 2")
	}
	if _, ok := limiter.acquire(addr("2001:db8::3")); ok {
		t.Error("third connection from the same /64 accepted over the per-client cap of 2")
	}
	if _, ok := limiter.acquire(addr("2001:db8:0:1::1")); !ok {
		t.Error("connection from another /64 rejected under the total cap of 3")
	}
	if _, ok := limiter.acquire(addr("192.0.2.1")); ok {
		t.Error("fourth connection accepted over the total cap of 3")
	}

	first.release()
	first.release()
	if limiter.total != 2 {
		t.Errorf("total after releasing one place twice = %d, want 2", limiter.total)
	}
	if _, ok := limiter.acquire(addr("2001:db8::4")); !ok {
		t.Error("connection rejected after a place of its /64 was released")
	}
}
