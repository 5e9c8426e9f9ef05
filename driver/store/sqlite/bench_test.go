package sqlite

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/driver/store/storetest"
)

// BenchmarkTransition measures one persisted state transition: the state
// machine's check (states.Next) and the node's new state written with its
// event in one transaction, round the cycle manageable -> cleaning ->
// available -> manageable.
func BenchmarkTransition(b *testing.B) {
	ctx := context.Background()
	s, _ := open(b)
	n := &store.Node{UUID: "n1", Name: "node-0", Driver: "fake_agent", ProvisionState: states.Manageable}
	if err := s.CreateNode(ctx, n); err != nil {
		b.Fatal(err)
	}
	cycle := []string{states.EvProvide, states.EvDone, states.EvManage}
	b.ResetTimer()
	for i := range b.N {
		ev := cycle[i%len(cycle)]
		to, err := states.Next(n.ProvisionState, ev)
		if err != nil {
			b.Fatal(err)
		}
		e := &store.Event{NodeUUID: n.UUID, Time: time.Now(), Kind: store.KindProvision, FromState: n.ProvisionState, ToState: to, Event: ev}
		n.ProvisionState = to
		if err := s.UpdateNode(ctx, n, e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHeartbeatWrite measures the store's half of a heartbeat: the
// one small write of the agent's fields (RecordHeartbeat).
func BenchmarkHeartbeatWrite(b *testing.B) {
	ctx := context.Background()
	s, _ := open(b)
	if err := s.CreateNode(ctx, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: states.Available}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := s.RecordHeartbeat(ctx, "n1", store.Heartbeat{URL: "http://127.0.0.1:9999", Version: "10", Dialect: "v1",
			At: time.Unix(time.Now().Unix(), 0).UTC()}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHeartbeatWriteContended is the store's half of the bench's
// closed heartbeat loop: 16 goroutines each heartbeating its share of 100
// nodes, one heartbeat per node at a time, each with a check (as the
// conductor's modern heartbeat has). It reports the CPU per heartbeat
// (the process's user and system time) and the heartbeats per transaction
// of the group commit.
func BenchmarkHeartbeatWriteContended(b *testing.B) {
	const nodes, workers = 100, 16
	ctx := context.Background()
	s, _ := open(b)
	ids := make([]string, nodes)
	for i := range ids {
		ids[i] = fmt.Sprintf("n%d", i)
		if err := s.CreateNode(ctx, &store.Node{UUID: ids[i], Driver: "fake_agent", ProvisionState: states.Available}); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	s.hbq.mu.Lock()
	batches0 := s.hbq.batches
	s.hbq.mu.Unlock()
	b.ResetTimer()
	cpu0 := cpuTime()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := w; next.Add(1) <= int64(b.N); k += workers {
				id := ids[k%nodes]
				if _, err := s.RecordHeartbeat(ctx, id, store.Heartbeat{URL: "http://127.0.0.1:9999/" + id, Version: "10", Dialect: "v1",
					At: time.Unix(time.Now().Unix(), 0).UTC(), Check: func(n *store.Node) error {
						if n.UUID != id {
							return fmt.Errorf("check got node %s, want %s", n.UUID, id)
						}
						return nil
					}}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	cpu := cpuTime() - cpu0
	b.StopTimer()
	s.hbq.mu.Lock()
	batches := s.hbq.batches - batches0
	s.hbq.mu.Unlock()
	b.ReportMetric(float64(cpu)/float64(time.Microsecond)/float64(b.N), "cpu-us/heartbeat")
	b.ReportMetric(float64(b.N)/float64(max(batches, 1)), "heartbeats/tx")
}

// queueCounts is a snapshot of a leader queue's batches and the requests
// they took.
type queueCounts struct{ batches, requests int64 }

func countsOf[R queued](q *leaderQueue[R]) queueCounts {
	q.mu.Lock()
	defer q.mu.Unlock()
	return queueCounts{q.batches, q.requests}
}

// reportWrites reports the CPU per op since cpu0 and the writes per
// transaction of the write queue since c0.
func reportWrites(b *testing.B, s *SQLite, c0 queueCounts, cpu0 time.Duration) {
	cpu := cpuTime() - cpu0
	c := countsOf(&s.wq)
	b.ReportMetric(float64(cpu)/float64(time.Microsecond)/float64(b.N), "cpu-us/op")
	if n := c.batches - c0.batches; n > 0 {
		b.ReportMetric(float64(c.requests-c0.requests)/float64(n), "writes/tx")
	}
}

// cpuTime is the process's CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDueNodes: storetest.BenchDueNodes on SQLite.
func BenchmarkDueNodes(b *testing.B) {
	s, _ := open(b)
	storetest.BenchDueNodes(b, s)
}

// BenchmarkDueFastTrack: storetest.BenchDueFastTrack on SQLite.
func BenchmarkDueFastTrack(b *testing.B) {
	s, _ := open(b)
	storetest.BenchDueFastTrack(b, s)
}
