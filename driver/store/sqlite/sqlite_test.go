package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/driver/store/storetest"
)

func open(t testing.TB) (*SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ironlab.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// failing is the store with storetest's EventFailer (the beforeEvent hook).
type failing struct{ *SQLite }

func (f failing) FailEvents(err error) {
	f.beforeEvent = nil
	if err != nil {
		f.beforeEvent = func(*store.Event) error { return err }
	}
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := open(t)
		return failing{s}
	})
}

func TestReopenKeepsEverything(t *testing.T) {
	ctx := context.Background()
	s, path := open(t)
	n := &store.Node{UUID: "n1", Name: "node-0", Driver: "fake_agent", DriverInfo: map[string]any{"ipmi_port": float64(6230)},
		ProvisionState: "enroll"}
	if err := s.CreateNode(ctx, n, &store.Event{NodeUUID: "n1", Kind: store.KindProvision, ToState: "enroll", Event: "create"}); err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1700000000, 0).UTC()
	if _, err := s.RecordHeartbeat(ctx, "n1", store.Heartbeat{URL: "http://127.0.0.1:9999", Version: "10", Dialect: "v1", At: at}); err != nil {
		t.Fatal(err)
	}
	want, _ := s.GetNode(ctx, "n1")
	s.Close()
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.GetNode(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateApproxTime(0), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("node after reopen (-want +got):\n%s", diff)
	}
	if evs, err := s2.ListEvents(ctx, "n1"); err != nil || len(evs) != 1 || evs[0].Event != "create" {
		t.Errorf("events after reopen = %+v, %v", evs, err)
	}
}

// TestMigratesAgentFieldsOutOfJSON: a database of schema 1 kept the agent's
// fields in driver_info/driver_internal_info; opening it moves them into
// their columns and leaves the other keys.
func TestMigratesAgentFieldsOutOfJSON(t *testing.T) {
	ctx := context.Background()
	s := openSchema(t, 1,
		`INSERT INTO nodes (uuid, name, driver, driver_info, driver_internal_info, provision_state, created_at, updated_at) VALUES
		('n1', 'node-0', 'agent_ipmitool', '{"ipmi_address":"127.0.0.1","agent_url":"http://127.0.0.1:9999","agent_last_heartbeat":1700000000}',
		 '{"agent_url":"http://127.0.0.1:9999","agent_last_heartbeat":1700000000,"agent_version":"10.0.0","agent_dialect":"v1",
		   "agent_secret_token":"tok","watchdog_reboots":2,"watchdog_last_action":1700000100,"clean_version":{"m":"1"},
		   "clean_steps":[{"interface":"deploy","step":"erase_devices","priority":10,"abortable":true}],"clean_step_index":0,"keep":"me"}',
		 'clean wait', 1, 1),
		('n2', 'node-1', 'fake_agent', '{}', '{}', 'available', 2, 2)`)
	n, err := s.GetNode(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	want := store.Agent{URL: "http://127.0.0.1:9999", Token: "tok", LastHeartbeat: time.Unix(1700000000, 0), Version: "10.0.0",
		Dialect: "v1", WatchdogReboots: 2, WatchdogLastAction: time.Unix(1700000100, 0)}
	if diff := cmp.Diff(want, n.Agent, cmpopts.EquateApproxTime(0)); diff != "" {
		t.Errorf("agent after migration (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]any{"ipmi_address": "127.0.0.1"}, n.DriverInfo); diff != "" {
		t.Errorf("driver_info after migration (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]any{"keep": "me"}, n.DriverInternalInfo); diff != "" {
		t.Errorf("driver_internal_info after migration (-want +got):\n%s", diff)
	}
	wantPlan := &store.CleanPlan{Steps: []store.Step{{Interface: "deploy", Step: "erase_devices", Priority: 10, Abortable: true}},
		Index: 0, Started: true, Version: map[string]any{"m": "1"}}
	if diff := cmp.Diff(wantPlan, n.CleanPlan); diff != "" {
		t.Errorf("clean plan after migration (-want +got):\n%s", diff)
	}
	// The API shows them where they were.
	if v := n.DriverInternalInfoView(); v["agent_last_heartbeat"] != int64(1700000000) || v["agent_url"] != "http://127.0.0.1:9999" || v["watchdog_reboots"] != 2 {
		t.Errorf("driver_internal_info as shown = %v", v)
	}
	if n2, err := s.GetNode(ctx, "n2"); err != nil || n2.Agent != (store.Agent{}) || n2.CleanPlan != nil {
		t.Errorf("node without an agent after migration: %+v, %v", n2, err)
	}
}

// TestWriterCacheIsLarger: the writer connection keeps a 16 MiB page cache
// (the rows every write reads and rewrites, at 10,000 nodes), the readers
// SQLite's default; the writer checkpoints the WAL every 10,000 pages.
func TestWriterCacheIsLarger(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "ironlab.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct {
		name string
		db   *sql.DB
		want int
	}{{"writer", s.db, -16384}, {"reader", s.rdb, -2000}} {
		var got int
		if err := c.db.QueryRowContext(ctx, "PRAGMA cache_size").Scan(&got); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s connection: cache_size %d, want %d", c.name, got, c.want)
		}
	}
	var pages int
	if err := s.db.QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if pages != 10000 {
		t.Errorf("writer connection: wal_autocheckpoint %d, want 10000", pages)
	}
}

// TestMigratesEventsIntoChains: a database of schema 6 listed a node's
// events by the index of (node_uuid, id); opening it links them into
// chains (migration 7), the histories of live and deleted nodes alike, and
// new events go on their ends.
func TestMigratesEventsIntoChains(t *testing.T) {
	ctx := context.Background()
	s := openSchema(t, 6, `INSERT INTO nodes (uuid, name, driver, provision_state, created_at, updated_at) VALUES
		('n1', 'node-0', 'fake_agent', 'manageable', 1, 1), ('n2', 'node-1', 'fake_agent', 'enroll', 2, 2)`,
		// n1 and n2 in turn, and gone, a node deleted before the upgrade.
		`INSERT INTO events (uuid, node_uuid, time, kind, from_state, to_state, event) VALUES
		('e1', 'n1', 1, 'provision', '', 'enroll', 'create'), ('e2', 'gone', 2, 'provision', '', 'enroll', 'create'),
		('e3', 'n2', 3, 'provision', '', 'enroll', 'create'), ('e4', 'n1', 4, 'provision', 'enroll', 'manageable', 'manage'),
		('e5', 'gone', 5, 'provision', 'enroll', '', 'delete')`)
	if err := s.AddEvent(ctx, &store.Event{NodeUUID: "n1", Kind: store.KindPower, Event: "power on"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNode(ctx, &store.Node{UUID: "gone", Driver: "fake_agent", ProvisionState: "enroll"},
		&store.Event{NodeUUID: "gone", Kind: store.KindProvision, ToState: "enroll", Event: "create"}); err != nil {
		t.Fatal(err)
	}
	events := func(id string) []string {
		evs, err := s.ListEvents(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range evs {
			out = append(out, e.UUID+" "+e.Event)
		}
		return out
	}
	for id, want := range map[string][]string{
		"n1":   {"e1 create", "e4 manage", "* power on"},
		"n2":   {"e3 create"},
		"gone": {"e2 create", "e5 delete", "* create"},
	} {
		got := events(id)
		for i := range got {
			if i < len(want) && strings.HasPrefix(want[i], "* ") {
				got[i] = "* " + strings.SplitN(got[i], " ", 2)[1] // a new event's UUID is random
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("history of %s after migration (-want +got):\n%s", id, diff)
		}
	}
	var idx int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE name = 'events_node'`).Scan(&idx); err != nil || idx != 0 {
		t.Errorf("index events_node after migration: %d, %v; want dropped", idx, err)
	}
}

// TestRefusesANewerSchema: a database a newer ironlab migrated further is
// not opened (this one would write it as its own schema), and the error
// says whose it is; the file is left as it was.
func TestRefusesANewerSchema(t *testing.T) {
	ctx := context.Background()
	s, path := open(t)
	if _, err := s.db.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := Open(ctx, path)
	want := fmt.Sprintf("migrate store %s: schema %d is newer than this ironlab's (%d)", path, len(migrations)+1, len(migrations))
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Open of a newer schema: %v; want an error containing %q", err, want)
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v); err != nil || v != len(migrations)+1 {
		t.Errorf("schema_version after the refused open = %d, %v; want %d", v, err, len(migrations)+1)
	}
}

// openSchema writes a database of the schema version given (its
// migrations, then rows, the statements that fill it) as an older ironlab
// left it, and opens it, which migrates it.
func openSchema(t *testing.T, version int, rows ...string) *SQLite {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path+"?"+url.Values{"_pragma": {"foreign_keys(1)"}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	qs := []string{`CREATE TABLE schema_version (version INTEGER NOT NULL)`, fmt.Sprintf(`INSERT INTO schema_version (version) VALUES (%d)`, version)}
	for _, q := range append(append(qs, migrations[:version]...), rows...) {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
