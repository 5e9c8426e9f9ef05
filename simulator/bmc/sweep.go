package bmc

import (
	"reflect"
	"runtime"
	"sync"
	"time"

	gobmc "github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/clock"
)

// The library's server (go-ipmi v0.9.1, server.Serve) starts a goroutine
// per BMC that scans the BMC's sessions for idle ones every 3 s
// (bmc.DefaultSessionEvictInterval): at 10,000 BMCs, 10,000 goroutines
// (2 KiB of stack each, their tickers and contexts: 2.6 KiB per BMC of
// BenchmarkRSSPerIdleBMC's 15.5) and 3,333 wakeups a second with no
// session open anywhere. Here one sweeper per clock scans every BMC of the
// process instead, with the same calls (SessionStore.EvictExpired,
// V15SessionStore.EvictExpired) on the same interval, and the library's
// goroutine ends as it asks the BMC's clock for its ticker (libClock).
//
// The library has no option to leave the sweep out, and a fork for one
// option would be ours to carry; libClock ends only that one goroutine,
// found by its function's name, and otherwise gives the library the
// clock it was given. Were the library to move its sweep, the name would
// not match: its goroutine would run as before (one more goroutine per BMC,
// TestIdleBMCKeepsOneGoroutine says so) beside ours, and sessions would
// still be evicted.

// evictionLoop is the library's per-BMC sweep goroutine.
const evictionLoop = "github.com/bougou/go-ipmi/pkg/server.(*Server).runSessionEviction"

// libClock is the clock the library's BMC and server are given: the BMC's
// own, except that the server's eviction goroutine ends (runtime.Goexit)
// where it would make its ticker. It has deferred nothing by then and
// nothing waits for it; its context is the server's and ends with it.
type libClock struct{ clock.Clock }

func (c libClock) NewTicker(d time.Duration) clock.Ticker {
	if d == gobmc.DefaultSessionEvictInterval && callerIs(evictionLoop) {
		runtime.Goexit()
	}
	return c.Clock.NewTicker(d)
}

// callerIs reports whether the function that called NewTicker is fn.
func callerIs(fn string) bool {
	var pc [1]uintptr
	// 0 is runtime.Callers, 1 callerIs, 2 NewTicker, 3 its caller.
	if runtime.Callers(3, pc[:]) < 1 {
		return false
	}
	f, _ := runtime.CallersFrames(pc[:]).Next()
	return f.Function == fn
}

// sweeper evicts the idle sessions of the BMCs that share a clock.
type sweeper struct {
	clk  clock.Clock
	key  any // its key in sweepers.by, nil if it has none
	mu   sync.Mutex
	bmcs []*BMC // each BMC's sweepIdx is its index here
	stop chan struct{}
	done chan struct{}
	// scan is the tick's copy of bmcs (kept: no garbage per tick).
	scan []*BMC
}

var sweepers struct {
	mu sync.Mutex
	by map[any]*sweeper
}

// joinSweep adds b to the sweeper of its clock, starting it if it is the
// first BMC of that clock.
func joinSweep(b *BMC) {
	clk := b.opts.Clock
	sweepers.mu.Lock()
	defer sweepers.mu.Unlock()
	var s *sweeper
	if reflect.TypeOf(clk).Comparable() {
		s = sweepers.by[clk]
	}
	if s == nil {
		s = &sweeper{clk: clk, stop: make(chan struct{}), done: make(chan struct{})}
		if reflect.TypeOf(clk).Comparable() {
			if sweepers.by == nil {
				sweepers.by = map[any]*sweeper{}
			}
			s.key = clk
			sweepers.by[clk] = s
		}
		go s.run(clk.NewTicker(gobmc.DefaultSessionEvictInterval))
	}
	s.mu.Lock()
	b.sweep, b.sweepIdx = s, len(s.bmcs)
	s.bmcs = append(s.bmcs, b)
	s.mu.Unlock()
}

// leaveSweep removes b from its sweeper, and stops the sweeper when b was
// its last BMC.
func leaveSweep(b *BMC) {
	s := b.sweep
	if s == nil {
		return
	}
	sweepers.mu.Lock()
	s.mu.Lock()
	last := len(s.bmcs) - 1
	moved := s.bmcs[last]
	s.bmcs[b.sweepIdx] = moved
	moved.sweepIdx = b.sweepIdx
	s.bmcs[last] = nil
	s.bmcs = s.bmcs[:last]
	empty := len(s.bmcs) == 0
	s.mu.Unlock()
	if empty && s.key != nil {
		delete(sweepers.by, s.key)
	}
	sweepers.mu.Unlock()
	b.sweep = nil
	if empty {
		close(s.stop)
		<-s.done
	}
}

func (s *sweeper) run(t clock.Ticker) {
	defer close(s.done)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C():
		}
		s.mu.Lock()
		s.scan = append(s.scan[:0], s.bmcs...)
		s.mu.Unlock()
		for i, b := range s.scan {
			b.core.Sessions.EvictExpired()
			b.core.V15Sessions.EvictExpired()
			s.scan[i] = nil
		}
	}
}
