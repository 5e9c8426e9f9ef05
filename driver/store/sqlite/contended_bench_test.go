package sqlite

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
)

// BenchmarkSmallWritesContended is the store under a fleet's write load: 32
// goroutines over 100 nodes, each write a heartbeat (RecordHeartbeat) or an
// event of its own (AddEvent), as a 1000-node deploy writes them while its
// writers queue for the one SQLite writer connection.
func BenchmarkSmallWritesContended(b *testing.B) {
	ctx := context.Background()
	s, _ := open(b)
	const nodes = 100
	for i := range nodes {
		if err := s.CreateNode(ctx, &store.Node{UUID: fmt.Sprintf("n%d", i), Driver: "fake_agent", ProvisionState: states.Available}); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.SetParallelism(16) // 32 goroutines on 2 CPUs
	b.ResetTimer()
	c0, h0, cpu0 := countsOf(&s.wq), countsOf(&s.hbq.leaderQueue), cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			id := fmt.Sprintf("n%d", i%nodes)
			if i%2 == 0 {
				if _, err := s.RecordHeartbeat(ctx, id, store.Heartbeat{URL: "http://127.0.0.1:9999/" + id, Version: "10", Dialect: "v1",
					At: time.Unix(time.Now().Unix(), 0).UTC()}); err != nil {
					b.Error(err)
					return
				}
				continue
			}
			if err := s.AddEvent(ctx, &store.Event{NodeUUID: id, Kind: store.KindPower, Event: "power on", Message: "bench"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportWrites(b, s, c0, cpu0)
	if h := countsOf(&s.hbq.leaderQueue); h.batches > h0.batches {
		b.ReportMetric(float64(h.requests-h0.requests)/float64(h.batches-h0.batches), "heartbeats/tx")
	}
}

// BenchmarkSaveContended is tasks saving their nodes (UpdateNode with an
// event, as task.save does) while 32 goroutines queue for the one writer:
// a deploy's node, with the agent's fields and a clean plan in
// driver_internal_info, one node per goroutine.
func BenchmarkSaveContended(b *testing.B) {
	ctx := context.Background()
	s, _ := open(b)
	const goroutines = 32
	nodes := make([]*store.Node, goroutines)
	for i := range nodes {
		n := deployNode()
		n.UUID, n.Name = fmt.Sprintf("00000000-0000-4000-8000-%012d", i), fmt.Sprintf("n-%d", i)
		n.DriverInternalInfo = map[string]any{
			"agent_url": "http://127.0.0.1:9999", "agent_version": "10.0.0", "agent_secret_token_pregenerated": false,
			"agent_cached_deploy_steps": map[string]any{"deploy": []any{
				map[string]any{"step": "write_image", "priority": float64(80), "interface": "deploy", "reboot_requested": false, "abortable": false},
				map[string]any{"step": "prepare_image", "priority": float64(0), "interface": "deploy", "reboot_requested": false, "abortable": false}}},
			"agent_last_heartbeat": "2026-12-03T16:00:00Z", "deploy_boot_mode": "bios", "is_whole_disk_image": true,
		}
		if err := s.CreateNode(ctx, n); err != nil {
			b.Fatal(err)
		}
		nodes[i] = n
	}
	var next atomic.Int64
	b.SetParallelism(goroutines / 2) // 32 goroutines on 2 CPUs
	b.ReportAllocs()
	b.ResetTimer()
	c0, cpu0 := countsOf(&s.wq), cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		n := nodes[int(next.Add(1)-1)%goroutines]
		for pb.Next() {
			if err := s.UpdateNode(ctx, n, &store.Event{NodeUUID: n.UUID, Kind: store.KindPower, Event: "power on", Detail: []byte(`{"interface":"ipmi"}`)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportWrites(b, s, c0, cpu0)
}
