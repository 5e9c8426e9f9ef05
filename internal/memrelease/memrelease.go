// Package memrelease gives a long-running process's free memory back to the
// operating system once the process goes quiet after a burst of work.
//
// Go keeps the heap it freed for reuse: after a GC the heap may grow to
// twice the live heap (GOGC=100) before the next, and its scavenger returns
// only what lies above that goal, slowly. Garbage of a burst (a thousand
// nodes enrolled, their BMCs' sessions set up) stays resident until the
// next GC, which in an idle process is the runtime's forced one, two
// minutes on. A lab that has gone idle holds that memory for nothing:
// Watch notices the quiet (the process allocated less than Quiet in a
// tick, after allocating at least Burst since its last release) and calls
// debug.FreeOSMemory once: one GC, and the free heap returned. When work
// comes back the heap grows again as it did the first time.
package memrelease

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// DefaultTick is how often Watch reads the allocation counter by default.
const DefaultTick = time.Second

// Settle is the longest from the start of a quiet spell to its release
// with the default tick: the rest of the tick it began in, and the next.
const Settle = 2 * DefaultTick

// Options tune Watch; the zero value is the defaults.
type Options struct {
	// Tick is how often the allocation counter is read (DefaultTick).
	Tick time.Duration
	// Quiet is the most a tick may allocate and still count as quiet
	// (default 256 KiB: an idle driver's periodic tasks allocate less).
	Quiet uint64
	// Burst is the least allocated since the last release that makes one
	// worth its GC (default 4 MiB).
	Burst uint64
	// Released, when set, is called after each release (tests).
	Released func()
}

func (o *Options) defaults() {
	if o.Tick <= 0 {
		o.Tick = DefaultTick
	}
	if o.Quiet == 0 {
		o.Quiet = 256 << 10
	}
	if o.Burst == 0 {
		o.Burst = 4 << 20
	}
}

const allocsMetric = "/gc/heap/allocs:bytes"

// allocated is the bytes the process has allocated on the heap since it
// started (runtime/metrics: no stop-the-world, unlike ReadMemStats).
func allocated(s []metrics.Sample) uint64 {
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// Watch runs until ctx ends, releasing memory after each burst of work
// once the process is quiet (one release per burst). Start it in its own
// goroutine.
func Watch(ctx context.Context, o Options) {
	o.defaults()
	s := []metrics.Sample{{Name: allocsMetric}}
	t := time.NewTicker(o.Tick)
	defer t.Stop()
	prev := allocated(s)
	since := prev // the counter at the last release
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := allocated(s)
		tick := now - prev
		prev = now
		if tick <= o.Quiet && now-since >= o.Burst {
			debug.FreeOSMemory()
			since = allocated(s)
			prev = since
			if o.Released != nil {
				o.Released()
			}
		}
	}
}
