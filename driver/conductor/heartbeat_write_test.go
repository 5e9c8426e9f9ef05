package conductor_test

import (
	"context"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy/agent"
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
	c := newConductor(t, wc, l.c.Config())
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

func (s *writeCounter) UpdateNodeHeld(ctx context.Context, n *store.Node, host string, events ...*store.Event) error {
	s.note("UpdateNodeHeld")
	return s.Store.UpdateNodeHeld(ctx, n, host, events...)
}

func (s *writeCounter) Reserve(ctx context.Context, id, host string) error {
	s.note("Reserve")
	return s.Store.Reserve(ctx, id, host)
}

func (s *writeCounter) Release(ctx context.Context, id, host string, events ...*store.Event) error {
	w := "Release"
	for _, e := range events {
		w += " " + e.Event
	}
	s.note(w)
	return s.Store.Release(ctx, id, host, events...)
}

// TestNoChangeCallbackIsTwoWrites: a heartbeat of a deploying node whose
// agent is still busy costs the heartbeat's write, the lock, and one
// release that records the call-back (it was three writes behind the
// heartbeat: lock, event, release); the history still has the call-back,
// before the state changes of the call-back that finishes the deploy.
func TestNoChangeCallbackIsTwoWrites(t *testing.T) {
	l := newLab(t, nil)
	n := l.enroll(t, states.Available)
	l.act(t, n.UUID, "active", nil)
	l.lookup(t)
	l.heartbeat(t, n.UUID) // starts write_image
	wantState(t, l.node(t, n.UUID), states.DeployWait)

	wc := &writeCounter{Store: l.st}
	c := newConductor(t, wc, l.c.Config())
	l.c = c
	l.heartbeat(t, n.UUID) // write_image still RUNNING: nothing changes
	want := []string{"RecordHeartbeat", "Reserve", "Release call-back"}
	if diff := cmp.Diff(want, wc.writes); diff != "" {
		t.Errorf("writes of a no-change call-back (-want +got):\n%s", diff)
	}
	wantState(t, l.node(t, n.UUID), states.DeployWait)
	if got := l.node(t, n.UUID).Reservation; got != "" {
		t.Errorf("reservation after the call-back = %q, want none", got)
	}

	l.agent.finish(agent.StatusSucceeded, "")
	l.heartbeat(t, n.UUID)
	wantState(t, l.node(t, n.UUID), states.Active)
	evs, err := l.st.ListEvents(context.Background(), n.UUID)
	if err != nil {
		t.Fatal(err)
	}
	var seq []string
	for _, e := range evs {
		if e.Event == "call-back" || (e.Kind == store.KindProvision && e.FromState != e.ToState) {
			seq = append(seq, e.Event+":"+e.ToState)
		}
	}
	wantSeq := []string{"create:" + states.Available, "deploy:" + states.Deploying, "wait:" + states.DeployWait,
		"call-back:" + states.DeployWait, "resume:" + states.Deploying, "wait:" + states.DeployWait, // starts write_image
		"call-back:" + states.DeployWait, // nothing changed
		"call-back:" + states.DeployWait, "resume:" + states.Deploying, "done:" + states.Active}
	if diff := cmp.Diff(wantSeq, seq); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
}

// TestTaskEventsRideWithItsWrites: the call-back that starts write_image
// writes its history (the call-back, the agent commands) with its state
// changes, no event on its own; the history keeps the order things
// happened in.
func TestTaskEventsRideWithItsWrites(t *testing.T) {
	l := newLab(t, nil)
	n := l.enroll(t, states.Available)
	l.act(t, n.UUID, "active", nil)
	l.lookup(t)
	wc := &writeCounter{Store: l.st}
	c := newConductor(t, wc, l.c.Config())
	l.c = c
	l.heartbeat(t, n.UUID) // get_deploy_steps, then execute_deploy_step
	want := []string{"RecordHeartbeat", "AddEvent heartbeat", "Reserve", "UpdateNodeHeld", "UpdateNodeHeld", "Release"}
	if diff := cmp.Diff(want, wc.writes); diff != "" {
		t.Errorf("writes of the call-back that starts write_image (-want +got):\n%s", diff)
	}
	wantState(t, l.node(t, n.UUID), states.DeployWait)
	evs, err := l.st.ListEvents(context.Background(), n.UUID)
	if err != nil {
		t.Fatal(err)
	}
	var seq []string
	for i, e := range evs {
		if i > 0 && e.Time.Before(evs[i-1].Time) {
			t.Errorf("event %d (%s) at %s is before event %d (%s) at %s", i, e.Event, e.Time, i-1, evs[i-1].Event, evs[i-1].Time)
		}
		seq = append(seq, e.Event)
	}
	tail := []string{"call-back", "deploy.get_deploy_steps", "resume", "deploy.execute_deploy_step", "wait"}
	if len(seq) < len(tail) || !cmp.Equal(tail, seq[len(seq)-len(tail):]) {
		t.Errorf("history %v does not end with %v", seq, tail)
	}
}
