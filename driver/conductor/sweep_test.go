package conductor_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/store"
)

// deadBMC is a power interface whose BMC for driver_info bmc=dead never
// answers (it blocks until the call's context ends); the others answer at once.
type deadBMC struct {
	mu       sync.Mutex
	entered  chan struct{} // closed when the dead BMC is first asked
	rebooted chan string   // node UUIDs rebooted through a live BMC
	deadErr  error         // what the dead BMC's caller gave up with
	once     sync.Once
}

func (p *deadBMC) Name() string                    { return "fake" }
func (p *deadBMC) Validate(power.DriverInfo) error { return nil }

func (p *deadBMC) call(ctx context.Context, info power.DriverInfo) (dead bool, err error) {
	if info["bmc"] != "dead" {
		return false, nil
	}
	p.once.Do(func() { close(p.entered) })
	<-ctx.Done()
	p.mu.Lock()
	p.deadErr = ctx.Err()
	p.mu.Unlock()
	return true, ctx.Err()
}

func (p *deadBMC) GetPowerState(ctx context.Context, info power.DriverInfo) (power.State, error) {
	if _, err := p.call(ctx, info); err != nil {
		return "", err
	}
	return power.On, nil
}

func (p *deadBMC) SetPowerState(ctx context.Context, info power.DriverInfo, target power.State) error {
	if _, err := p.call(ctx, info); err != nil {
		return err
	}
	if target == power.Reboot {
		p.rebooted <- info[power.NodeUUIDKey].(string)
	}
	return nil
}

func (p *deadBMC) SetBootDevice(ctx context.Context, info power.DriverInfo, dev power.Device, opts power.BootOptions) error {
	_, err := p.call(ctx, info)
	return err
}

// TestDeadBMCDoesNotStallSweep: two nodes miss their heartbeat; the first
// one's BMC never answers. The watchdog reboots the second meanwhile, and
// the sweep ends once the dead node's time is up.
func TestDeadBMCDoesNotStallSweep(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	pw := &deadBMC{entered: make(chan struct{}), rebooted: make(chan string, 4)}
	c := newConductor(t, st, conductor.Config{Host: "test-conductor", PowerRetries: 1, PowerTimeout: time.Hour,
		HeartbeatTimeout: time.Second, WatchdogAction: conductor.WatchdogReboot, PeriodicNodeTimeout: 300 * time.Millisecond,
		PowerInterfaces: map[string]power.Interface{"fake": pw}})
	var ids []string
	for _, bmc := range []string{"dead", "alive"} {
		n := &store.Node{Name: "node-" + bmc, Driver: "fake_agent", DriverInfo: map[string]any{"bmc": bmc}}
		if err := c.CreateNode(ctx, n, states.Available); err != nil {
			t.Fatal(err)
		}
		n.PowerState = string(power.On)
		if err := st.UpdateNode(ctx, n); err != nil {
			t.Fatal(err)
		}
		if _, err := st.RecordHeartbeat(ctx, n.UUID, store.Heartbeat{URL: "http://127.0.0.1:9", Dialect: "v1", At: time.Now().Add(-time.Minute)}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, n.UUID)
	}
	done := make(chan error, 1)
	go func() { done <- c.Check(ctx, time.Now()) }()
	select {
	case <-pw.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the watchdog never asked the dead BMC")
	}
	select {
	case id := <-pw.rebooted:
		if id != ids[1] {
			t.Fatalf("rebooted %s, want the live node %s", id, ids[1])
		}
		pw.mu.Lock()
		gaveUp := pw.deadErr
		pw.mu.Unlock()
		if gaveUp != nil {
			t.Errorf("the live node was rebooted only after the dead BMC's call ended (%v): the sweep waited for it", gaveUp)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the live node was not rebooted while the dead BMC hung")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sweep did not end after the per-node timeout")
	}
	pw.mu.Lock()
	deadErr := pw.deadErr
	pw.mu.Unlock()
	if !errors.Is(deadErr, context.DeadlineExceeded) {
		t.Errorf("the dead BMC's caller gave up with %v, want the per-node deadline", deadErr)
	}
	evs, err := st.ListEvents(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	var failed bool
	for _, e := range evs {
		if e.Kind == store.KindPower && e.Message != "" {
			failed = true
		}
	}
	if !failed {
		t.Errorf("no failed power action recorded for the dead node: %+v", evs)
	}
}
