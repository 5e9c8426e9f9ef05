package conductor_test

import (
	"context"
	"testing"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
)

func benchConductor(b *testing.B) (*conductor.Conductor, store.Store, *store.Node) {
	b.Helper()
	ctx := context.Background()
	s := openStore(b)
	c := newConductor(b, s, conductor.Config{Host: "c1"})
	n := &store.Node{Name: "node-0", Driver: "fake_agent",
		DriverInfo:   map[string]any{"ipmi_address": "127.0.0.1", "ipmi_port": 6230, "ipmi_username": "admin", "ipmi_password": "password"},
		InstanceInfo: map[string]any{"image_source": "http://127.0.0.1:8080/bench-os.img", "image_checksum": "0123456789abcdef0123456789abcdef", "root_gb": 1},
		Properties:   map[string]any{"cpu_arch": "x86_64", "memory_mb": 1024, "local_gb": 10, "cpus": 1}}
	if err := c.CreateNode(ctx, n, states.CleanWait); err != nil {
		b.Fatal(err)
	}
	if err := s.CreatePort(ctx, &store.Port{Address: "52:54:00:12:34:56", NodeUUID: n.UUID, PXEEnabled: true}); err != nil {
		b.Fatal(err)
	}
	return c, s, n
}

// BenchmarkLookup is an agent's lookup by its MAC that issues the agent
// token (the token is cleared again between lookups, as a power off does).
func BenchmarkLookup(b *testing.B) {
	ctx := context.Background()
	c, s, n := benchConductor(b)
	q := conductor.LookupQuery{MACs: []string{"52:54:00:12:34:56"}, Dialect: conductor.DialectV1, Restrict: true, IssueToken: true}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, token, err := c.Lookup(ctx, q); err != nil || token == conductor.MaskedToken {
			b.Fatalf("lookup: %q %v", token, err)
		}
		if err := s.ClearAgent(ctx, n.UUID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLockedAction is an API action on a node named by its UUID: the
// node locked and loaded, changed and saved with its event, released
// (maintenance on and off).
func BenchmarkLockedAction(b *testing.B) {
	ctx := context.Background()
	c, _, n := benchConductor(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := c.SetMaintenance(ctx, n.UUID, i%2 == 0, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
