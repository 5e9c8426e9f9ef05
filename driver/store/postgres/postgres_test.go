package postgres

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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

// statements records the SQL of every statement the pool sends.
type statements struct {
	mu   sync.Mutex
	sqls []string
}

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	s.sqls = append(s.sqls, strings.Join(strings.Fields(d.SQL), " "))
	s.mu.Unlock()
	return ctx
}

func (s *statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (s *statements) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sqls
	s.sqls = nil
	return out
}

// TestHeartbeatsAreOneStatement: an agent's heartbeat and a conductor's
// heartbeat, the writes every node and conductor makes all the time, are
// each one UPDATE sent to the server (no transaction around it, no read
// before it), so that heartbeat load grows with one round trip each.
func TestHeartbeatsAreOneStatement(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.Start(t)
	trace := &statements{}
	s, err := openWith(ctx, srv.NewDatabase(t), func(c *pgxpool.Config) { c.ConnConfig.Tracer = trace })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateNode(ctx, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "wait call-back"}); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterConductor(ctx, store.ConductorRecord{Hostname: "c1", Drivers: []string{"fake_agent"}, URL: "http://127.0.0.1:1", UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if trace.take() == nil {
		t.Fatal("the tracer saw no statement of the setup: it is not installed")
	}
	for i := range 3 {
		if _, err := s.RecordHeartbeat(ctx, "n1", store.Heartbeat{URL: "http://127.0.0.1:9999", Version: "10", Dialect: "v1",
			At: time.Now(), TouchStates: []string{"wait call-back"}}); err != nil {
			t.Fatal(err)
		}
		if got := trace.take(); len(got) != 1 || !strings.HasPrefix(got[0], "UPDATE nodes ") {
			t.Errorf("agent heartbeat %d sent %d statements, want one UPDATE nodes: %q", i, len(got), got)
		}
		if err := s.TouchConductor(ctx, "c1", time.Now()); err != nil {
			t.Fatal(err)
		}
		if got := trace.take(); len(got) != 1 || !strings.HasPrefix(got[0], "UPDATE conductors ") {
			t.Errorf("conductor heartbeat %d sent %d statements, want one UPDATE conductors: %q", i, len(got), got)
		}
	}
}
