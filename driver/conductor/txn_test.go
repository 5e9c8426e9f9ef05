package conductor_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/deploy/agent"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/power/fake"
	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/driver/store/sqlite"
)

var errDead = errors.New("store died")

// dyingStore passes writes through until the limit-th one, then refuses
// every call: the process died there. It also checks that a write that
// changes a node's provision state carries the event recording it.
type dyingStore struct {
	store.Store
	t      *testing.T
	mu     sync.Mutex
	writes int
	limit  int // 0: never dies
}

func (s *dyingStore) write() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.limit > 0 && s.writes >= s.limit {
		return errDead
	}
	s.writes++
	return nil
}

func (s *dyingStore) dead() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limit > 0 && s.writes >= s.limit
}

func recorded(events []*store.Event, from, to string) bool {
	for _, e := range events {
		if e.Kind == store.KindProvision && e.FromState == from && e.ToState == to {
			return true
		}
	}
	return false
}

func (s *dyingStore) CreateNode(ctx context.Context, n *store.Node, events ...*store.Event) error {
	if err := s.write(); err != nil {
		return err
	}
	if !recorded(events, "", n.ProvisionState) {
		s.t.Errorf("node %s created in %q without its create event (events %v)", n.UUID, n.ProvisionState, events)
	}
	return s.Store.CreateNode(ctx, n, events...)
}

func (s *dyingStore) UpdateNode(ctx context.Context, n *store.Node, events ...*store.Event) error {
	if err := s.write(); err != nil {
		return err
	}
	if cur, err := s.Store.GetNode(ctx, n.UUID); err == nil && cur.ProvisionState != n.ProvisionState && !recorded(events, cur.ProvisionState, n.ProvisionState) {
		s.t.Errorf("node %s saved %q -> %q without its event (events %v)", n.UUID, cur.ProvisionState, n.ProvisionState, events)
	}
	return s.Store.UpdateNode(ctx, n, events...)
}

func (s *dyingStore) AddEvent(ctx context.Context, e *store.Event) error {
	if err := s.write(); err != nil {
		return err
	}
	return s.Store.AddEvent(ctx, e)
}

func (s *dyingStore) GetNode(ctx context.Context, id string) (*store.Node, error) {
	if s.dead() {
		return nil, errDead
	}
	return s.Store.GetNode(ctx, id)
}

// TestCrashLeavesNoStateWithoutEvent enrolls, deploys and undeploys a node
// (with cleaning) and kills the store after each write in turn. Whatever
// the moment, the database that survives holds every node's provision state
// as the last transition of its history: nothing for a restart to repair.
func TestCrashLeavesNoStateWithoutEvent(t *testing.T) {
	ctx := context.Background()
	for limit := 0; ; limit++ {
		path := filepath.Join(t.TempDir(), "ironlab.db")
		writes, done := runFlow(t, path, limit)
		st, err := sqlite.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		nodes, err := st.ListNodes(ctx, store.NodeFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			evs, err := st.ListEvents(ctx, n.UUID)
			if err != nil {
				t.Fatal(err)
			}
			last := ""
			for _, e := range evs {
				if e.Kind == store.KindProvision && e.FromState != e.ToState {
					last = e.ToState
				}
			}
			if last != n.ProvisionState {
				t.Errorf("killed after write %d: node in %q, its history ends in %q", limit, n.ProvisionState, last)
			}
		}
		// A restart finds nothing unrecorded.
		c := conductor.New(st, conductor.Config{Host: "test-conductor", PowerInterfaces: map[string]power.Interface{"fake": fake.New()},
			DeployInterfaces: map[string]deploy.Interface{"agent": agent.New(agent.Config{})}})
		if err := c.Recover(ctx); err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			evs, _ := st.ListEvents(ctx, n.UUID)
			for _, e := range evs {
				if e.Event == conductor.EventUnrecorded {
					t.Errorf("killed after write %d: restart repaired %s -> %s", limit, e.FromState, e.ToState)
				}
			}
		}
		c.Close()
		st.Close()
		if limit == 0 {
			if !done {
				t.Fatal("the flow does not reach available without a crash")
			}
			t.Logf("the flow makes %d writes", writes)
		}
		if limit > 0 && done || limit > 200 {
			return
		}
	}
}

// runFlow runs enroll -> deploy -> active -> undeploy -> clean -> available
// against a store that dies after limit writes; it reports the writes made
// and whether the node reached available.
func runFlow(t *testing.T, path string, limit int) (int, bool) {
	ctx := context.Background()
	inner, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	st := &dyingStore{Store: inner, t: t, limit: limit}
	c := conductor.New(st, conductor.Config{Host: "test-conductor", LockRetryInterval: time.Millisecond, PowerRetries: 1,
		AutomatedClean: true, AgentTokenRequired: true, RestrictLookup: true,
		PowerInterfaces:  map[string]power.Interface{"fake": fake.New()},
		DeployInterfaces: map[string]deploy.Interface{"agent": agent.New(agent.Config{PollInterval: time.Millisecond})}})
	defer c.Close()
	a, srv := newAgent(t)
	defer srv.Close()
	n := &store.Node{Name: "node-0", Driver: "fake_agent", InstanceInfo: map[string]any{
		"image_source": "http://127.0.0.1:8080/images/disk.raw", "image_os_hash_algo": "sha256", "image_os_hash_value": "abc123"}}
	if err := c.CreateNode(ctx, n, states.Available); err != nil {
		return st.writes, false
	}
	if err := st.CreatePort(ctx, &store.Port{Address: mac, NodeUUID: n.UUID, PXEEnabled: true}); err != nil {
		return st.writes, false
	}
	heartbeat := func() {
		a.mu.Lock()
		token := a.token
		a.mu.Unlock()
		_ = c.Heartbeat(ctx, conductor.Heartbeat{Ident: n.UUID, AgentURL: srv.URL, AgentToken: token, AgentVersion: "10.0.0", Dialect: conductor.DialectV1})
		c.Wait()
	}
	lookup := func() {
		_, token, err := c.Lookup(ctx, conductor.LookupQuery{MACs: []string{mac}, Dialect: conductor.DialectV1, Restrict: true, IssueToken: true})
		if err == nil && token != conductor.MaskedToken {
			a.mu.Lock()
			a.token = token
			a.mu.Unlock()
		}
	}
	for _, step := range []func(){
		func() { _ = c.ProvisionAction(ctx, n.UUID, "active", nil); c.Wait() },
		lookup, heartbeat,
		func() { a.finish(agent.StatusSucceeded, "") }, heartbeat,
		func() { _ = c.ProvisionAction(ctx, n.UUID, "deleted", nil); c.Wait() },
		lookup, heartbeat,
		func() { a.finish(agent.StatusSucceeded, "") }, heartbeat,
		func() { a.finish(agent.StatusSucceeded, "") }, heartbeat,
	} {
		if st.dead() {
			break
		}
		step()
	}
	got, err := inner.GetNode(ctx, n.UUID)
	if err != nil {
		return st.writes, false
	}
	if limit == 0 && got.ProvisionState != states.Available {
		t.Errorf("without a crash the node ends in %q (last_error %q)", got.ProvisionState, got.LastError)
	}
	return st.writes, got.ProvisionState == states.Available && !st.dead()
}
