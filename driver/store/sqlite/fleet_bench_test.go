package sqlite

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/driver/store/storetest"
)

// BenchmarkHeartbeatWriteContendedFleet is BenchmarkHeartbeatWriteContended
// over the bench's 10,000 fast-track nodes (storetest.FastTrackNode:
// available, powered on, rows as large as the bench's): 16 goroutines
// heartbeating the nodes in turn, so each heartbeat's row and index entries
// sit on pages of their own, as they do at 10,000 nodes, where the
// 100-node bench's whole table fits in a few pages.
func BenchmarkHeartbeatWriteContendedFleet(b *testing.B) {
	const nodes, workers = 10_000, 16
	ctx := context.Background()
	s, _ := open(b)
	base := time.Now().UTC()
	ids := make([]string, nodes)
	for i := range ids {
		n := storetest.FastTrackNode(i, base)
		ids[i] = n.UUID
		if err := s.CreateNode(ctx, n); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	h0 := countsOf(&s.hbq.leaderQueue)
	b.ResetTimer()
	cpu0 := cpuTime()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := next.Add(1); k <= int64(b.N); k = next.Add(1) {
				id := ids[k%nodes]
				if _, err := s.RecordHeartbeat(ctx, id, store.Heartbeat{URL: "http://127.0.0.1:9999/" + id, Version: "10.0.0",
					Dialect: "ironic-python-agent", At: time.Unix(time.Now().Unix(), 0).UTC()}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	cpu := cpuTime() - cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu)/float64(time.Microsecond)/float64(b.N), "cpu-us/heartbeat")
	if h := countsOf(&s.hbq.leaderQueue); h.batches > h0.batches {
		b.ReportMetric(float64(h.requests-h0.requests)/float64(h.batches-h0.batches), "heartbeats/tx")
	}
}
