package sqlite

import (
	"context"
	"database/sql"
	"net/url"
	"path/filepath"
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
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path+"?"+url.Values{"_pragma": {"foreign_keys(1)"}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE schema_version (version INTEGER NOT NULL)`, `INSERT INTO schema_version (version) VALUES (1)`, migrations[0],
		`INSERT INTO nodes (uuid, name, driver, driver_info, driver_internal_info, provision_state, created_at, updated_at) VALUES
		('n1', 'node-0', 'agent_ipmitool', '{"ipmi_address":"127.0.0.1","agent_url":"http://127.0.0.1:9999","agent_last_heartbeat":1700000000}',
		 '{"agent_url":"http://127.0.0.1:9999","agent_last_heartbeat":1700000000,"agent_version":"10.0.0","agent_dialect":"v1",
		   "agent_secret_token":"tok","watchdog_reboots":2,"watchdog_last_action":1700000100,"clean_version":{"m":"1"},
		   "clean_steps":[{"interface":"deploy","step":"erase_devices","priority":10,"abortable":true}],"clean_step_index":0,"keep":"me"}',
		 'clean wait', 1, 1),
		('n2', 'node-1', 'fake_agent', '{}', '{}', 'available', 2, 2)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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
