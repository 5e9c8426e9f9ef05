package sqlite

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
)

// TestConcurrentHeartbeatsEachRecorded: heartbeats that arrive together are
// written in shared transactions, but each gets its own answer: the
// accepted ones are stored (with the agent fields as they were before
// each, in order per node), a refused one or one of an unknown node fails
// alone.
func TestConcurrentHeartbeatsEachRecorded(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	const nodes, rounds = 8, 25
	for i := range nodes {
		if err := s.CreateNode(ctx, &store.Node{UUID: fmt.Sprintf("n%d", i), Name: fmt.Sprintf("node-%d", i), Driver: "fake_agent",
			ProvisionState: states.CleanWait}); err != nil {
			t.Fatal(err)
		}
	}
	refused := errors.New("refused")
	base := time.Unix(1700000000, 0).UTC()
	var wg sync.WaitGroup
	errs := make(chan error, nodes*rounds*3)
	for i := range nodes {
		wg.Add(3)
		go func() { // the node's agent: by UUID, then by name, in order
			defer wg.Done()
			for k := range rounds {
				ident := fmt.Sprintf("n%d", i)
				if k%2 == 1 {
					ident = fmt.Sprintf("node-%d", i)
				}
				at := base.Add(time.Duration(k+1) * time.Second)
				prev, err := s.RecordHeartbeat(ctx, ident, store.Heartbeat{URL: fmt.Sprintf("http://127.0.0.1:9/%d", i), Version: fmt.Sprint(k),
					Dialect: "v1", At: at, TouchStates: []string{states.CleanWait}, Check: func(n *store.Node) error {
						if n.UUID != fmt.Sprintf("n%d", i) {
							return fmt.Errorf("check of %s saw node %s", ident, n.UUID)
						}
						return nil
					}})
				if err != nil {
					errs <- fmt.Errorf("heartbeat %d of node %d: %w", k, i, err)
					return
				}
				if k > 0 && (prev.Version != fmt.Sprint(k-1) || !prev.LastHeartbeat.Equal(at.Add(-time.Second))) {
					errs <- fmt.Errorf("heartbeat %d of node %d: agent before it %+v, want version %d at %v", k, i, prev, k-1, at.Add(-time.Second))
				}
			}
		}()
		go func() { // refused by its check: never written
			defer wg.Done()
			for range rounds {
				_, err := s.RecordHeartbeat(ctx, fmt.Sprintf("n%d", i), store.Heartbeat{URL: "http://evil", Version: "bad", Dialect: "v1",
					At: base.Add(time.Hour), Check: func(*store.Node) error { return refused }})
				if err != refused {
					errs <- fmt.Errorf("refused heartbeat of node %d: got %v, want the check's error", i, err)
				}
			}
		}()
		go func() { // unknown nodes
			defer wg.Done()
			for range rounds {
				if _, err := s.RecordHeartbeat(ctx, fmt.Sprintf("ghost-%d", i), store.Heartbeat{URL: "http://x", At: base}); !errors.Is(err, store.ErrNotFound) {
					errs <- fmt.Errorf("heartbeat of an unknown node: got %v, want ErrNotFound", err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range nodes {
		n, err := s.GetNode(ctx, fmt.Sprintf("n%d", i))
		if err != nil {
			t.Fatal(err)
		}
		last := base.Add(rounds * time.Second)
		if n.Agent.URL != fmt.Sprintf("http://127.0.0.1:9/%d", i) || n.Agent.Version != fmt.Sprint(rounds-1) || !n.Agent.LastHeartbeat.Equal(last) ||
			!n.ProvisionUpdatedAt.Equal(last) {
			t.Errorf("node %d after the heartbeats: agent %+v, provision_updated_at %v; want the last heartbeat's (version %d at %v)",
				i, n.Agent, n.ProvisionUpdatedAt, rounds-1, last)
		}
	}
}

// TestHeartbeatGivesUpWhileQueued: a heartbeat whose request is canceled
// while it waits for the writer returns the context's error, unwritten,
// and the heartbeats behind it are still written.
func TestHeartbeatGivesUpWhileQueued(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	for _, id := range []string{"n1", "n2"} {
		if err := s.CreateNode(ctx, &store.Node{UUID: id, Driver: "fake_agent", ProvisionState: states.Available}); err != nil {
			t.Fatal(err)
		}
	}
	// The writer is held, as a long transaction would hold it.
	leave, err := s.gate.enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1700000000, 0).UTC()
	lead := make(chan error, 1)
	go func() {
		_, err := s.RecordHeartbeat(ctx, "n1", store.Heartbeat{URL: "http://127.0.0.1:9/1", Dialect: "v1", At: at})
		lead <- err
	}()
	waitHeartbeatsQueued(t, s, 1)
	cctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() {
		_, err := s.RecordHeartbeat(cctx, "n2", store.Heartbeat{URL: "http://127.0.0.1:9/2", Dialect: "v1", At: at})
		gaveUp <- err
	}()
	waitHeartbeatsQueued(t, s, 2)
	cancel()
	select {
	case err := <-gaveUp:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("canceled queued heartbeat: got %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a canceled heartbeat still waits for the writer")
	}
	leave()
	select {
	case err := <-lead:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first heartbeat was never written")
	}
	if n, _ := s.GetNode(ctx, "n1"); n.Agent.URL != "http://127.0.0.1:9/1" {
		t.Errorf("n1's agent = %+v, want the heartbeat's", n.Agent)
	}
	if n, _ := s.GetNode(ctx, "n2"); n.Agent.URL != "" {
		t.Errorf("n2's agent = %+v, want none (its heartbeat gave up)", n.Agent)
	}
}

// waitHeartbeatsQueued waits until n heartbeats are queued.
func waitHeartbeatsQueued(t *testing.T, s *SQLite, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The test holds the gate: a leader waits at it, its batch not
		// taken yet, and counts as queued.
		s.hbq.mu.Lock()
		q := waiting(&s.hbq.leaderQueue)
		if s.hbq.leading {
			q++
		}
		s.hbq.mu.Unlock()
		if q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d heartbeats queued, want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHeartbeatBatchFailureIsOneHeartbeats: a heartbeat whose UPDATE fails
// (here a trigger refuses it) fails alone; the ones batched with it are
// written again each on its own and succeed.
func TestHeartbeatBatchFailureIsOneHeartbeats(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	for _, id := range []string{"n1", "n2", "n3"} {
		if err := s.CreateNode(ctx, &store.Node{UUID: id, Driver: "fake_agent", ProvisionState: states.Available}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.db.ExecContext(ctx, `CREATE TRIGGER refuse BEFORE UPDATE OF agent_url ON nodes WHEN NEW.agent_url = 'http://refused'
		BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END`); err != nil {
		t.Fatal(err)
	}
	leave, err := s.gate.enter(ctx) // all three queue, then go as one batch
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1700000000, 0).UTC()
	urls := map[string]string{"n1": "http://127.0.0.1:9/1", "n2": "http://refused", "n3": "http://127.0.0.1:9/3"}
	results := make(map[string]chan error)
	for i, id := range []string{"n1", "n2", "n3"} {
		results[id] = make(chan error, 1)
		go func() {
			_, err := s.RecordHeartbeat(ctx, id, store.Heartbeat{URL: urls[id], Dialect: "v1", At: at})
			results[id] <- err
		}()
		waitHeartbeatsQueued(t, s, i+1)
	}
	leave()
	for _, id := range []string{"n1", "n2", "n3"} {
		select {
		case err := <-results[id]:
			if id == "n2" {
				if err == nil || !strings.Contains(err.Error(), "refused by the test trigger") {
					t.Errorf("heartbeat of %s: got %v, want the trigger's error", id, err)
				}
			} else if err != nil {
				t.Errorf("heartbeat of %s batched with a failing one: %v", id, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("heartbeat of %s never answered", id)
		}
	}
	for id, want := range map[string]string{"n1": urls["n1"], "n2": "", "n3": urls["n3"]} {
		if n, _ := s.GetNode(ctx, id); n.Agent.URL != want {
			t.Errorf("%s's agent_url = %q, want %q", id, n.Agent.URL, want)
		}
	}
}

// TestHeartbeatBatchSeesEarlierWrites: the nodes of a batch are read
// together before its writes, but a heartbeat after another one of the
// same node in the batch (by UUID or by name) checks and answers the
// agent as that one wrote it; a refused heartbeat writes nothing for the
// next, and an unknown node fails alone.
func TestHeartbeatBatchSeesEarlierWrites(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	for i := 1; i <= 3; i++ {
		if err := s.CreateNode(ctx, &store.Node{UUID: fmt.Sprintf("n%d", i), Name: fmt.Sprintf("node-%d", i), Driver: "fake_agent",
			ProvisionState: states.Available}); err != nil {
			t.Fatal(err)
		}
	}
	refused := errors.New("refused")
	type beat struct {
		ident, version string
		refuse         bool
		// The node and agent version the check must see, and the answer.
		wantUUID, wantSeen string
		wantErr            error
	}
	beats := []beat{
		{ident: "n1", version: "1", wantUUID: "n1", wantSeen: ""},
		{ident: "node-1", version: "2", wantUUID: "n1", wantSeen: "1"},
		{ident: "n1", version: "3", wantUUID: "n1", wantSeen: "2"},
		{ident: "n2", version: "bad", refuse: true, wantUUID: "n2", wantSeen: "", wantErr: refused},
		{ident: "n2", version: "5", wantUUID: "n2", wantSeen: ""},
		{ident: "ghost", version: "6", wantErr: store.ErrNotFound},
		{ident: "n3", version: "7", wantUUID: "n3", wantSeen: ""},
	}
	leave, err := s.gate.enter(ctx) // all queue, then go as one batch
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1700000000, 0).UTC()
	type answer struct {
		seen *store.Node
		prev store.Agent
		err  error
	}
	answers := make([]chan answer, len(beats))
	for i, b := range beats {
		answers[i] = make(chan answer, 1)
		go func() {
			var seen *store.Node
			prev, err := s.RecordHeartbeat(ctx, b.ident, store.Heartbeat{URL: "http://127.0.0.1:9/" + b.wantUUID, Version: b.version,
				Dialect: "v1", At: at, Check: func(n *store.Node) error {
					seen = n
					if b.refuse {
						return refused
					}
					return nil
				}})
			answers[i] <- answer{seen, prev, err}
		}()
		waitHeartbeatsQueued(t, s, i+1)
	}
	s.hbq.mu.Lock()
	batches0 := s.hbq.batches
	s.hbq.mu.Unlock()
	leave()
	for i, b := range beats {
		var a answer
		select {
		case a = <-answers[i]:
		case <-time.After(10 * time.Second):
			t.Fatalf("heartbeat %d (%s) never answered", i, b.ident)
		}
		if !errors.Is(a.err, b.wantErr) {
			t.Errorf("heartbeat %d (%s): got %v, want %v", i, b.ident, a.err, b.wantErr)
		}
		if b.wantUUID == "" {
			continue
		}
		if a.seen == nil || a.seen.UUID != b.wantUUID || a.seen.Agent.Version != b.wantSeen {
			t.Errorf("heartbeat %d (%s): check saw %+v, want node %s with agent version %q", i, b.ident, a.seen, b.wantUUID, b.wantSeen)
		}
		if a.err == nil && a.prev.Version != b.wantSeen {
			t.Errorf("heartbeat %d (%s): agent before it %+v, want version %q", i, b.ident, a.prev, b.wantSeen)
		}
	}
	s.hbq.mu.Lock()
	if got := s.hbq.batches - batches0; got != 1 {
		t.Errorf("%d batches, want the 7 heartbeats in one", got)
	}
	s.hbq.mu.Unlock()
	for id, want := range map[string]string{"n1": "3", "n2": "5", "n3": "7"} {
		n, err := s.GetNode(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if n.Agent.Version != want || n.Agent.URL != "http://127.0.0.1:9/"+id || !n.Agent.LastHeartbeat.Equal(at) {
			t.Errorf("%s's agent = %+v, want version %s, its URL, the heartbeat's time", id, n.Agent, want)
		}
	}
}
