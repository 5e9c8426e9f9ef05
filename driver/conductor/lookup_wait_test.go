package conductor_test

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/deploy/agent"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/driver/store/sqlite"
)

// gatedPower is bmcPower whose power changes wait for gate: the task that
// calls it holds its node until then. entered receives each call.
type gatedPower struct {
	*bmcPower
	entered chan struct{}
	gate    chan struct{}
}

func (p *gatedPower) SetPowerState(ctx context.Context, info power.DriverInfo, s power.State) error {
	p.entered <- struct{}{}
	select {
	case <-p.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return p.bmcPower.SetPowerState(ctx, info, s)
}

// readHookStore runs onRead after each whole-node read, once set.
type readHookStore struct {
	store.Store
	onRead atomic.Pointer[func()]
}

func (s *readHookStore) GetNode(ctx context.Context, id string) (*store.Node, error) {
	n, err := s.Store.GetNode(ctx, id)
	if f := s.onRead.Load(); f != nil {
		(*f)()
	}
	return n, err
}

// TestLookupWaitsForTheTaskHoldingTheNode: an agent that boots while the
// deploy task that powered it on still holds the node (a lab machine boots
// at once) gets its token when that task releases the node, as Ironic's
// get_node_with_token waits for the lock (upgrade_lock's retries), not
// "locked" and a second lookup after its lookup interval.
func TestLookupWaitsForTheTaskHoldingTheNode(t *testing.T) {
	ctx := context.Background()
	inner, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "ironlab.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inner.Close() })
	gp := &gatedPower{bmcPower: &bmcPower{state: map[string]power.State{}}, entered: make(chan struct{}, 8), gate: make(chan struct{})}
	var once sync.Once
	st := &readHookStore{Store: inner}
	// Bounded well beyond the task's end, so the test cannot pass by time.
	c := conductor.New(st, conductor.Config{Host: "c1", LookupLockWait: time.Minute, RestrictLookup: true,
		PowerInterfaces:  map[string]power.Interface{"ipmitool": gp},
		DeployInterfaces: map[string]deploy.Interface{"agent": agent.New(agent.Config{})}})
	t.Cleanup(c.Close)
	t.Cleanup(func() { once.Do(func() { close(gp.gate) }) })
	n := &store.Node{Name: "node-0", Driver: "agent_ipmitool", InstanceInfo: map[string]any{
		"image_source": "http://127.0.0.1:8080/images/disk.raw", "image_os_hash_algo": "sha256", "image_os_hash_value": "abc123"}}
	if err := c.CreateNode(ctx, n, states.Available); err != nil {
		t.Fatal(err)
	}
	if err := inner.CreatePort(ctx, &store.Port{Address: mac, NodeUUID: n.UUID, PXEEnabled: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.ProvisionAction(ctx, n.UUID, "active", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gp.entered: // the deploy task holds the node, powering it on
	case <-time.After(30 * time.Second):
		t.Fatal("the deploy never powered the node on")
	}
	// The agent's lookup reads the node while the task holds it; the
	// power-on ends right after that read, so the task still holds the
	// node (it has its writes to do) when the lookup asks for its lock.
	open := func() { once.Do(func() { close(gp.gate) }) }
	st.onRead.Store(&open)
	got, token, err := c.Lookup(ctx, conductor.LookupQuery{MACs: []string{mac}, Dialect: conductor.DialectV1, Restrict: true, IssueToken: true})
	if err != nil {
		t.Fatalf("lookup while the deploy task held the node: %v, want the token once the task ended", err)
	}
	if token == "" || token == conductor.MaskedToken || got.Agent.Token != token {
		t.Errorf("lookup: token %q, node's token %q; want a new token on the node", token, got.Agent.Token)
	}
	// The node as the task left it, not as read before the wait.
	if got.ProvisionState != states.DeployWait || got.PowerState != string(power.On) {
		t.Errorf("lookup returned the node in %s, power %q; want wait call-back, power on", got.ProvisionState, got.PowerState)
	}
	c.Wait()
	if stored, _ := c.GetNode(ctx, n.UUID); stored.Agent.Token != token || stored.Reservation != "" {
		t.Errorf("stored token %q, reservation %q; want %q and none", stored.Agent.Token, stored.Reservation, token)
	}
}
