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
// test) and n more writes than the leader wait, in its batch or in the
// queue for the next, since c0 (the write queue's counts before them).
func waitWrites(t *testing.T, s *SQLite, c0 queueCounts, n int) {
	t.Helper()
	waitQueued(t, &s.gate, 1)
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.wq.mu.Lock()
		q := int(s.wq.requests-c0.requests) + waiting(&s.wq)
		s.wq.mu.Unlock()
		if q == n+1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writes taken or queued, want %d", q, n+1)
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
	// Hold the writer so that every write below queues for one batch
	// (or two: the first leader's and the next).
	c0 := countsOf(&s.wq)
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
	waitWrites(t, s, c0, nodes)
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
	c0 := countsOf(&s.wq)
	leave, err := s.gate.enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- s.Reserve(ctx, "a", "c1") }() // leads: waits at the gate
	waitWrites(t, s, c0, 0)
	cctx, cancel := context.WithCancel(ctx)
	second := make(chan error, 1)
	go func() { second <- s.Reserve(cctx, "b", "c1") }()
	waitWrites(t, s, c0, 1)
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

// While urgent writes (API requests) are queued, a batch holds the leader
// and urgent writes only, in arrival order; then background writes go, up
// to maxWriteBatch a batch.
func TestWriteQueueTakesUrgentFirst(t *testing.T) {
	var q writeQueue
	leader := &writeReq{ticket: newTicket(false)}
	if !q.join(leader) {
		t.Fatal("the first write does not lead")
	}
	var urgent, background []*writeReq
	for i := range 8 * maxWriteBatch { // 2 * maxWriteBatch urgent
		r := &writeReq{ticket: newTicket(i%4 == 0)}
		if q.join(r) {
			t.Fatal("a second leader")
		}
		if r.urgent {
			urgent = append(urgent, r)
		} else {
			background = append(background, r)
		}
	}
	batch := q.take(leader, maxWriteBatch)
	if batch[0] != leader || len(batch) != maxWriteBatch {
		t.Fatalf("batch of %d, first is the leader: %v; want %d, true", len(batch), batch[0] == leader, maxWriteBatch)
	}
	for i, r := range batch[1:] {
		if r != urgent[i] {
			t.Fatalf("batch write %d is not urgent write %d (urgent %v)", i+1, i, r.urgent)
		}
	}
	// The next leader (the first still queued) takes the urgent rest only.
	batch = q.take(handOver(t, &q), maxWriteBatch)
	for _, r := range batch[1:] {
		if !r.urgent {
			t.Fatal("a background write in a batch while urgent ones wait")
		}
	}
	if len(batch) != maxWriteBatch {
		t.Fatalf("second batch of %d, want %d", len(batch), maxWriteBatch)
	}
	batch = q.take(handOver(t, &q), maxWriteBatch)
	if got, want := len(batch), 1+len(urgent)-2*(maxWriteBatch-1); got != want {
		t.Fatalf("third batch of %d, want %d (the last urgent ones)", got, want)
	}
	// Then the background ones, maxWriteBatch at a time.
	batch = q.take(handOver(t, &q), maxWriteBatch)
	if len(batch) != maxWriteBatch {
		t.Fatalf("fourth batch of %d, want %d", len(batch), maxWriteBatch)
	}
	for _, r := range batch {
		if r.urgent {
			t.Fatal("an urgent write left for the background batch")
		}
	}
	// What is left: the background writes after the fourth batch's (the
	// first three led the second to fourth batches, maxWriteBatch-1 more
	// joined the fourth), in order, each led in its turn.
	rest := background[3+maxWriteBatch-1:]
	if u, o := waitingIn(&q.urgentQ), waitingIn(&q.otherQ); u != 0 || o != len(rest) {
		t.Fatalf("%d urgent and %d other waiting, want 0 and %d background", u, o, len(rest))
	}
	for i, want := range rest {
		if got := handOver(t, &q); got != want {
			t.Fatalf("leader %d after the batches is not background write %d", i, len(background)-len(rest)+i)
		}
		if batch := q.take(want, 1); len(batch) != 1 {
			t.Fatalf("batch of %d, want 1", len(batch))
		}
	}
	if _, ok := q.handOver(); ok || q.leading || waiting(&q) != 0 {
		t.Fatalf("a leader from an empty queue (leading %v, %d waiting)", q.leading, waiting(&q))
	}
}

// handOver makes the first waiting request of q the leader, as the end of
// a batch does.
func handOver[R queued](t *testing.T, q *leaderQueue[R]) R {
	t.Helper()
	next, ok := q.handOver()
	if !ok {
		t.Fatal("no request waits to lead")
	}
	return next
}
