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
