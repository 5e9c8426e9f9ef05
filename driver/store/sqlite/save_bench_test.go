package sqlite

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
)

// BenchmarkTaskWritesContended is the store under a fleet's task load: 256
// goroutines on 2 CPUs (as thousands of nodes' tasks queue for the one
// SQLite writer), each op one task's writes on its own node: reserve, save
// with an event, release.
func BenchmarkTaskWritesContended(b *testing.B) {
	ctx := context.Background()
	s, _ := open(b)
	const nodes = 2000
	for i := range nodes {
		if err := s.CreateNode(ctx, &store.Node{UUID: fmt.Sprintf("n%d", i), Driver: "fake_agent", ProvisionState: states.Available,
			DriverInfo: map[string]any{"ipmi_address": "127.0.0.1", "ipmi_port": 6230 + i}}); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.SetParallelism(128)
	b.ResetTimer()
	c0, cpu0 := countsOf(&s.wq), cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("n%d", next.Add(1)%nodes)
			host := "c" + id
			if err := s.Reserve(ctx, id, host); err != nil {
				continue // another goroutine holds it: a task that waits
			}
			n, err := s.GetNode(ctx, id)
			if err == nil {
				n.ProvisionState = states.CleanWait
				err = s.UpdateNodeHeld(ctx, n, host, &store.Event{NodeUUID: id, Kind: store.KindProvision, Event: "wait", Message: "bench"})
			}
			if err == nil {
				err = s.Release(ctx, id, host)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportWrites(b, s, c0, cpu0)
}

// BenchmarkUrgentWriteUnderLoad is an API request's two writes (reserve,
// then release) while 128 goroutines write tasks on other nodes: ns/op is
// the request's latency.
func BenchmarkUrgentWriteUnderLoad(b *testing.B) {
	ctx := context.Background()
	s, _ := open(b)
	const nodes = 2000
	for i := range nodes + 1 {
		if err := s.CreateNode(ctx, &store.Node{UUID: fmt.Sprintf("n%d", i), Driver: "fake_agent", ProvisionState: states.Available,
			DriverInfo: map[string]any{"ipmi_address": "127.0.0.1", "ipmi_port": 6230 + i}}); err != nil {
			b.Fatal(err)
		}
	}
	bctx, stop := context.WithCancel(ctx)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 128 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for bctx.Err() == nil {
				id := fmt.Sprintf("n%d", next.Add(1)%nodes)
				host := "c" + id
				if s.Reserve(bctx, id, host) != nil {
					continue
				}
				if n, err := s.GetNode(bctx, id); err == nil {
					n.ProvisionState = states.CleanWait
					s.UpdateNodeHeld(bctx, n, host, &store.Event{NodeUUID: id, Kind: store.KindProvision, Event: "wait", Message: "bench"})
				}
				s.Release(context.WithoutCancel(bctx), id, host)
			}
		}()
	}
	uctx := store.Urgent(ctx)
	id := fmt.Sprintf("n%d", nodes)
	b.ResetTimer()
	for range b.N {
		if err := s.Reserve(uctx, id, "api"); err != nil {
			b.Fatal(err)
		}
		if err := s.Release(uctx, id, "api"); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	stop()
	wg.Wait()
}
