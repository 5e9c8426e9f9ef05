package conductor_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy/agent"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/store"
)

// bmcPower stands in for a real power interface ("ipmitool"): it keeps the
// power state per node and can be told to fail.
type bmcPower struct {
	mu    sync.Mutex
	state map[string]power.State
	err   error
	calls int
	// during, when set, runs inside each SetPowerState (without mu).
	during func(uuid string)
}

func (p *bmcPower) Name() string                    { return "ipmitool" }
func (p *bmcPower) Validate(power.DriverInfo) error { return nil }
func (p *bmcPower) GetPowerState(_ context.Context, info power.DriverInfo) (power.State, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return "", p.err
	}
	if s, ok := p.state[info[power.NodeUUIDKey].(string)]; ok {
		return s, nil
	}
	return power.Off, nil
}
func (p *bmcPower) SetPowerState(_ context.Context, info power.DriverInfo, s power.State) error {
	p.mu.Lock()
	during := p.during
	p.mu.Unlock()
	if during != nil {
		during(info[power.NodeUUIDKey].(string))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.err != nil {
		return p.err
	}
	if s == power.Reboot {
		s = power.On
	}
	p.state[info[power.NodeUUIDKey].(string)] = s
	return nil
}
func (p *bmcPower) SetBootDevice(context.Context, power.DriverInfo, power.Device, power.BootOptions) error {
	return p.err
}

func TestRealPowerInterface(t *testing.T) {
	ctx := context.Background()
	bmc := &bmcPower{state: map[string]power.State{}}
	l := newLab(t, func(c *conductor.Config, _ *agent.Config) {
		c.PowerInterfaces["ipmitool"] = bmc
		c.PowerRetries = 2
	})
	n := &store.Node{Name: "node-1", Driver: "agent_ipmitool",
		DriverInfo:   map[string]any{"ipmi_address": "127.0.0.1", "ipmi_port": float64(6231)},
		InstanceInfo: map[string]any{"image_source": "http://127.0.0.1:8080/disk.raw", "image_checksum": "abc"}}
	if err := l.c.CreateNode(ctx, n, states.Available); err != nil {
		t.Fatal(err)
	}
	if err := l.st.CreatePort(ctx, &store.Port{Address: mac, NodeUUID: n.UUID}); err != nil {
		t.Fatal(err)
	}

	t.Run("agent fields wiped on reboot", func(t *testing.T) {
		if err := l.c.Heartbeat(ctx, conductor.Heartbeat{Ident: n.UUID, AgentURL: l.url, Dialect: conductor.DialectLegacy}); err != nil {
			t.Fatal(err)
		}
		l.c.Wait()
		if err := l.c.PowerAction(ctx, n.UUID, "power on"); err != nil {
			t.Fatal(err)
		}
		l.c.Wait()
		l.act(t, n.UUID, "active", nil) // on -> reboot through the BMC
		got := l.node(t, n.UUID)
		wantState(t, got, states.DeployWait)
		if _, ok := got.DriverInternalInfo["agent_url"]; ok {
			t.Errorf("agent_url kept after a real reboot: %v", got.DriverInternalInfo)
		}
	})

	t.Run("target persisted while the BMC works", func(t *testing.T) {
		var seen []string
		bmc.mu.Lock()
		bmc.during = func(id string) {
			got, err := l.st.GetNode(ctx, id)
			if err != nil {
				t.Error(err)
				return
			}
			seen = append(seen, got.TargetPowerState)
		}
		bmc.mu.Unlock()
		if err := l.c.PowerAction(ctx, n.UUID, "power off"); err != nil {
			t.Fatal(err)
		}
		// The API answers once the target is stored.
		if got := l.node(t, n.UUID); got.TargetPowerState != "power off" && got.PowerState != "power off" {
			t.Errorf("after PowerAction: target %q, power %q: want the target stored", got.TargetPowerState, got.PowerState)
		}
		l.c.Wait()
		got := l.node(t, n.UUID)
		if len(seen) != 1 || seen[0] != "power off" {
			t.Errorf("stored target_power_state during the BMC call: %q, want [power off]", seen)
		}
		if got.PowerState != "power off" || got.TargetPowerState != "" {
			t.Errorf("after: power %q target %q, want power off and no target", got.PowerState, got.TargetPowerState)
		}
		bmc.mu.Lock()
		bmc.during = nil
		bmc.mu.Unlock()
		if err := l.c.PowerAction(ctx, n.UUID, "power on"); err != nil { // as the next subtest expects
			t.Fatal(err)
		}
		l.c.Wait()
	})

	t.Run("power error names the BMC", func(t *testing.T) {
		bmc.mu.Lock()
		bmc.err = errors.New("timeout waiting for RMCP+ open session response")
		bmc.calls = 0
		bmc.mu.Unlock()
		if err := l.c.PowerAction(ctx, n.UUID, "power off"); err != nil {
			t.Fatal(err)
		}
		l.c.Wait()
		got := l.node(t, n.UUID)
		for _, want := range []string{"power off", "127.0.0.1:6231", "timeout waiting for RMCP+ open session response"} {
			if !strings.Contains(got.LastError, want) {
				t.Errorf("last_error %q lacks %q", got.LastError, want)
			}
		}
		if bmc.calls != 2 || got.PowerState != "power on" || got.TargetPowerState != "" {
			t.Errorf("calls %d (want 2 retries), power %q target %q", bmc.calls, got.PowerState, got.TargetPowerState)
		}
	})
}
