package conductor_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
)

// committedThenCancelled is a store whose next Reserve writes the
// reservation and then reports the caller's cancellation, as pgx does
// when a request ends while PostgreSQL commits the UPDATE.
type committedThenCancelled struct {
	store.Store
	fail bool
}

func (s *committedThenCancelled) Reserve(ctx context.Context, id, host string) error {
	if err := s.Store.Reserve(ctx, id, host); err != nil || !s.fail {
		return err
	}
	s.fail = false
	return context.Canceled
}

// TestFailedReserveLeavesNoLock: a lock attempt whose reserve failed after
// the reservation was written leaves the node unreserved, so the
// conductor's next action on it is not refused by its own stale lock.
func TestFailedReserveLeavesNoLock(t *testing.T) {
	ctx := context.Background()
	inner := openStore(t)
	st := &committedThenCancelled{Store: inner}
	c := newConductor(t, st, conductor.Config{Host: "c1", LockRetryInterval: time.Millisecond})
	n := &store.Node{Name: "node-0", Driver: "fake_agent"}
	if err := c.CreateNode(ctx, n, states.Manageable); err != nil {
		t.Fatal(err)
	}
	st.fail = true
	if err := c.SetMaintenance(ctx, n.UUID, true, "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("maintenance with a failing reserve: %v, want the cancellation", err)
	}
	got, err := inner.GetNode(ctx, n.UUID)
	if err != nil || got.Reservation != "" {
		t.Fatalf("after the failed reserve: reservation %q (%v), want none", got.Reservation, err)
	}
	if err := c.SetMaintenance(ctx, n.UUID, true, "again"); err != nil {
		t.Errorf("the next action on the node: %v", err)
	}
}
