package memrelease

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

var sink [][]byte

// After a burst of allocations the quiet process gets its free heap back
// from the runtime: the burst's garbage is collected and its pages are
// returned to the operating system, instead of staying resident until the
// runtime's next GC.
func TestQuietAfterBurstReleases(t *testing.T) {
	var burstDone atomic.Bool
	released := make(chan runtime.MemStats, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var before runtime.MemStats
	go Watch(ctx, Options{Tick: 10 * time.Millisecond, Burst: 1, Released: func() {
		if !burstDone.Load() {
			return // a quiet tick inside the burst (the machine is busy)
		}
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		select {
		case released <- m:
		default:
		}
	}})
	// A burst: 64 MiB allocated, 16 MiB of it alive until the burst ends.
	for i := range 1024 {
		b := make([]byte, 64<<10)
		b[0] = byte(i)
		if i%4 == 0 {
			sink = append(sink, b)
		}
	}
	sink = nil
	runtime.ReadMemStats(&before)
	burstDone.Store(true)
	resident := func(m runtime.MemStats) uint64 { return m.HeapSys - m.HeapReleased }
	// The first release may have begun before the burst ended (it then
	// kept the burst's live part): each byte allocated after one makes
	// the next quiet tick release again.
	var after runtime.MemStats
	deadline := time.After(30 * time.Second)
	for done := false; !done; {
		sink = append(sink[:0], make([]byte, 64))
		select {
		case after = <-released:
			done = resident(after) <= 16<<20
		case <-deadline:
			t.Fatalf("heap resident %d MiB before, %d MiB after 30 s of a quiet process: want it returned (below 16 MiB)",
				resident(before)>>20, resident(after)>>20)
		}
	}
	if after.NumGC == before.NumGC {
		t.Errorf("the release ran no GC: the burst's garbage stays in the heap")
	}
}
