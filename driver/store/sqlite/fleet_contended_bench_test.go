package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/driver/store/storetest"
)

// The fleet benchmarks' database: 10,000 nodes (storetest.FastTrackNode,
// rows as large as the bench's) halfway through a deploy, 50 events each.
const fleetNodes, fleetEventsPerNode = 10_000, 50

// fleetTemplate is the fleet database file's bytes, built once per test
// binary (it takes seconds) and written out for each run of a benchmark.
var fleetTemplate struct {
	once sync.Once
	db   []byte
	err  error
}

// openFleet opens a copy of the fleet database and returns the nodes as
// stored.
func openFleet(b *testing.B) (*SQLite, []*store.Node) {
	ctx := context.Background()
	base := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	nodes := make([]*store.Node, fleetNodes)
	for i := range nodes {
		nodes[i] = storetest.FastTrackNode(i, base)
	}
	ft := &fleetTemplate
	ft.once.Do(func() {
		path := filepath.Join(b.TempDir(), "fleet.db")
		if ft.err = buildFleet(ctx, path, nodes); ft.err == nil {
			ft.db, ft.err = os.ReadFile(path)
		}
	})
	if ft.err != nil {
		b.Fatal(ft.err)
	}
	path := filepath.Join(b.TempDir(), "ironlab.db")
	if err := os.WriteFile(path, ft.db, 0o644); err != nil {
		b.Fatal(err)
	}
	s, err := Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s, nodes
}

func buildFleet(ctx context.Context, path string, nodes []*store.Node) error {
	s, err := Open(ctx, path)
	if err != nil {
		return err
	}
	defer s.Close() // the last connection's close checkpoints the WAL into the file
	for _, n := range nodes {
		if err := s.CreateNode(ctx, n); err != nil {
			return err
		}
	}
	_, err = s.db.ExecContext(ctx, `WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x+1 FROM c WHERE x < ?)
		INSERT INTO events (uuid, node_uuid, time, kind, event, detail)
		SELECT printf('ev-%d', x), printf('00000000-0000-4000-8000-%012d', x % ?), x, 'power', 'power on', '{"interface":"ipmi"}' FROM c`,
		len(nodes)*fleetEventsPerNode-1, len(nodes))
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, qLinkEvents) // the insert set no event's prev_id
	return err
}

// BenchmarkHeartbeatWriteContendedFleet is BenchmarkHeartbeatWriteContended
// in the fleet database (10,000 fast-track nodes, storetest.FastTrackNode:
// available, powered on, rows as large as the bench's): 16 goroutines
// heartbeating the nodes in turn, so each heartbeat's row and index entries
// sit on pages of their own, as they do at 10,000 nodes, where the
// 100-node bench's whole table fits in a few pages.
func BenchmarkHeartbeatWriteContendedFleet(b *testing.B) {
	const workers = 16
	ctx := context.Background()
	s, nodes := openFleet(b)
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
				id := nodes[k%int64(len(nodes))].UUID
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

// BenchmarkGetNodeUnderWritesFleet is a task's or the API's read of a node
// (GetNode) in the fleet database while the writer commits heartbeats of
// other nodes all the while, as in a 10,000-node deploy: every commit
// drops the readers' page caches, so each read starts over from the
// B-tree's root. It reports the CPU per read (the writer's included) and
// the reads and writes per second. Memory-mapped reads (mmap_size on the
// readers) were tried against it: more CPU per read (85 -> 104 us).
func BenchmarkGetNodeUnderWritesFleet(b *testing.B) {
	const readers = 4
	ctx := context.Background()
	s, nodes := openFleet(b)
	stop := make(chan struct{})
	var writes atomic.Int64
	var wwg sync.WaitGroup
	wwg.Go(func() {
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			id := nodes[(k*7919)%len(nodes)].UUID
			if _, err := s.RecordHeartbeat(ctx, id, store.Heartbeat{URL: "http://127.0.0.1:9999/" + id, Version: "10.0.0",
				Dialect: "ironic-python-agent", At: time.Unix(time.Now().Unix(), 0).UTC()}); err != nil {
				b.Error(err)
				return
			}
			writes.Add(1)
			time.Sleep(200 * time.Microsecond) // a writer busy but not saturated
		}
	})
	var next atomic.Int64
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	w0 := writes.Load()
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			for k := next.Add(1); k <= int64(b.N); k = next.Add(1) {
				if _, err := s.GetNode(ctx, nodes[(k*104729)%int64(len(nodes))].UUID); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	close(stop)
	wwg.Wait()
	b.ReportMetric(float64(cpu)/float64(time.Microsecond)/float64(b.N), "cpu-us/read")
	b.ReportMetric(float64(b.N)/el.Seconds(), "reads/s")
	b.ReportMetric(float64(writes.Load()-w0)/el.Seconds(), "writes/s")
}

// BenchmarkSaveContendedFleet is BenchmarkSaveContended in the fleet
// database: 32 goroutines saving nodes spread over the whole table, each
// with an event, so that every save's row and the nodes' index entries
// sit on pages of their own (and, before migration 7, its events_node
// entry), as in a 10,000-node bench. "same-state" saves keep the node's state (a step's progress in
// driver_internal_info), "power-change" saves change its power state (an
// indexed column) each time. Beside the CPU it reports what the saves
// wrote and read through the file system (the WAL's frames, the
// checkpoints' copies, the pages read back): that does not move with the
// machine's speed as the CPU does.
func BenchmarkSaveContendedFleet(b *testing.B) {
	for _, mode := range []string{"same-state", "power-change"} {
		b.Run(mode, func(b *testing.B) { saveContendedFleet(b, mode == "power-change") })
	}
}

func saveContendedFleet(b *testing.B, changePower bool) {
	const goroutines = 32
	ctx := context.Background()
	s, nodes := openFleet(b)
	var next atomic.Int64
	b.SetParallelism(goroutines / 2) // 32 goroutines on 2 CPUs
	b.ResetTimer()
	c0, cpu0, io0 := countsOf(&s.wq), cpuTime(), readIO(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			// 7919 is prime to 10,000: the 32 saves in flight are of
			// 32 different nodes.
			k := next.Add(1)
			n := nodes[(k*7919)%int64(len(nodes))]
			n.DriverInternalInfo = map[string]any{"step_progress": float64(k)}
			if changePower && n.PowerState == "power on" {
				n.PowerState = "power off"
			} else if changePower {
				n.PowerState = "power on"
			}
			if err := s.UpdateNode(ctx, n, &store.Event{NodeUUID: n.UUID, Kind: store.KindPower, Event: "power on", Detail: []byte(`{"interface":"ipmi"}`)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	io := readIO(b)
	reportWrites(b, s, c0, cpu0)
	b.ReportMetric(float64(io.wchar-io0.wchar)/1024/float64(b.N), "written-KiB/op")
	b.ReportMetric(float64(io.rchar-io0.rchar)/1024/float64(b.N), "read-KiB/op")
}

// ioCounts are /proc/self/io's bytes passed to write and read calls.
type ioCounts struct{ rchar, wchar int64 }

func readIO(b *testing.B) ioCounts {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skipf("no I/O counts: %v", err)
	}
	var c ioCounts
	for line := range strings.Lines(string(data)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "rchar":
			c.rchar = n
		case "wchar":
			c.wchar = n
		}
	}
	return c
}

// BenchmarkListEventsFleet is a node's history read (ListEvents: the API's
// node history, a scenario's wait_event and its results' events.json) in
// the fleet database, 50 events a node, the nodes taken across the table.
func BenchmarkListEventsFleet(b *testing.B) {
	ctx := context.Background()
	s, nodes := openFleet(b)
	b.ResetTimer()
	cpu0 := cpuTime()
	for k := range b.N {
		evs, err := s.ListEvents(ctx, nodes[(k*104729)%len(nodes)].UUID)
		if err != nil || len(evs) != fleetEventsPerNode {
			b.Fatalf("ListEvents = %d events, %v; want %d", len(evs), err, fleetEventsPerNode)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-us/list")
}

// BenchmarkLastTransitionsFleet is the read a conductor makes at start-up
// (Recover: each node's latest provision transition) in the fleet
// database. Before LastTransitions, Recover read each node's history
// (BenchmarkListEventsFleet, times 10,000). "last" adds one transition
// after each node's 50 power events, where a node's usually is; "none"
// has none, so every node's chain is walked whole (the worst case).
func BenchmarkLastTransitionsFleet(b *testing.B) {
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		add  bool
	}{{"last", true}, {"none", false}} {
		b.Run(bc.name, func(b *testing.B) {
			s, _ := openFleet(b)
			want := 0
			if bc.add {
				want = fleetNodes
				if _, err := s.db.ExecContext(ctx, `INSERT INTO events (uuid, node_uuid, time, kind, from_state, to_state, event, prev_id)
					SELECT 'tr-' || uuid, uuid, 0, ?, 'deploying', 'active', 'done', last_event_id FROM nodes`, store.KindProvision); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			cpu0 := cpuTime()
			for range b.N {
				last, err := s.LastTransitions(ctx)
				if err != nil || len(last) != want {
					b.Fatalf("LastTransitions = %d nodes, %v; want %d", len(last), err, want)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
		})
	}
}
