package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/driver/store/storetest"
	"github.com/ironlab/ironlab/scenarios/labtest"
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

// TestAHungTransactionDoesNotStallTakeovers: a conductor that hangs inside
// a transaction keeps its row locks. The store's sessions run with
// idle_in_transaction_session_timeout (10 s unless the DSN says otherwise),
// so the server ends such a session, and meanwhile a takeover does not wait
// on the locked row: StealReservation says ErrLocked at once.
func TestAHungTransactionDoesNotStallTakeovers(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var timeout string
	if err := s.db.QueryRow(ctx, `SHOW idle_in_transaction_session_timeout`).Scan(&timeout); err != nil || timeout != "10s" {
		t.Errorf("idle_in_transaction_session_timeout = %q, %v; want 10s", timeout, err)
	}
	if err := s.CreateNode(ctx, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "deploying"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, "n1", "c2"); err != nil {
		t.Fatal(err)
	}
	// c2 hangs in a transaction that wrote the node; its session ends after
	// 1 s idle (the DSN's override).
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	hung, err := pgx.Connect(ctx, dsn+sep+"idle_in_transaction_session_timeout=1s")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close(ctx)
	tx, err := hung.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE nodes SET last_error = 'half-done' WHERE uuid = 'n1'`); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.StealReservation(sctx, "n1", "c2", "c1"); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("steal of a row a hung transaction locks: got %v, want ErrLocked at once", err)
	}
	// The server ends the hung session; the steal then goes through.
	deadline := time.Now().Add(labtest.Patience)
	for {
		err := s.StealReservation(ctx, "n1", "c2", "c1")
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrLocked) || time.Now().After(deadline) {
			t.Fatalf("steal after the hung session's timeout: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := tx.Commit(ctx); err == nil {
		t.Error("the hung transaction committed after the server ended its session")
	}
	if n, _ := s.GetNode(ctx, "n1"); n.Reservation != "c1" || n.LastError != "" {
		t.Errorf("node after the takeover: reserved by %q, last_error %q; want c1 and the hung write rolled back", n.Reservation, n.LastError)
	}
}

// TestCheckedHeartbeatRereadsAChangedRow: a heartbeat's write applies only
// to the row as its check saw it; when the row changed in between (here a
// new agent token, written by another connection), the heartbeat reads and
// checks it again, and what it writes and returns follows the new row.
func TestCheckedHeartbeatRereadsAChangedRow(t *testing.T) {
	srv := pgtest.Start(t)
	s := open(t, srv)
	ctx := context.Background()
	if err := s.CreateNode(ctx, &store.Node{UUID: "n1", Name: "node-1", Driver: "fake_agent", ProvisionState: "available",
		Agent: store.Agent{Token: "old"}}); err != nil {
		t.Fatal(err)
	}
	var seen []string
	at := time.Unix(1700000000, 0).UTC()
	prev, err := s.RecordHeartbeat(ctx, "node-1", store.Heartbeat{URL: "http://127.0.0.1:9", Version: "10", Dialect: "v1", At: at,
		Check: func(n *store.Node) error {
			seen = append(seen, n.Agent.Token)
			if len(seen) == 1 {
				if _, err := s.db.Exec(ctx, `UPDATE nodes SET agent_token = 'new' WHERE uuid = 'n1'`); err != nil {
					t.Fatal(err)
				}
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, ",") != "old,new" || prev.Token != "new" {
		t.Errorf("checks saw tokens %v, the write returned %q; want old then new, new", seen, prev.Token)
	}
	n, err := s.GetNode(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if n.Agent.URL != "http://127.0.0.1:9" || n.Agent.Token != "new" || !n.Agent.LastHeartbeat.Equal(at) {
		t.Errorf("agent after the heartbeat: %+v", n.Agent)
	}
}

// BenchmarkDueNodes: storetest.BenchDueNodes on PostgreSQL.
func BenchmarkDueNodes(b *testing.B) {
	srv := pgtest.Start(b)
	s, err := Open(context.Background(), srv.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.BenchDueNodes(b, s)
}

// BenchmarkDueFastTrack: storetest.BenchDueFastTrack on PostgreSQL.
func BenchmarkDueFastTrack(b *testing.B) {
	srv := pgtest.Start(b)
	s, err := Open(context.Background(), srv.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.BenchDueFastTrack(b, s)
}
