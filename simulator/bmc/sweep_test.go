package bmc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
)

// An idle BMC keeps one goroutine, its read loop: the library's per-BMC
// session sweep is not left running beside the process's one sweeper.
func TestIdleBMCKeepsOneGoroutine(t *testing.T) {
	const n = 50
	before := runtime.NumGoroutine()
	for i := range n {
		startBMC(t, bmctest.New(fmt.Sprintf("node-%d", i)), Options{})
	}
	deadline := time.After(30 * time.Second)
	for {
		sweeps := goroutinesIn(t, evictionLoop)
		extra := runtime.NumGoroutine() - before
		if sweeps == 0 && extra <= n+1 {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("%d BMCs run %d more goroutines (want at most %d: a read loop each and one sweeper); %d of them the library's session sweep",
				n, extra, n+1, sweeps)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// goroutinesIn counts the goroutines with fn on their stack.
func goroutinesIn(t *testing.T, fn string) int {
	t.Helper()
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 2); err != nil {
		t.Fatal(err)
	}
	return bytes.Count(buf.Bytes(), []byte(fn+"("))
}

// BMCs sharing a clock share its sweeper: once one of them closes, the
// others' idle sessions are still evicted.
func TestSweepOutlivesAClosedBMC(t *testing.T) {
	clk := newFakeClock()
	first, err := New(bmctest.New("node-0"), "127.0.0.1:0", Options{IdleTimeout: time.Second, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	first.Start(context.Background())
	b := startBMC(t, bmctest.New("node-1"), Options{IdleTimeout: time.Second, Clock: clk})
	third := startBMC(t, bmctest.New("node-2"), Options{IdleTimeout: time.Second, Clock: clk})
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	for _, bm := range []*BMC{b, third} {
		c, err := connect(t, bm)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetChassisStatus(context.Background()); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second + 4*time.Second) // timeout + tolerance, and more
		deadline := time.After(30 * time.Second)
		for bm.core.Sessions.Count() != 0 {
			select {
			case <-deadline:
				t.Fatalf("%s: the idle session was not evicted: %d sessions", bm.Machine().Name(), bm.core.Sessions.Count())
			case <-time.After(10 * time.Millisecond):
				clk.Advance(0) // the sweep may have been busy: tick again
			}
		}
		_, err = c.GetChassisStatus(context.Background())
		if err == nil {
			t.Fatalf("%s: idle session still served", bm.Machine().Name())
		}
		if errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
}
