package postgres

import (
	"context"
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

// failing is the store with storetest's EventFailer (the beforeEvent hook).
type failing struct{ *Postgres }

func (f failing) FailEvents(err error) {
	f.beforeEvent = nil
	if err != nil {
		f.beforeEvent = func(*store.Event) error { return err }
	}
}

// TestStore: the suite SQLite passes too (driver/store/storetest).
func TestStore(t *testing.T) {
	srv := pgtest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store { return failing{open(t, srv)} })
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
