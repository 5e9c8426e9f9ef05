package conductor_test

import (
	"context"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
)

// writeCounter counts the store's writes by kind.
type writeCounter struct {
	store.Store
	mu     sync.Mutex
	writes []string
}

func (s *writeCounter) note(w string) {
	s.mu.Lock()
	s.writes = append(s.writes, w)
	s.mu.Unlock()
}

func (s *writeCounter) UpdateNode(ctx context.Context, n *store.Node, events ...*store.Event) error {
	s.note("UpdateNode")
	return s.Store.UpdateNode(ctx, n, events...)
}

func (s *writeCounter) RecordHeartbeat(ctx context.Context, id string, hb store.Heartbeat) (store.Agent, error) {
	s.note("RecordHeartbeat")
	return s.Store.RecordHeartbeat(ctx, id, hb)
}

func (s *writeCounter) IssueAgentToken(ctx context.Context, id, token string) (bool, error) {
	s.note("IssueAgentToken")
	return s.Store.IssueAgentToken(ctx, id, token)
}

func (s *writeCounter) AddEvent(ctx context.Context, e *store.Event) error {
	s.note("AddEvent " + e.Event)
	return s.Store.AddEvent(ctx, e)
}

// TestHeartbeatIsOneSmallWrite: the agent's lookup and heartbeats of a node
// with nothing to do write only the agent's fields (and the history), never
// the node: no read-merge of its maps, nothing a locked save could undo.
func TestHeartbeatIsOneSmallWrite(t *testing.T) {
	ctx := context.Background()
	l := newLab(t, nil)
	n := l.enroll(t, states.Available)
	wc := &writeCounter{Store: l.st}
	c := conductor.New(wc, l.c.Config())
	t.Cleanup(c.Close)
	_, token, err := c.Lookup(ctx, conductor.LookupQuery{NodeUUID: n.UUID, Dialect: conductor.DialectV1, IssueToken: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := c.Heartbeat(ctx, conductor.Heartbeat{Ident: n.UUID, AgentURL: l.url, AgentToken: token, AgentVersion: "10.0.0", Dialect: conductor.DialectV1}); err != nil {
			t.Fatal(err)
		}
	}
	c.Wait()
	want := []string{"IssueAgentToken", "AddEvent lookup", "RecordHeartbeat", "AddEvent heartbeat", "RecordHeartbeat", "RecordHeartbeat"}
	if diff := cmp.Diff(want, wc.writes); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	got := l.node(t, n.UUID)
	if got.Agent.URL != l.url || got.Agent.Version != "10.0.0" || got.Agent.Token == "" {
		t.Errorf("agent after the heartbeats: %+v", got.Agent)
	}
}
