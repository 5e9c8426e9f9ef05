package sqlite

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
)

// waitWrites waits until a batch's leader waits at the gate (held by the
// test) and n more writes wait in s's write queue for the next batch.
func waitWrites(t *testing.T, s *SQLite, n int) {
	t.Helper()
	waitQueued(t, &s.gate, 1)
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.wq.mu.Lock()
		q := len(s.wq.queue)
		s.wq.mu.Unlock()
		if q == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued, want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Writes that queue together are committed in one transaction, yet each
// gets its own answer: a save by a host that does not hold the node fails
// with ErrNotHeld and changes nothing, a save whose event fails after its
// UPDATE is rolled back whole, a reservation of a reserved node is
// ErrLocked, and the other writes of the same batch are all kept.
func TestBatchedWritesEachAnswered(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	const nodes = 12
	for i := range nodes {
		if err := s.CreateNode(ctx, &store.Node{UUID: fmt.Sprintf("n%d", i), Name: fmt.Sprintf("node-%d", i), Driver: "fake_agent",
			ProvisionState: states.Manageable}); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := s.Reserve(ctx, fmt.Sprintf("n%d", i), "c1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	broken := errors.New("disk on fire")
	s.beforeEvent = func(e *store.Event) error {
		if e.NodeUUID == "n4" {
			return broken
		}
		return nil
	}
	// Hold the writer so that every write below queues for one batch.
	leave, err := s.gate.enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, nodes)
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("n%d", i)
			if i%2 == 1 { // not reserved: reserve it, or fail to (n1 twice)
				errs[i] = s.Reserve(ctx, id, "c2")
				return
			}
			n, err := s.GetNode(ctx, id)
			if err != nil {
				errs[i] = err
				return
			}
			n.ProvisionState, n.LastError = states.Available, "saved by c1"
			host := "c1"
			if i%4 == 2 {
				host = "c9" // holds nothing
			}
			errs[i] = s.UpdateNodeHeld(ctx, n, host, &store.Event{NodeUUID: id, Kind: store.KindProvision, Event: "saved by " + host})
		}()
	}
	lockedErr := make(chan error, 1)
	go func() { lockedErr <- s.Reserve(ctx, "n0", "c2") }()
	waitWrites(t, s, nodes)
	leave()
	wg.Wait()
	if err := <-lockedErr; !errors.Is(err, store.ErrLocked) {
		t.Errorf("reserve of n0 held by c1: %v, want ErrLocked", err)
	}
	for i := range nodes {
		id := fmt.Sprintf("n%d", i)
		n, err := s.GetNode(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := s.ListEvents(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case i%2 == 1:
			if errs[i] != nil || n.Reservation != "c2" {
				t.Errorf("%s: reserve by c2: %v, reservation %q", id, errs[i], n.Reservation)
			}
		case i == 4:
			if !errors.Is(errs[i], broken) || n.ProvisionState != states.Manageable || n.LastError != "" || len(evs) != 0 {
				t.Errorf("%s: save whose event failed: %v, state %q, last_error %q, %d events; want the error and nothing kept", id, errs[i], n.ProvisionState, n.LastError, len(evs))
			}
		case i%4 == 2:
			if !errors.Is(errs[i], store.ErrNotHeld) || n.ProvisionState != states.Manageable || len(evs) != 0 {
				t.Errorf("%s: save by c9: %v, state %q, %d events; want ErrNotHeld, manageable, none", id, errs[i], n.ProvisionState, len(evs))
			}
		default:
			if errs[i] != nil || n.ProvisionState != states.Available || n.LastError != "saved by c1" || len(evs) != 1 {
				t.Errorf("%s: save by c1: %v, state %q, last_error %q, %d events; want it saved with its event", id, errs[i], n.ProvisionState, n.LastError, len(evs))
			}
		}
	}
}

// A write whose context ends while it waits for its batch gives up with
// the context's error and is not written; the batch it would have joined
// is.
func TestQueuedWriteCancelled(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	for _, id := range []string{"a", "b"} {
		if err := s.CreateNode(ctx, &store.Node{UUID: id, Driver: "fake_agent", ProvisionState: states.Manageable}); err != nil {
			t.Fatal(err)
		}
	}
	leave, err := s.gate.enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- s.Reserve(ctx, "a", "c1") }() // leads: waits at the gate
	waitWrites(t, s, 0)
	cctx, cancel := context.WithCancel(ctx)
	second := make(chan error, 1)
	go func() { second <- s.Reserve(cctx, "b", "c1") }()
	waitWrites(t, s, 1)
	cancel()
	select {
	case err := <-second:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled write: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled write still waits")
	}
	leave()
	select {
	case err := <-first:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the leading write never got through")
	}
	for id, want := range map[string]string{"a": "c1", "b": ""} {
		n, err := s.GetNode(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if n.Reservation != want {
			t.Errorf("node %s reserved by %q, want %q", id, n.Reservation, want)
		}
	}
}

// The urgent writes (API requests) of a queue go into the batch first.
func TestWriteQueueTakesUrgentFirst(t *testing.T) {
	var q writeQueue
	leader := &writeReq{turn: make(chan struct{}), done: make(chan struct{})}
	if !q.join(leader) {
		t.Fatal("the first write does not lead")
	}
	var queued []*writeReq
	for i := range maxWriteBatch + 10 {
		r := &writeReq{urgent: i%3 == 0, turn: make(chan struct{}), done: make(chan struct{})}
		if q.join(r) {
			t.Fatal("a second leader")
		}
		queued = append(queued, r)
	}
	batch := q.take(leader)
	if len(batch) != maxWriteBatch || batch[0] != leader {
		t.Fatalf("batch of %d, first is the leader: %v; want %d, true", len(batch), batch[0] == leader, maxWriteBatch)
	}
	urgent := 0
	for _, r := range queued {
		if r.urgent {
			urgent++
		}
	}
	for i, r := range batch[1 : urgent+1] {
		if !r.urgent {
			t.Fatalf("batch write %d is not urgent, %d urgent ones queued", i+1, urgent)
		}
	}
	if len(q.queue) != len(queued)+1-maxWriteBatch {
		t.Fatalf("%d left queued, want %d", len(q.queue), len(queued)+1-maxWriteBatch)
	}
	for _, r := range q.queue {
		if r.urgent || r.taken {
			t.Fatalf("left queued: urgent %v, taken %v; want the last background writes", r.urgent, r.taken)
		}
	}
}
