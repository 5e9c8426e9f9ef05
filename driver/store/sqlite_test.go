package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func open(t *testing.T) (*SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ironlab.db")
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestNodeRoundTripAndReopen(t *testing.T) {
	ctx := context.Background()
	s, path := open(t)
	n := &Node{UUID: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123", Name: "node-0", Driver: "fake_agent",
		DriverInfo:     map[string]any{"ipmi_address": "127.0.0.1", "agent_last_heartbeat": float64(1700000000)},
		InstanceInfo:   map[string]any{"image_source": "http://127.0.0.1/img.raw"},
		ProvisionState: "enroll", PowerState: "power off", CleanStep: map[string]any{}}
	if err := s.CreateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNode(ctx, &Node{UUID: "other", Name: "node-0", Driver: "x", ProvisionState: "enroll"}); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate name: got %v, want ErrDuplicate", err)
	}
	n.ProvisionState = "manageable"
	n.LastError = "boom"
	if err := s.UpdateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEvent(ctx, &Event{NodeUUID: n.UUID, Kind: KindProvision, FromState: "enroll", ToState: "manageable", Event: "manage", Detail: []byte(`{"a":1}`)}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s2, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.GetNodeByName(ctx, "node-0")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(n, got, cmpopts.EquateApproxTime(0), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("node after reopen (-want +got):\n%s", diff)
	}
	evs, err := s2.ListEvents(ctx, n.UUID)
	if err != nil || len(evs) != 1 || evs[0].ToState != "manageable" || string(evs[0].Detail) != `{"a":1}` {
		t.Errorf("events after reopen = %+v, %v", evs, err)
	}
}

func TestReservation(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	if err := s.CreateNode(ctx, &Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "available"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, "n1", "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, "n1", "b"); !errors.Is(err, ErrLocked) {
		t.Errorf("second reserve: got %v, want ErrLocked", err)
	}
	if err := s.Reserve(ctx, "nope", "b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("reserve unknown: got %v, want ErrNotFound", err)
	}
	// UpdateNode must not drop the lock.
	n, _ := s.GetNode(ctx, "n1")
	n.Reservation = ""
	if err := s.UpdateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.GetNode(ctx, "n1"); n.Reservation != "a" {
		t.Errorf("reservation after update = %q, want a", n.Reservation)
	}
	if c, err := s.ReleaseAll(ctx, "a"); err != nil || c != 1 {
		t.Errorf("ReleaseAll = %d, %v", c, err)
	}
	if err := s.Reserve(ctx, "n1", "b"); err != nil {
		t.Errorf("reserve after release: %v", err)
	}
}

func TestPorts(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	for _, id := range []string{"n1", "n2"} {
		if err := s.CreateNode(ctx, &Node{UUID: id, Driver: "fake_agent", ProvisionState: "available"}); err != nil {
			t.Fatal(err)
		}
	}
	p := &Port{Address: "52:54:00:AA:BB:01", NodeUUID: "n1", PXEEnabled: true}
	if err := s.CreatePort(ctx, p); err != nil {
		t.Fatal(err)
	}
	if p.Address != "52:54:00:aa:bb:01" {
		t.Errorf("address = %q, want lower-case", p.Address)
	}
	tests := []struct {
		name string
		port Port
		want error
	}{
		{"duplicate MAC in other case", Port{Address: "52:54:00:aa:BB:01", NodeUUID: "n2"}, ErrDuplicate},
		{"unknown node", Port{Address: "52:54:00:aa:bb:02", NodeUUID: "n3"}, ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.CreatePort(ctx, &tc.port); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
	ps, err := s.ListPorts(ctx, PortFilter{Address: "52-54-00-AA-BB-01"})
	if err != nil || len(ps) != 1 || ps[0].NodeUUID != "n1" {
		t.Errorf("ListPorts by address = %v, %v", ps, err)
	}
	if err := s.DeleteNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPort(ctx, p.UUID); !errors.Is(err, ErrNotFound) {
		t.Errorf("port after node delete: %v, want ErrNotFound", err)
	}
}

// TestStateCommitsWithItsEvent: a node write and its events are one
// transaction; an event insert that fails (as a crash there would) leaves
// neither the state nor the event, for a new node and its create event, a
// transition, and a deletion.
func TestStateCommitsWithItsEvent(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	boom := errors.New("killed before the event insert")
	failing := func(e *Event) error { return boom }
	ev := func(from, to, name string) *Event {
		return &Event{NodeUUID: "n1", Kind: KindProvision, FromState: from, ToState: to, Event: name}
	}

	s.beforeEvent = failing
	if err := s.CreateNode(ctx, &Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "enroll"}, ev("", "enroll", "create")); !errors.Is(err, boom) {
		t.Fatalf("create with a failing event: got %v, want %v", err, boom)
	}
	if _, err := s.GetNode(ctx, "n1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("node without its create event exists: %v", err)
	}
	s.beforeEvent = nil
	if err := s.CreateNode(ctx, &Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "enroll"}, ev("", "enroll", "create")); err != nil {
		t.Fatal(err)
	}

	n, _ := s.GetNode(ctx, "n1")
	n.ProvisionState = "manageable"
	s.beforeEvent = failing
	if err := s.UpdateNode(ctx, n, ev("enroll", "manageable", "manage")); !errors.Is(err, boom) {
		t.Fatalf("update with a failing event: got %v, want %v", err, boom)
	}
	if got, _ := s.GetNode(ctx, "n1"); got.ProvisionState != "enroll" {
		t.Errorf("state after the failed event = %q, want enroll (rolled back)", got.ProvisionState)
	}
	s.beforeEvent = nil
	if err := s.UpdateNode(ctx, n, ev("enroll", "manageable", "manage")); err != nil {
		t.Fatal(err)
	}

	s.beforeEvent = failing
	if err := s.DeleteNode(ctx, "n1", ev("manageable", "", "delete")); !errors.Is(err, boom) {
		t.Fatalf("delete with a failing event: got %v, want %v", err, boom)
	}
	if _, err := s.GetNode(ctx, "n1"); err != nil {
		t.Errorf("node gone though its delete event failed: %v", err)
	}
	s.beforeEvent = nil

	evs, err := s.ListEvents(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.FromState+">"+e.ToState)
	}
	if diff := cmp.Diff([]string{">enroll", "enroll>manageable"}, got); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	if err := s.UpdateNode(ctx, &Node{UUID: "nope", Driver: "x", ProvisionState: "enroll"}, ev("", "enroll", "x")); !errors.Is(err, ErrNotFound) {
		t.Errorf("update of an unknown node: got %v, want ErrNotFound", err)
	}
	if evs, _ := s.ListEvents(ctx, "n1"); len(evs) != 2 {
		t.Errorf("update of an unknown node appended its event: %d events", len(evs))
	}
}
