package bmc

import (
	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator/bmc/bmctest"

	"context"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/clock"
)

// needPyghmi checks /usr/bin/python3 can import pyghmi (Debian's module,
// the conformance peer of the native IPMI tests).
func needPyghmi(t testing.TB) string {
	t.Helper()
	py := labtest.Require(t, "/usr/bin/python3")
	labtest.RequireFunc(t, "python3-pyghmi", "apt-get install python3-pyghmi", func() error {
		return exec.Command(py, "-c", "import pyghmi.ipmi.command, pyghmi.ipmi.bmc").Run()
	})
	return py
}

func startBMC(t testing.TB, m *bmctest.Machine, opts Options) *BMC {
	t.Helper()
	b, err := New(m, "127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Start(ctx)
	t.Cleanup(func() {
		cancel()
		if err := b.Close(); err != nil {
			t.Errorf("close BMC: %v", err)
		}
	})
	return b
}

// ipmitool runs the real binary against one BMC.
type ipmitool struct {
	path  string
	b     *BMC
	iface []string // "-I lanplus -C 17", ...
	user  string
	pass  string
	extra []string // -N/-R
}

func (c ipmitool) run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{}, c.iface...)
	full = append(full, "-H", c.b.Addr().Addr().String(), "-p", strconv.Itoa(int(c.b.Addr().Port())),
		"-L", "ADMINISTRATOR", "-U", c.user, "-P", c.pass)
	if c.extra != nil {
		full = append(full, c.extra...)
	} else {
		full = append(full, "-R", "3", "-N", "1")
	}
	full = append(full, args...)
	out, err := exec.CommandContext(ctx, c.path, full...).CombinedOutput()
	return string(out), err
}

func (c ipmitool) must(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.run(t, args...)
	if err != nil {
		t.Fatalf("ipmitool %s %s: %v\n%s", strings.Join(c.iface, " "), strings.Join(args, " "), err, out)
	}
	return out
}

// fakeClock is the BMC's clock in tests: real time plus an offset that
// Advance moves; Advance also fires every ticker at once (the session
// eviction sweep), so a test waits on the eviction, not on a sleep.
type fakeClock struct {
	mu      sync.Mutex
	offset  time.Duration
	tickers []*fakeTicker
}

func newFakeClock() *fakeClock { return &fakeClock{} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Since is how far the clock has been advanced.
func (c *fakeClock) Since() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	tickers := append([]*fakeTicker(nil), c.tickers...)
	now := time.Now().Add(c.offset)
	c.mu.Unlock()
	for _, t := range tickers {
		select {
		case t.c <- now:
		default: // one tick pending is enough
		}
	}
}

func (c *fakeClock) NewTimer(d time.Duration) clock.Timer { return clock.Real.NewTimer(d) }

func (c *fakeClock) NewTicker(d time.Duration) clock.Ticker {
	t := &fakeTicker{c: make(chan time.Time, 1), real: time.NewTicker(d), stop: make(chan struct{})}
	go func() {
		for {
			select {
			case now := <-t.real.C:
				select {
				case t.c <- now.Add(c.Since()):
				default:
				}
			case <-t.stop:
				return
			}
		}
	}()
	c.mu.Lock()
	c.tickers = append(c.tickers, t)
	c.mu.Unlock()
	return t
}

type fakeTicker struct {
	c    chan time.Time
	real *time.Ticker
	once sync.Once
	stop chan struct{}
}

func (t *fakeTicker) C() <-chan time.Time { return t.c }
func (t *fakeTicker) Stop() {
	t.once.Do(func() {
		t.real.Stop()
		close(t.stop)
	})
}
