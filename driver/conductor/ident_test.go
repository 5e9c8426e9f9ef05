package conductor_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
)

// countingStore counts whole-node reads.
type countingStore struct {
	store.Store
	reads atomic.Int64
}

func (s *countingStore) GetNode(ctx context.Context, id string) (*store.Node, error) {
	s.reads.Add(1)
	return s.Store.GetNode(ctx, id)
}

func (s *countingStore) GetNodeByName(ctx context.Context, name string) (*store.Node, error) {
	s.reads.Add(1)
	return s.Store.GetNodeByName(ctx, name)
}

func newCounting(t *testing.T) (*conductor.Conductor, *countingStore) {
	t.Helper()
	st := &countingStore{Store: openStore(t)}
	c := newConductor(t, st, conductor.Config{Host: "c1", LockRetryInterval: time.Millisecond, FastTrack: true})
	return c, st
}

// TestActionsByUUIDAndName: an action names its node by UUID or by name;
// by UUID the node is read once (under its lock), and a UUID or name that
// no node has is "could not be found", 404.
func TestActionsByUUIDAndName(t *testing.T) {
	ctx := context.Background()
	c, st := newCounting(t)
	n := &store.Node{Name: "node-0", Driver: "fake_agent"}
	if err := c.CreateNode(ctx, n, states.Manageable); err != nil {
		t.Fatal(err)
	}
	st.reads.Store(0)
	if err := c.SetMaintenance(ctx, n.UUID, true, "by uuid"); err != nil {
		t.Fatal(err)
	}
	if r := st.reads.Load(); r != 1 {
		t.Errorf("maintenance by UUID read the node %d times, want 1", r)
	}
	if err := c.SetMaintenance(ctx, "node-0", false, ""); err != nil {
		t.Fatalf("maintenance off by name: %v", err)
	}
	got, err := c.GetNode(ctx, n.UUID)
	if err != nil || got.Maintenance || got.Reservation != "" {
		t.Fatalf("after maintenance off by name: maintenance %v, reservation %q (%v)", got.Maintenance, got.Reservation, err)
	}
	for _, ident := range []string{"6f1c2b9e-1111-4a8e-9a59-0d4b3f2a7c10", "no-such-node"} {
		err := c.SetMaintenance(ctx, ident, true, "x")
		if !errors.Is(err, conductor.ErrNotFound) || !strings.Contains(err.Error(), "node "+ident+" could not be found") {
			t.Errorf("maintenance of %s: %v, want node %s could not be found (ErrNotFound)", ident, err, ident)
		}
	}
	if err := c.ProvisionAction(ctx, n.UUID, "provide", nil); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	if got, _ := c.GetNode(ctx, n.UUID); got.ProvisionState != states.Available {
		t.Errorf("after provide by UUID: %s, want available", got.ProvisionState)
	}
}

// TestLookupIssuesTokenWithOneRead: the lookup that issues the agent's
// token returns the node with that token, read once; the next lookup gets
// the masked token.
func TestLookupIssuesTokenWithOneRead(t *testing.T) {
	ctx := context.Background()
	c, st := newCounting(t)
	n := &store.Node{Name: "node-0", Driver: "fake_agent"}
	if err := c.CreateNode(ctx, n, states.Available); err != nil {
		t.Fatal(err)
	}
	st.reads.Store(0)
	got, token, err := c.Lookup(ctx, conductor.LookupQuery{NodeUUID: n.UUID, Dialect: conductor.DialectV1, IssueToken: true})
	if err != nil {
		t.Fatal(err)
	}
	if token == "" || token == conductor.MaskedToken || got.Agent.Token != token {
		t.Fatalf("lookup: token %q, node's token %q; want a new token on the node", token, got.Agent.Token)
	}
	if r := st.reads.Load(); r != 1 {
		t.Errorf("lookup read the node %d times, want 1", r)
	}
	stored, _ := c.GetNode(ctx, n.UUID)
	if stored.Agent.Token != token {
		t.Errorf("stored token %q, want %q", stored.Agent.Token, token)
	}
	_, again, err := c.Lookup(ctx, conductor.LookupQuery{NodeUUID: n.UUID, Dialect: conductor.DialectV1, IssueToken: true})
	if err != nil || again != conductor.MaskedToken {
		t.Errorf("second lookup: token %q (%v), want %q", again, err, conductor.MaskedToken)
	}
}
