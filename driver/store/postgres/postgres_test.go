package postgres

import (
	"context"
	"errors"
	"testing"

	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/driver/store/storetest"
	"github.com/ironlab/ironlab/scenarios/labtest/pgtest"
)

func open(t *testing.T, srv *pgtest.Server) *Postgres {
	t.Helper()
	s, err := Open(context.Background(), srv.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	srv := pgtest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, srv) })
}

func TestIsDSN(t *testing.T) {
	for in, want := range map[string]bool{
		"postgres://u@127.0.0.1/db": true, "postgresql://127.0.0.1/db": true,
		".state/ironlab.db": false, "/tmp/postgres://x": false, "": false,
	} {
		if got := IsDSN(in); got != want {
			t.Errorf("IsDSN(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestTwoConductorsMigrateOnce: conductors starting at once on an empty
// database both open it (the advisory lock lets one migrate), and a
// reopen keeps the schema and the data.
func TestTwoConductorsMigrateOnce(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	errc := make(chan error, 2)
	opened := make(chan *Postgres, 2)
	for range 2 {
		go func() {
			s, err := Open(ctx, dsn)
			errc <- err
			opened <- s
		}()
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatalf("concurrent open: %v", err)
		}
		if s := <-opened; s != nil {
			defer s.Close()
		}
	}
	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateNode(ctx, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "enroll"}); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.GetNode(ctx, "n1"); err != nil {
		t.Errorf("node after reopen: %v", err)
	}
}

// TestEventFailureRollsBack: an event insert that fails leaves neither the
// state nor the event.
func TestEventFailureRollsBack(t *testing.T) {
	ctx := context.Background()
	s := open(t, pgtest.Start(t))
	boom := errors.New("killed before the event insert")
	ev := func(from, to, name string) *store.Event {
		return &store.Event{NodeUUID: "n1", Kind: store.KindProvision, FromState: from, ToState: to, Event: name}
	}
	s.beforeEvent = func(*store.Event) error { return boom }
	if err := s.CreateNode(ctx, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "enroll"}, ev("", "enroll", "create")); !errors.Is(err, boom) {
		t.Fatalf("create with a failing event: got %v, want %v", err, boom)
	}
	if _, err := s.GetNode(ctx, "n1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("node without its create event exists: %v", err)
	}
	s.beforeEvent = nil
	if err := s.CreateNode(ctx, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "enroll"}, ev("", "enroll", "create")); err != nil {
		t.Fatal(err)
	}
	n, _ := s.GetNode(ctx, "n1")
	n.ProvisionState = "manageable"
	s.beforeEvent = func(*store.Event) error { return boom }
	if err := s.UpdateNode(ctx, n, ev("enroll", "manageable", "manage")); !errors.Is(err, boom) {
		t.Fatalf("update with a failing event: got %v, want %v", err, boom)
	}
	if got, _ := s.GetNode(ctx, "n1"); got.ProvisionState != "enroll" {
		t.Errorf("state after the failed event = %q, want enroll (rolled back)", got.ProvisionState)
	}
	if err := s.DeleteNode(ctx, "n1", ev("enroll", "", "delete")); !errors.Is(err, boom) {
		t.Fatalf("delete with a failing event: got %v, want %v", err, boom)
	}
	if _, err := s.GetNode(ctx, "n1"); err != nil {
		t.Errorf("node gone though its delete event failed: %v", err)
	}
	s.beforeEvent = nil
	if evs, err := s.ListEvents(ctx, "n1"); err != nil || len(evs) != 1 {
		t.Errorf("history = %+v, %v; want the create event only", evs, err)
	}
}
