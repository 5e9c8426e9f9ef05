// Package storetest is the suite every store.Store implementation passes:
// the behaviour the conductor relies on, written once over the interface.
// An implementation's test calls Run with a function that opens an empty
// store.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ironlab/ironlab/driver/store"
)

// EventFailer is a store (in its own package's tests) that can make its
// event inserts fail, as a crash between a write and its event would:
// after FailEvents(err) every event insert fails with err, until
// FailEvents(nil). The suite's rollback test needs it.
type EventFailer interface {
	FailEvents(err error)
}

// Run runs the suite; open returns a new, empty store (closed by the test's
// cleanup). Give it an EventFailer (wrap the store) for the rollback test.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		f    func(t *testing.T, s store.Store)
	}{
		{"NodeRoundTrip", nodeRoundTrip},
		{"Reservation", reservation},
		{"Ports", ports},
		{"StateCommitsWithItsEvent", stateWithEvent},
		{"HistoryOutlivesItsNode", historyOutlivesNode},
		{"LastTransitions", lastTransitions},
		{"SavesChangeEachIndexedColumnAlone", indexedColumns},
		{"EventFailureRollsBack", eventFailureRollsBack},
		{"ListNodesFilters", listNodes},
		{"ListNodesDue", listDue},
		{"ReleaseByHolderOnly", release},
		{"ReleaseCommitsWithItsEvents", releaseWithEvents},
		{"UpdateNodeHeldByTheHolderOnly", updateHeld},
		{"StealReservationOnce", steal},
		{"PortsListAndDelete", portsListDelete},
		{"Heartbeat", heartbeat},
		{"HeartbeatCheckedInItsWrite", heartbeatCheck},
		{"AgentFieldsSurviveNodeSaves", agentSurvivesSave},
		{"GetAgentIsGetNodesAgent", getAgent},
		{"AgentToken", agentToken},
		{"ClearAgentAndWatchdog", clearAndWatchdog},
		{"Conductors", conductors},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, open(t)) })
	}
}

var ctx = context.Background()

func create(t *testing.T, s store.Store, n *store.Node) {
	t.Helper()
	if err := s.CreateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, s store.Store, id string) *store.Node {
	t.Helper()
	n, err := s.GetNode(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func nodeRoundTrip(t *testing.T, s store.Store) {
	n := &store.Node{UUID: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123", Name: "node-0", Driver: "fake_agent",
		DriverInfo:     map[string]any{"ipmi_address": "127.0.0.1", "ipmi_port": float64(6230)},
		InstanceInfo:   map[string]any{"image_source": "http://127.0.0.1/img.raw"},
		ProvisionState: "enroll", PowerState: "power off", CleanStep: &store.Step{Interface: "deploy", Step: "erase_devices", Priority: 10},
		CleanPlan: &store.CleanPlan{Steps: []store.Step{{Interface: "deploy", Step: "erase_devices", Priority: 10, Abortable: true}}, Started: true, Version: map[string]any{"generic_hardware_manager": "1.2"}}}
	create(t, s, n)
	if err := s.CreateNode(ctx, &store.Node{UUID: "other", Name: "node-0", Driver: "x", ProvisionState: "enroll"}); !errors.Is(err, store.ErrDuplicate) {
		t.Fatalf("duplicate name: got %v, want ErrDuplicate", err)
	}
	n.ProvisionState = "manageable"
	n.LastError = "boom"
	if err := s.UpdateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetNodeByName(ctx, "node-0")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(n, got, cmpopts.EquateApproxTime(0), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("node read back (-want +got):\n%s", diff)
	}
	if _, err := s.GetNode(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown node: got %v, want ErrNotFound", err)
	}
	if err := s.AddEvent(ctx, &store.Event{NodeUUID: n.UUID, Kind: store.KindPower, Event: "power on", Detail: []byte(`{"a":1}`)}); err != nil {
		t.Fatal(err)
	}
	evs, err := s.ListEvents(ctx, n.UUID)
	if err != nil || len(evs) != 1 || evs[0].Event != "power on" || string(evs[0].Detail) != `{"a":1}` || evs[0].UUID == "" {
		t.Errorf("events = %+v, %v", evs, err)
	}
}

func reservation(t *testing.T, s store.Store) {
	create(t, s, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "available"})
	if err := s.Reserve(ctx, "n1", "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, "n1", "b"); !errors.Is(err, store.ErrLocked) {
		t.Errorf("second reserve: got %v, want ErrLocked", err)
	}
	if err := s.Reserve(ctx, "nope", "b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("reserve unknown: got %v, want ErrNotFound", err)
	}
	// UpdateNode must not drop the lock.
	n := get(t, s, "n1")
	n.Reservation = ""
	if err := s.UpdateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	if n := get(t, s, "n1"); n.Reservation != "a" {
		t.Errorf("reservation after update = %q, want a", n.Reservation)
	}
	if c, err := s.ReleaseAll(ctx, "a"); err != nil || c != 1 {
		t.Errorf("ReleaseAll = %d, %v", c, err)
	}
	if err := s.Reserve(ctx, "n1", "b"); err != nil {
		t.Errorf("reserve after release: %v", err)
	}
}

func ports(t *testing.T, s store.Store) {
	for _, id := range []string{"n1", "n2"} {
		create(t, s, &store.Node{UUID: id, Driver: "fake_agent", ProvisionState: "available"})
	}
	p := &store.Port{Address: "52:54:00:AA:BB:01", NodeUUID: "n1", PXEEnabled: true}
	if err := s.CreatePort(ctx, p); err != nil {
		t.Fatal(err)
	}
	if p.Address != "52:54:00:aa:bb:01" {
		t.Errorf("address = %q, want lower-case", p.Address)
	}
	tests := []struct {
		name string
		port store.Port
		want error
	}{
		{"duplicate MAC in other case", store.Port{Address: "52:54:00:aa:BB:01", NodeUUID: "n2"}, store.ErrDuplicate},
		{"unknown node", store.Port{Address: "52:54:00:aa:bb:02", NodeUUID: "n3"}, store.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.CreatePort(ctx, &tc.port); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
	ps, err := s.ListPorts(ctx, store.PortFilter{Address: "52-54-00-AA-BB-01"})
	if err != nil || len(ps) != 1 || ps[0].NodeUUID != "n1" {
		t.Errorf("ListPorts by address = %v, %v", ps, err)
	}
	if err := s.DeleteNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPort(ctx, p.UUID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("port after node delete: %v, want ErrNotFound", err)
	}
}

func history(t *testing.T, s store.Store, id string) []string {
	t.Helper()
	evs, err := s.ListEvents(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, e.FromState+">"+e.ToState)
	}
	return out
}

// stateWithEvent: a write that fails takes its events with it, and one
// that succeeds appends them (a failing event insert: eventFailureRollsBack).
func stateWithEvent(t *testing.T, s store.Store) {
	ev := func(id, from, to, name string) *store.Event {
		return &store.Event{NodeUUID: id, Kind: store.KindProvision, FromState: from, ToState: to, Event: name}
	}
	if err := s.CreateNode(ctx, &store.Node{UUID: "n1", Name: "a", Driver: "x", ProvisionState: "enroll"}, ev("n1", "", "enroll", "create")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNode(ctx, &store.Node{UUID: "n2", Name: "b", Driver: "x", ProvisionState: "enroll"}, ev("n2", "", "enroll", "create")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNode(ctx, &store.Node{UUID: "n1", Driver: "x", ProvisionState: "enroll"}, ev("n1", "", "available", "create")); !errors.Is(err, store.ErrDuplicate) {
		t.Fatalf("duplicate create: got %v, want ErrDuplicate", err)
	}
	n := get(t, s, "n1")
	n.ProvisionState, n.Name = "manageable", "b" // the name is taken: the write fails
	if err := s.UpdateNode(ctx, n, ev("n1", "enroll", "manageable", "manage")); !errors.Is(err, store.ErrDuplicate) {
		t.Fatalf("update to a taken name: got %v, want ErrDuplicate", err)
	}
	if got := get(t, s, "n1"); got.ProvisionState != "enroll" {
		t.Errorf("state after the failed write = %q, want enroll", got.ProvisionState)
	}
	n.Name = "a"
	if err := s.UpdateNode(ctx, n, ev("n1", "enroll", "manageable", "manage")); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateNode(ctx, &store.Node{UUID: "nope", Driver: "x", ProvisionState: "enroll"}, ev("n1", "x", "y", "ghost")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("update of an unknown node: got %v, want ErrNotFound", err)
	}
	if err := s.DeleteNode(ctx, "nope", ev("n1", "x", "", "ghost")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delete of an unknown node: got %v, want ErrNotFound", err)
	}
	if err := s.DeleteNode(ctx, "n1", ev("n1", "manageable", "", "delete")); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{">enroll", "enroll>manageable", "manageable>"}, history(t, s, "n1")); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
}

// historyOutlivesNode: a node's history is every event recorded under its
// UUID, in order, whatever the node's row went through: events of two
// nodes recorded in turn, events of a UUID before a node has it, events
// after its node is deleted, and a node created again under a deleted
// node's UUID (the SQLite store keeps each node's history as a chain whose
// head moves between the node's row and a table of its own).
// lastTransitions: each node's latest provision event that changed state,
// past the events after it that did not (power events, a provision event
// that kept its state), across a history its UUID had before the node was
// created again; a node without one, and a UUID without a node, have none.
func lastTransitions(t *testing.T, s store.Store) {
	ev := func(id, kind, from, to string) *store.Event {
		return &store.Event{NodeUUID: id, Kind: kind, FromState: from, ToState: to, Event: from + ">" + to}
	}
	prov := func(id, from, to string) *store.Event { return ev(id, store.KindProvision, from, to) }
	add := func(e *store.Event) {
		t.Helper()
		if err := s.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.LastTransitions(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty store: LastTransitions = %v, %v; want none", got, err)
	}
	for _, id := range []string{"walks", "latest", "none", "again"} {
		if err := s.CreateNode(ctx, &store.Node{UUID: id, Name: id, Driver: "x", ProvisionState: "enroll"}, prov(id, "", "enroll")); err != nil {
			t.Fatal(err)
		}
	}
	// walks: its transition lies behind events that change no state.
	add(prov("walks", "enroll", "manageable"))
	add(ev("walks", store.KindPower, "power off", "power on"))
	add(prov("walks", "manageable", "manageable"))
	add(ev("walks", store.KindPower, "power on", "power off"))
	// latest: its last event is the transition, after others.
	add(prov("latest", "enroll", "manageable"))
	add(prov("latest", "manageable", "available"))
	// none: a node whose history has no transition at all (a store written
	// before nodes recorded their "create"); its create event changed
	// nothing.
	if err := s.DeleteNode(ctx, "none"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNode(ctx, &store.Node{UUID: "none2", Name: "none", Driver: "x", ProvisionState: "enroll"}, prov("none2", "enroll", "enroll")); err != nil {
		t.Fatal(err)
	}
	add(ev("none2", store.KindPower, "", "power off"))
	// again: deleted after a transition, events recorded while it had no
	// node, then created again with an event that changed nothing: its
	// UUID's history goes on.
	add(prov("again", "enroll", "manageable"))
	if err := s.DeleteNode(ctx, "again", prov("again", "manageable", "manageable")); err != nil {
		t.Fatal(err)
	}
	add(ev("again", store.KindPower, "", "power off"))
	if err := s.CreateNode(ctx, &store.Node{UUID: "again", Name: "again", Driver: "x", ProvisionState: "enroll"}, ev("again", store.KindPower, "", "power off")); err != nil {
		t.Fatal(err)
	}
	// orphan: events for a UUID no node has.
	add(prov("orphan", "enroll", "manageable"))
	got, err := s.LastTransitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"walks": "manageable", "latest": "available", "again": "manageable"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LastTransitions (-want +got):\n%s", diff)
	}
}

func historyOutlivesNode(t *testing.T, s store.Store) {
	ev := func(id, from, to string) *store.Event {
		return &store.Event{NodeUUID: id, Kind: store.KindProvision, FromState: from, ToState: to, Event: from + ">" + to}
	}
	add := func(e *store.Event) {
		t.Helper()
		if err := s.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if evs, err := s.ListEvents(ctx, "n1"); err != nil || len(evs) != 0 {
		t.Fatalf("history of a UUID never used = %v, %v; want none", evs, err)
	}
	add(ev("n1", "", "before")) // no node n1 yet
	if err := s.CreateNode(ctx, &store.Node{UUID: "n1", Name: "a", Driver: "x", ProvisionState: "enroll"}, ev("n1", "", "enroll")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNode(ctx, &store.Node{UUID: "n2", Name: "b", Driver: "x", ProvisionState: "enroll"}, ev("n2", "", "enroll")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNode(ctx, &store.Node{UUID: "n2", Name: "c", Driver: "x", ProvisionState: "enroll"}, ev("n2", "", "dup")); !errors.Is(err, store.ErrDuplicate) {
		t.Fatalf("duplicate create: got %v, want ErrDuplicate", err)
	}
	for _, st := range []string{"manageable", "available"} {
		for _, id := range []string{"n1", "n2"} {
			n := get(t, s, id)
			from := n.ProvisionState
			n.ProvisionState = st
			if err := s.UpdateNode(ctx, n, ev(id, from, st)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Reserve(ctx, "n2", "c1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "n2", "c1", ev("n2", "available", "released")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteNode(ctx, "n1", ev("n1", "available", "")); err != nil {
		t.Fatal(err)
	}
	add(ev("n1", "", "after"))
	want1 := []string{">before", ">enroll", "enroll>manageable", "manageable>available", "available>", ">after"}
	if diff := cmp.Diff(want1, history(t, s, "n1")); diff != "" {
		t.Errorf("history of the deleted node (-want +got):\n%s", diff)
	}
	if err := s.CreateNode(ctx, &store.Node{UUID: "n1", Name: "a", Driver: "x", ProvisionState: "enroll"}, ev("n1", "", "again")); err != nil {
		t.Fatal(err)
	}
	n := get(t, s, "n1")
	n.ProvisionState = "manageable"
	if err := s.UpdateNode(ctx, n, ev("n1", "again", "manageable")); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(append(want1, ">again", "again>manageable"), history(t, s, "n1")); diff != "" {
		t.Errorf("history of the node created again (-want +got):\n%s", diff)
	}
	want2 := []string{">enroll", "enroll>manageable", "manageable>available", "available>released"}
	if diff := cmp.Diff(want2, history(t, s, "n2")); diff != "" {
		t.Errorf("history of the other node (-want +got):\n%s", diff)
	}
	evs, err := s.ListEvents(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].ID <= evs[i-1].ID {
			t.Errorf("event ids out of order: %d after %d", evs[i].ID, evs[i-1].ID)
		}
	}
}

// indexedColumns saves a node changing its name, provision state and power
// state one at a time, then none of them: each is read back and found by
// its index (the SQLite store writes these columns only when one changed).
func indexedColumns(t *testing.T, s store.Store) {
	create(t, s, &store.Node{UUID: "n1", Name: "a", Driver: "x", ProvisionState: "enroll", PowerState: "power off"})
	create(t, s, &store.Node{UUID: "n2", Name: "b", Driver: "x", ProvisionState: "enroll", PowerState: "power off"})
	type seen struct {
		Name, State, Power, Step string
		ByName                   string   // the node GetNodeByName(Name) finds
		InState                  []string // ListNodes of the node's provision state
	}
	look := func() seen {
		t.Helper()
		n := get(t, s, "n1")
		v := seen{Name: n.Name, State: n.ProvisionState, Power: n.PowerState}
		v.Step, _ = n.DriverInternalInfo["step"].(string)
		if n.Name != "" {
			byName, err := s.GetNodeByName(ctx, n.Name)
			if err != nil {
				t.Fatalf("GetNodeByName(%q): %v", n.Name, err)
			}
			v.ByName = byName.UUID
		}
		list, err := s.ListNodes(ctx, store.NodeFilter{ProvisionState: n.ProvisionState})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range list {
			v.InState = append(v.InState, m.UUID)
		}
		return v
	}
	steps := []struct {
		what   string
		change func(n *store.Node)
		want   seen
	}{
		{"none of them", func(n *store.Node) { n.DriverInternalInfo = map[string]any{"step": "1"} },
			seen{"a", "enroll", "power off", "1", "n1", []string{"n1", "n2"}}},
		{"power state", func(n *store.Node) { n.PowerState = "power on" },
			seen{"a", "enroll", "power on", "1", "n1", []string{"n1", "n2"}}},
		{"provision state", func(n *store.Node) { n.ProvisionState = "manageable" },
			seen{"a", "manageable", "power on", "1", "n1", []string{"n1"}}},
		{"name", func(n *store.Node) { n.Name = "c" },
			seen{"c", "manageable", "power on", "1", "n1", []string{"n1"}}},
		{"none of them again", func(n *store.Node) { n.DriverInternalInfo = map[string]any{"step": "2"} },
			seen{"c", "manageable", "power on", "2", "n1", []string{"n1"}}},
		{"name dropped", func(n *store.Node) { n.Name = "" },
			seen{"", "manageable", "power on", "2", "", []string{"n1"}}},
	}
	for _, st := range steps {
		n := get(t, s, "n1")
		st.change(n)
		if err := s.UpdateNode(ctx, n); err != nil {
			t.Fatalf("save changing %s: %v", st.what, err)
		}
		if diff := cmp.Diff(st.want, look()); diff != "" {
			t.Errorf("after a save changing %s (-want +got):\n%s", st.what, diff)
		}
	}
	if _, err := s.GetNodeByName(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetNodeByName of the old name: got %v, want ErrNotFound", err)
	}
	n := get(t, s, "n1")
	n.Name, n.DriverInternalInfo = "b", map[string]any{"step": "3"} // n2's name: nothing of the save lands
	if err := s.UpdateNode(ctx, n); !errors.Is(err, store.ErrDuplicate) {
		t.Fatalf("save to a taken name: got %v, want ErrDuplicate", err)
	}
	if diff := cmp.Diff(seen{"", "manageable", "power on", "2", "", []string{"n1"}}, look()); diff != "" {
		t.Errorf("after the failed save (-want +got):\n%s", diff)
	}
}

func heartbeat(t *testing.T, s store.Store) {
	create(t, s, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "wait call-back"})
	at := time.Unix(1700000000, 0).UTC()
	prev, err := s.RecordHeartbeat(ctx, "n1", store.Heartbeat{URL: "http://127.0.0.1:9999", Version: "10.0.0", VerifyCA: "PEM-1", Dialect: "v1", At: at,
		TouchStates: []string{"wait call-back", "clean wait"}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(store.Agent{}, prev); diff != "" {
		t.Errorf("agent before the first heartbeat (-want +got):\n%s", diff)
	}
	if err := s.SetWatchdog(ctx, "n1", 2, at); err != nil {
		t.Fatal(err)
	}
	later := at.Add(time.Minute)
	prev, err = s.RecordHeartbeat(ctx, "n1", store.Heartbeat{URL: "http://127.0.0.1:9999", Dialect: "v1", At: later, TouchStates: []string{"clean wait"}})
	if err != nil {
		t.Fatal(err)
	}
	want := store.Agent{URL: "http://127.0.0.1:9999", LastHeartbeat: at, Version: "10.0.0", VerifyCA: "PEM-1", Dialect: "v1", WatchdogReboots: 2, WatchdogLastAction: at}
	if diff := cmp.Diff(want, prev, cmpopts.EquateApproxTime(0)); diff != "" {
		t.Errorf("agent before the second heartbeat (-want +got):\n%s", diff)
	}
	n := get(t, s, "n1")
	want = store.Agent{URL: "http://127.0.0.1:9999", LastHeartbeat: later, Version: "10.0.0", VerifyCA: "PEM-1", Dialect: "v1"}
	if diff := cmp.Diff(want, n.Agent, cmpopts.EquateApproxTime(0)); diff != "" {
		t.Errorf("agent after (-want +got; an empty version or certificate keeps the old one, the watchdog count resets):\n%s", diff)
	}
	// The first heartbeat touched provision_updated_at (the node waits), the
	// second did not (its TouchStates do not hold the node's state).
	if !n.ProvisionUpdatedAt.Equal(at) {
		t.Errorf("provision_updated_at = %v, want %v (touched by the first heartbeat only)", n.ProvisionUpdatedAt, at)
	}
	if _, err := s.RecordHeartbeat(ctx, "nope", store.Heartbeat{URL: "http://x", At: at}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("heartbeat of an unknown node: got %v, want ErrNotFound", err)
	}
}

// heartbeatCheck: a heartbeat's Check sees the node as stored (found by
// UUID or name); its error is returned as is and nothing is written.
func heartbeatCheck(t *testing.T, s store.Store) {
	create(t, s, &store.Node{UUID: "n1", Name: "node-1", Driver: "fake_agent", ProvisionState: "clean wait", Reservation: "host-a",
		Agent: store.Agent{Token: "tok"}})
	at := time.Unix(1700000000, 0).UTC()
	refused := errors.New("refused by the check")
	var seen *store.Node
	_, err := s.RecordHeartbeat(ctx, "node-1", store.Heartbeat{URL: "http://127.0.0.1:9999", Dialect: "v1", At: at, TouchStates: []string{"clean wait"},
		Check: func(n *store.Node) error { seen = n; return refused }})
	if err != refused {
		t.Fatalf("heartbeat refused by its check: got %v, want the check's error as is", err)
	}
	if seen == nil || seen.UUID != "n1" || seen.Name != "node-1" || seen.ProvisionState != "clean wait" || seen.Reservation != "host-a" || seen.Agent.Token != "tok" {
		t.Errorf("the check saw %+v, want node n1 (by its name) as stored", seen)
	}
	if n := get(t, s, "n1"); n.Agent.URL != "" || !n.Agent.LastHeartbeat.IsZero() || !n.ProvisionUpdatedAt.IsZero() {
		t.Errorf("a refused heartbeat wrote: agent %+v, provision_updated_at %v", n.Agent, n.ProvisionUpdatedAt)
	}
	if _, err := s.RecordHeartbeat(ctx, "node-1", store.Heartbeat{URL: "http://127.0.0.1:9999", Dialect: "v1", At: at, TouchStates: []string{"clean wait"},
		Check: func(n *store.Node) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	if n := get(t, s, "n1"); n.Agent.URL != "http://127.0.0.1:9999" || !n.Agent.LastHeartbeat.Equal(at) || !n.ProvisionUpdatedAt.Equal(at) || n.Agent.Token != "tok" {
		t.Errorf("after a heartbeat by name: agent %+v, provision_updated_at %v", n.Agent, n.ProvisionUpdatedAt)
	}
	if _, err := s.RecordHeartbeat(ctx, "nope", store.Heartbeat{URL: "http://x", At: at, Check: func(*store.Node) error { return nil }}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("checked heartbeat of an unknown node: got %v, want ErrNotFound", err)
	}
}

// agentSurvivesSave: a save of a node read before a heartbeat keeps the
// heartbeat, and provision_updated_at never goes back.
func agentSurvivesSave(t *testing.T, s store.Store) {
	create(t, s, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "clean wait"})
	locked := get(t, s, "n1")
	at := time.Now().UTC().Add(time.Hour)
	if _, err := s.RecordHeartbeat(ctx, "n1", store.Heartbeat{URL: "http://127.0.0.1:9999", Dialect: "v1", At: at, TouchStates: []string{"clean wait"}}); err != nil {
		t.Fatal(err)
	}
	locked.LastError = "saved while the agent heartbeated"
	if err := s.UpdateNode(ctx, locked); err != nil {
		t.Fatal(err)
	}
	n := get(t, s, "n1")
	if n.Agent.URL != "http://127.0.0.1:9999" || !n.Agent.LastHeartbeat.Equal(at) {
		t.Errorf("agent after a save of an older copy = %+v, want the heartbeat's", n.Agent)
	}
	if !n.ProvisionUpdatedAt.Equal(at) || n.LastError == "" {
		t.Errorf("after the save: provision_updated_at %v (want %v), last_error %q", n.ProvisionUpdatedAt, at, n.LastError)
	}
}

// getAgent: GetAgent reads the agent's fields as GetNode has them, each
// written by its own write (heartbeat, token, watchdog, clear).
func getAgent(t *testing.T, s store.Store) {
	create(t, s, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "available"})
	check := func(when string) store.Agent {
		t.Helper()
		n := get(t, s, "n1")
		a, err := s.GetAgent(ctx, "n1")
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if d := cmp.Diff(n.Agent, a); d != "" {
			t.Errorf("%s: GetAgent (-GetNode's +GetAgent):\n%s", when, d)
		}
		return a
	}
	check("no agent")
	at := time.Unix(1700000000, 0).UTC()
	if _, err := s.RecordHeartbeat(ctx, "n1", store.Heartbeat{URL: "https://127.0.0.1:9/n1", Version: "10.0.0", VerifyCA: "PEM", Dialect: "v1", At: at}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.IssueAgentToken(ctx, "n1", "token"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetWatchdog(ctx, "n1", 2, at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	a := check("after a heartbeat, a token and a watchdog action")
	want := store.Agent{URL: "https://127.0.0.1:9/n1", Token: "token", LastHeartbeat: at, Version: "10.0.0", Dialect: "v1",
		WatchdogReboots: 2, WatchdogLastAction: at.Add(time.Minute), VerifyCA: "PEM"}
	if d := cmp.Diff(want, a, cmpopts.EquateApproxTime(0)); d != "" {
		t.Errorf("agent after its writes (-want +got):\n%s", d)
	}
	if err := s.ClearAgent(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	check("after ClearAgent")
	if _, err := s.GetAgent(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("agent of no node: %v, want ErrNotFound", err)
	}
}

func agentToken(t *testing.T, s store.Store) {
	create(t, s, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "wait call-back"})
	if ok, err := s.IssueAgentToken(ctx, "n1", "first"); err != nil || !ok {
		t.Fatalf("first token: %v, %v; want issued", ok, err)
	}
	if ok, err := s.IssueAgentToken(ctx, "n1", "second"); err != nil || ok {
		t.Errorf("second token: %v, %v; want refused", ok, err)
	}
	if got := get(t, s, "n1").Agent.Token; got != "first" {
		t.Errorf("token = %q, want first", got)
	}
	if _, err := s.IssueAgentToken(ctx, "nope", "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("token of an unknown node: got %v, want ErrNotFound", err)
	}
	// A node a conductor holds gets no token until it is released.
	create(t, s, &store.Node{UUID: "n2", Driver: "fake_agent", ProvisionState: "deploying"})
	if err := s.Reserve(ctx, "n2", "c1"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.IssueAgentToken(ctx, "n2", "held"); ok || !errors.Is(err, store.ErrLocked) {
		t.Errorf("token of a reserved node: %v, %v; want ErrLocked", ok, err)
	}
	if got := get(t, s, "n2").Agent.Token; got != "" {
		t.Errorf("token of the reserved node = %q, want none", got)
	}
	if err := s.Release(ctx, "n2", "c1"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.IssueAgentToken(ctx, "n2", "free"); err != nil || !ok {
		t.Errorf("token once released: %v, %v; want issued", ok, err)
	}
}

func clearAndWatchdog(t *testing.T, s store.Store) {
	create(t, s, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "available"})
	at := time.Unix(1700000000, 0).UTC()
	if _, err := s.RecordHeartbeat(ctx, "n1", store.Heartbeat{URL: "http://127.0.0.1:9999", Version: "10", VerifyCA: "PEM", Dialect: "legacy", At: at}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.IssueAgentToken(ctx, "n1", "tok"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetWatchdog(ctx, "n1", 1, at); err != nil {
		t.Fatal(err)
	}
	if err := s.ClearAgent(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	want := store.Agent{Dialect: "legacy", WatchdogReboots: 1, WatchdogLastAction: at}
	if diff := cmp.Diff(want, get(t, s, "n1").Agent, cmpopts.EquateApproxTime(0)); diff != "" {
		t.Errorf("agent after ClearAgent (-want +got):\n%s", diff)
	}
	for name, err := range map[string]error{
		"ClearAgent":  s.ClearAgent(ctx, "nope"),
		"SetWatchdog": s.SetWatchdog(ctx, "nope", 1, at),
	} {
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s of an unknown node: got %v, want ErrNotFound", name, err)
		}
	}
}

// conductors: the conductors table, for stores that have one.
func conductors(t *testing.T, s store.Store) {
	reg, ok := s.(store.Registry)
	if !ok {
		t.Skipf("%T has no conductors table (store.Registry)", s)
	}
	at := time.Unix(1700000000, 0).UTC()
	for _, c := range []store.ConductorRecord{
		{Hostname: "c2", Drivers: []string{"fake_agent"}, URL: "http://127.0.0.1:2", UpdatedAt: at},
		{Hostname: "c1", Drivers: []string{"fake_agent", "fake_pxe"}, Group: "rack-a", URL: "http://127.0.0.1:1", UpdatedAt: at},
	} {
		if err := reg.RegisterConductor(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	later := at.Add(10 * time.Second)
	if err := reg.TouchConductor(ctx, "c1", later); err != nil {
		t.Fatal(err)
	}
	if err := reg.UnregisterConductor(ctx, "c2"); err != nil {
		t.Fatal(err)
	}
	if err := reg.TouchConductor(ctx, "nope", later); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("heartbeat of an unregistered conductor: got %v, want ErrNotFound", err)
	}
	got, err := reg.ListConductors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.ConductorRecord{
		{Hostname: "c1", Drivers: []string{"fake_agent", "fake_pxe"}, Group: "rack-a", URL: "http://127.0.0.1:1", UpdatedAt: later, Online: true},
		{Hostname: "c2", Drivers: []string{"fake_agent"}, URL: "http://127.0.0.1:2", UpdatedAt: at, Online: false},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateApproxTime(0)); diff != "" {
		t.Errorf("conductors (-want +got):\n%s", diff)
	}
	// A restart registers again: online, with its new URL.
	if err := reg.RegisterConductor(ctx, store.ConductorRecord{Hostname: "c2", Drivers: []string{"fake_agent"}, URL: "http://127.0.0.1:3", UpdatedAt: later}); err != nil {
		t.Fatal(err)
	}
	got, _ = reg.ListConductors(ctx)
	if len(got) != 2 || !got[1].Online || got[1].URL != "http://127.0.0.1:3" {
		t.Errorf("after c2 registered again: %+v", got)
	}
}

// eventFailureRollsBack: an event insert that fails (as a crash there
// would) leaves neither the state nor the event, for a new node and its
// create event, a transition, and a deletion.
func eventFailureRollsBack(t *testing.T, s store.Store) {
	f, ok := s.(EventFailer)
	if !ok {
		t.Skipf("%T cannot fail its event inserts (storetest.EventFailer)", s)
	}
	boom := errors.New("killed before the event insert")
	ev := func(from, to, name string) *store.Event {
		return &store.Event{NodeUUID: "n1", Kind: store.KindProvision, FromState: from, ToState: to, Event: name}
	}
	f.FailEvents(boom)
	if err := s.CreateNode(ctx, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "enroll"}, ev("", "enroll", "create")); !errors.Is(err, boom) {
		t.Fatalf("create with a failing event: got %v, want %v", err, boom)
	}
	if _, err := s.GetNode(ctx, "n1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("node without its create event exists: %v", err)
	}
	f.FailEvents(nil)
	if err := s.CreateNode(ctx, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "enroll"}, ev("", "enroll", "create")); err != nil {
		t.Fatal(err)
	}

	n := get(t, s, "n1")
	n.ProvisionState = "manageable"
	f.FailEvents(boom)
	if err := s.UpdateNode(ctx, n, ev("enroll", "manageable", "manage")); !errors.Is(err, boom) {
		t.Fatalf("update with a failing event: got %v, want %v", err, boom)
	}
	if got := get(t, s, "n1"); got.ProvisionState != "enroll" {
		t.Errorf("state after the failed event = %q, want enroll (rolled back)", got.ProvisionState)
	}
	f.FailEvents(nil)
	if err := s.UpdateNode(ctx, n, ev("enroll", "manageable", "manage")); err != nil {
		t.Fatal(err)
	}

	f.FailEvents(boom)
	if err := s.DeleteNode(ctx, "n1", ev("manageable", "", "delete")); !errors.Is(err, boom) {
		t.Fatalf("delete with a failing event: got %v, want %v", err, boom)
	}
	if _, err := s.GetNode(ctx, "n1"); err != nil {
		t.Errorf("node gone though its delete event failed: %v", err)
	}
	f.FailEvents(nil)
	if diff := cmp.Diff([]string{">enroll", "enroll>manageable"}, history(t, s, "n1")); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
}

// listNodes: each filter field narrows the list, they combine, and the
// list comes in creation order.
func listNodes(t *testing.T, s store.Store) {
	for _, n := range []*store.Node{
		{UUID: "n1", Driver: "fake_agent", ProvisionState: "available"},
		{UUID: "n2", Driver: "agent_ipmitool", ProvisionState: "available", Maintenance: true},
		{UUID: "n3", Driver: "fake_agent", ProvisionState: "active"},
	} {
		create(t, s, n)
	}
	yes, no := true, false
	for _, tc := range []struct {
		f    store.NodeFilter
		want []string
	}{
		{store.NodeFilter{}, []string{"n1", "n2", "n3"}},
		{store.NodeFilter{ProvisionState: "available"}, []string{"n1", "n2"}},
		{store.NodeFilter{Driver: "fake_agent"}, []string{"n1", "n3"}},
		{store.NodeFilter{Maintenance: &yes}, []string{"n2"}},
		{store.NodeFilter{Maintenance: &no, ProvisionState: "available"}, []string{"n1"}},
		{store.NodeFilter{Driver: "fake_agent", ProvisionState: "deploying"}, nil},
	} {
		ns, err := s.ListNodes(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, n := range ns {
			got = append(got, n.UUID)
		}
		if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("ListNodes(%+v) (-want +got):\n%s", tc.f, diff)
		}
	}
	// ColumnsOnly: the same nodes with the same columns, but the JSON ones
	// (a store may fill those too).
	n := get(t, s, "n1")
	n.DriverInfo, n.Extra, n.LastError, n.PowerState = map[string]any{"ipmi_address": "127.0.0.1"}, map[string]any{"k": "v"}, "boom", "power on"
	n.Agent = store.Agent{}
	if err := s.UpdateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	at := time.Unix(time.Now().Unix(), 0).UTC()
	if _, err := s.RecordHeartbeat(ctx, "n1", store.Heartbeat{URL: "http://127.0.0.1:9999", Dialect: "v1", At: at}); err != nil {
		t.Fatal(err)
	}
	full, err := s.ListNodes(ctx, store.NodeFilter{})
	if err != nil {
		t.Fatal(err)
	}
	cols, err := s.ListNodes(ctx, store.NodeFilter{ColumnsOnly: true, Maintenance: &no})
	if err != nil {
		t.Fatal(err)
	}
	if len(cols) != 2 || cols[0].UUID != "n1" || cols[1].UUID != "n3" {
		t.Fatalf("ColumnsOnly with maintenance false: %d nodes, want n1 and n3", len(cols))
	}
	strip := func(n *store.Node) store.Node {
		c := *n
		c.DriverInfo, c.DriverInternalInfo, c.InstanceInfo, c.Properties, c.Extra = nil, nil, nil, nil, nil
		c.CleanStep, c.DeployStep, c.CleanPlan = nil, nil, nil
		c.Agent.Token, c.Agent.VerifyCA = "", ""
		return c
	}
	if diff := cmp.Diff(strip(full[0]), strip(cols[0])); diff != "" {
		t.Errorf("ColumnsOnly node n1 differs from the full one in its columns (-full +columns):\n%s", diff)
	}
	if cols[0].Agent.URL != "http://127.0.0.1:9999" || !cols[0].Agent.LastHeartbeat.Equal(at) {
		t.Errorf("ColumnsOnly node n1: agent %+v, want the heartbeat's URL and time %s", cols[0].Agent, at)
	}
}

// releaseWithEvents: Release with events appends them and frees the lock
// in one transaction; when the event insert fails, the lock stays held
// and no event is written.
func releaseWithEvents(t *testing.T, s store.Store) {
	create(t, s, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "wait call-back"})
	if err := s.Reserve(ctx, "n1", "a"); err != nil {
		t.Fatal(err)
	}
	ev := &store.Event{NodeUUID: "n1", Kind: store.KindHeartbeat, FromState: "wait call-back", ToState: "wait call-back", Event: "call-back"}
	if f, ok := s.(EventFailer); ok {
		boom := errors.New("killed before the event insert")
		f.FailEvents(boom)
		if err := s.Release(ctx, "n1", "a", ev); !errors.Is(err, boom) {
			t.Fatalf("release with a failing event: got %v, want %v", err, boom)
		}
		f.FailEvents(nil)
		if got := get(t, s, "n1").Reservation; got != "a" {
			t.Errorf("reservation after the failed release = %q, want a (rolled back)", got)
		}
		if evs, err := s.ListEvents(ctx, "n1"); err != nil || len(evs) != 0 {
			t.Errorf("events after the failed release = %+v, %v; want none", evs, err)
		}
	}
	if err := s.Release(ctx, "n1", "a", ev); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "n1").Reservation; got != "" {
		t.Errorf("reservation after the holder's release = %q, want none", got)
	}
	evs, err := s.ListEvents(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Event != "call-back" || evs[0].Kind != store.KindHeartbeat || evs[0].FromState != "wait call-back" {
		t.Errorf("events after the release = %+v, want the one call-back event", evs)
	}
}

// release: only the holder's Release frees the lock; another host's, or
// one of an unknown node, changes nothing and is no error.
func release(t *testing.T, s store.Store) {
	create(t, s, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "available"})
	if err := s.Reserve(ctx, "n1", "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "n1", "b"); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "n1").Reservation; got != "a" {
		t.Errorf("reservation after another host's release = %q, want a", got)
	}
	if err := s.Release(ctx, "nope", "a"); err != nil {
		t.Errorf("release of an unknown node: %v", err)
	}
	if err := s.Release(ctx, "n1", "a"); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "n1").Reservation; got != "" {
		t.Errorf("reservation after the holder's release = %q, want none", got)
	}
	if c, err := s.ReleaseAll(ctx, "a"); err != nil || c != 0 {
		t.Errorf("ReleaseAll with nothing held = %d, %v; want 0", c, err)
	}
}

// portsListDelete: ports list by node in creation order, and a deleted
// port is gone from the list and from GetPort.
func portsListDelete(t *testing.T, s store.Store) {
	create(t, s, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "available"})
	create(t, s, &store.Node{UUID: "n2", Driver: "fake_agent", ProvisionState: "available"})
	var ids []string
	for _, p := range []*store.Port{
		{Address: "52:54:00:00:00:01", NodeUUID: "n1"},
		{Address: "52:54:00:00:00:02", NodeUUID: "n2"},
		{Address: "52:54:00:00:00:03", NodeUUID: "n1", Extra: map[string]any{"a": "b"}},
	} {
		if err := s.CreatePort(ctx, p); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.UUID)
	}
	list := func(node string) []string {
		ps, err := s.ListPorts(ctx, store.PortFilter{NodeUUID: node})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range ps {
			out = append(out, p.Address)
		}
		return out
	}
	if diff := cmp.Diff([]string{"52:54:00:00:00:01", "52:54:00:00:00:03"}, list("n1")); diff != "" {
		t.Errorf("ports of n1 (-want +got):\n%s", diff)
	}
	if p, err := s.GetPort(ctx, ids[2]); err != nil || p.NodeUUID != "n1" || p.Extra["a"] != "b" {
		t.Errorf("GetPort = %+v, %v", p, err)
	}
	if err := s.DeletePort(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"52:54:00:00:00:03"}, list("n1")); diff != "" {
		t.Errorf("ports of n1 after a delete (-want +got):\n%s", diff)
	}
	if _, err := s.GetPort(ctx, ids[0]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted port: got %v, want ErrNotFound", err)
	}
	if err := s.DeletePort(ctx, ids[0]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: got %v, want ErrNotFound", err)
	}
	if got := list("n2"); len(got) != 1 {
		t.Errorf("ports of n2 = %v, want its one", got)
	}
}

// updateHeld: UpdateNodeHeld writes (with its events) while the host holds
// the lock, and writes nothing once it lost it (taken over: released, or
// held by another conductor).
func updateHeld(t *testing.T, s store.Store) {
	create(t, s, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "wait call-back"})
	ev := func(from, to, name string) *store.Event {
		return &store.Event{NodeUUID: "n1", Kind: store.KindProvision, FromState: from, ToState: to, Event: name}
	}
	if err := s.Reserve(ctx, "n1", "a"); err != nil {
		t.Fatal(err)
	}
	n := get(t, s, "n1")
	n.ProvisionState = "deploying"
	if err := s.UpdateNodeHeld(ctx, n, "a", ev("wait call-back", "deploying", "resume")); err != nil {
		t.Fatalf("write by the holder: %v", err)
	}
	if got := get(t, s, "n1"); got.ProvisionState != "deploying" || got.Reservation != "a" {
		t.Errorf("after the holder's write: %s reserved by %q, want deploying reserved by a", got.ProvisionState, got.Reservation)
	}
	stale := get(t, s, "n1")
	// Taken over: the new owner frees the lock and fails the node.
	if err := s.Release(ctx, "n1", "a"); err != nil {
		t.Fatal(err)
	}
	failed := get(t, s, "n1")
	failed.ProvisionState = "deploy failed"
	if err := s.UpdateNode(ctx, failed, ev("deploying", "deploy failed", "fail")); err != nil {
		t.Fatal(err)
	}
	stale.ProvisionState = "active"
	if err := s.UpdateNodeHeld(ctx, stale, "a", ev("deploying", "active", "done")); !errors.Is(err, store.ErrNotHeld) {
		t.Errorf("write by the former holder of a released lock: got %v, want ErrNotHeld", err)
	}
	if err := s.Reserve(ctx, "n1", "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateNodeHeld(ctx, stale, "a", ev("deploying", "active", "done")); !errors.Is(err, store.ErrNotHeld) {
		t.Errorf("write by a host while another holds the lock: got %v, want ErrNotHeld", err)
	}
	if got := get(t, s, "n1"); got.ProvisionState != "deploy failed" || got.Reservation != "b" {
		t.Errorf("after the refused writes: %s reserved by %q, want deploy failed reserved by b", got.ProvisionState, got.Reservation)
	}
	if diff := cmp.Diff([]string{"wait call-back>deploying", "deploying>deploy failed"}, history(t, s, "n1")); diff != "" {
		t.Errorf("history: a refused write must add no event (-want +got):\n%s", diff)
	}
	if err := s.UpdateNodeHeld(ctx, &store.Node{UUID: "nope", Driver: "x", ProvisionState: "enroll"}, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("held write of an unknown node: got %v, want ErrNotFound", err)
	}
}

// steal: a dead host's reservation moves to one taker only; a free node or
// one another host holds is not stolen.
func steal(t *testing.T, s store.Store) {
	create(t, s, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: "deploying"})
	if err := s.StealReservation(ctx, "n1", "dead", "b"); !errors.Is(err, store.ErrNotHeld) {
		t.Errorf("steal of a free node: got %v, want ErrNotHeld", err)
	}
	if err := s.Reserve(ctx, "n1", "dead"); err != nil {
		t.Fatal(err)
	}
	if err := s.StealReservation(ctx, "n1", "dead", "b"); err != nil {
		t.Fatalf("steal from the holder: %v", err)
	}
	if err := s.StealReservation(ctx, "n1", "dead", "c"); !errors.Is(err, store.ErrNotHeld) {
		t.Errorf("second steal (b took it first): got %v, want ErrNotHeld", err)
	}
	if got := get(t, s, "n1").Reservation; got != "b" {
		t.Errorf("reservation = %q, want b", got)
	}
	n := get(t, s, "n1")
	if err := s.UpdateNodeHeld(ctx, n, "dead"); !errors.Is(err, store.ErrNotHeld) {
		t.Errorf("write by the dead holder after the steal: got %v, want ErrNotHeld", err)
	}
	if err := s.StealReservation(ctx, "nope", "dead", "b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("steal of an unknown node: got %v, want ErrNotFound", err)
	}
}

// listDue: NodeFilter.Due returns exactly the due nodes, each timeout
// taken on both sides of its boundary (stores keep nanoseconds: one
// nanosecond over is due, exactly at it is not), and store.Due.Matches
// agrees with the store on every node, under the selection and under
// variants of it (watchdog off, a call-back timeout off, nothing on).
func listDue(t *testing.T, s store.Store) {
	now := time.Unix(1_800_000_000, 0).UTC()
	const (
		deployWait, cleanWait, rescueWait = "wait call-back", "clean wait", "rescue wait"
		on, off                           = "power on", "power off"
	)
	due := store.Due{Now: now,
		CallbackTimeouts: map[string]time.Duration{deployWait: 1800 * time.Second, cleanWait: 600 * time.Second, rescueWait: 900 * time.Second},
		WatchdogStates:   []string{"available", "manageable", deployWait, cleanWait}, WatchdogPower: on, HeartbeatTimeout: 300 * time.Second}
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	const ns = time.Nanosecond
	fresh := ago(time.Second)
	for _, tc := range []struct {
		name        string
		state       string
		power       string
		updated     time.Time // provision_updated_at
		hb, wd      time.Time // last heartbeat, watchdog's last action
		reserved    bool
		maintenance bool
		due         bool
	}{
		{name: "deploy-wait-over", state: deployWait, updated: ago(1800*time.Second + ns), due: true},
		{name: "deploy-wait-at", state: deployWait, updated: ago(1800 * time.Second)},
		{name: "deploy-wait-fresh", state: deployWait, power: on, updated: fresh, hb: fresh},
		{name: "deploy-wait-never-touched", state: deployWait, due: true},
		{name: "clean-wait-over", state: cleanWait, updated: ago(600*time.Second + ns), due: true},
		{name: "clean-wait-at", state: cleanWait, updated: ago(600 * time.Second)},
		{name: "rescue-wait-over", state: rescueWait, updated: ago(900*time.Second + ns), due: true},
		{name: "rescue-wait-at", state: rescueWait, updated: ago(900 * time.Second)},
		{name: "deploy-wait-over-reserved", state: deployWait, updated: ago(time.Hour), reserved: true},
		{name: "deploy-wait-over-maintenance", state: deployWait, updated: ago(time.Hour), maintenance: true},
		{name: "deploying-old", state: "deploying", power: on, updated: ago(time.Hour), hb: ago(time.Hour)},
		{name: "active-old", state: "active", power: on, updated: ago(time.Hour), hb: ago(time.Hour)},
		{name: "available-silent-over", state: "available", power: on, hb: ago(300*time.Second + ns), due: true},
		{name: "available-silent-at", state: "available", power: on, hb: ago(300 * time.Second)},
		{name: "manageable-silent", state: "manageable", power: on, hb: ago(time.Hour), due: true},
		{name: "deploy-wait-silent", state: deployWait, power: on, updated: fresh, hb: ago(300*time.Second + ns), due: true},
		{name: "clean-wait-silent", state: cleanWait, power: on, updated: fresh, hb: ago(time.Hour), due: true},
		{name: "rescue-wait-silent", state: rescueWait, power: on, updated: fresh, hb: ago(time.Hour)},
		{name: "available-silent-power-off", state: "available", power: off, hb: ago(time.Hour)},
		{name: "available-silent-no-power", state: "available", hb: ago(time.Hour)},
		{name: "available-never-heartbeated", state: "available", power: on},
		{name: "available-watchdog-acted-newer", state: "available", power: on, hb: ago(time.Hour), wd: ago(10 * time.Second)},
		{name: "available-watchdog-acted-over", state: "available", power: on, hb: ago(time.Hour), wd: ago(300*time.Second + ns), due: true},
		{name: "available-watchdog-acted-at", state: "available", power: on, wd: ago(300 * time.Second)},
		{name: "available-watchdog-acted-only", state: "available", power: on, wd: ago(time.Hour), due: true},
		{name: "available-heartbeat-newer-than-action", state: "available", power: on, hb: fresh, wd: ago(time.Hour)},
		{name: "available-silent-reserved", state: "available", power: on, hb: ago(time.Hour), reserved: true},
		{name: "available-silent-maintenance", state: "available", power: on, hb: ago(time.Hour), maintenance: true},
	} {
		n := &store.Node{UUID: tc.name, Driver: "fake_agent", ProvisionState: tc.state, PowerState: tc.power,
			ProvisionUpdatedAt: tc.updated, Maintenance: tc.maintenance,
			Agent: store.Agent{LastHeartbeat: tc.hb, WatchdogLastAction: tc.wd}}
		create(t, s, n)
		if tc.reserved {
			if err := s.Reserve(ctx, n.UUID, "other-conductor"); err != nil {
				t.Fatal(err)
			}
		}
		stored := get(t, s, n.UUID)
		if got := due.Matches(stored); got != tc.due {
			t.Errorf("node %s as stored: Due.Matches = %v, want %v", n.UUID, got, tc.due)
		}
	}
	all, err := s.ListNodes(ctx, store.NodeFilter{})
	if err != nil {
		t.Fatal(err)
	}
	noWatchdog, noRescue, nothing := due, due, store.Due{Now: now}
	noWatchdog.HeartbeatTimeout = 0
	noRescue.CallbackTimeouts = map[string]time.Duration{deployWait: 1800 * time.Second, cleanWait: 600 * time.Second, rescueWait: -1}
	for _, tc := range []struct {
		name string
		due  store.Due
		cols bool
	}{
		{"all on", due, true}, {"all on, full nodes", due, false}, {"watchdog off", noWatchdog, true},
		{"rescue call-back timeout off", noRescue, true}, {"nothing on", nothing, true},
	} {
		d := tc.due
		var want []string
		for _, n := range all {
			if d.Matches(n) {
				want = append(want, n.UUID)
			}
		}
		got, err := s.ListNodes(ctx, store.NodeFilter{Due: &d, ColumnsOnly: tc.cols})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var ids []string
		for _, n := range got {
			ids = append(ids, n.UUID)
			if !d.Matches(n) {
				t.Errorf("%s: node %s returned as read does not match (state %q, power %q, agent %+v)", tc.name, n.UUID, n.ProvisionState, n.PowerState, n.Agent)
			}
		}
		slices.Sort(want)
		slices.Sort(ids)
		if diff := cmp.Diff(want, ids, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("ListNodes(Due: %s) (-want +got):\n%s", tc.name, diff)
		}
	}
	// Due narrows the other filters' selection.
	got, err := s.ListNodes(ctx, store.NodeFilter{Due: &due, ProvisionState: cleanWait, ColumnsOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range got {
		ids = append(ids, n.UUID)
	}
	slices.Sort(ids)
	if want := []string{"clean-wait-over", "clean-wait-silent"}; !slices.Equal(ids, want) {
		t.Errorf("ListNodes(Due, clean wait) = %v, want %v", ids, want)
	}
}

// BenchDueNodes is the periodic check's read over 10,000 nodes, of which
// none or 10 are due, two ways: select=go reads every node's columns and
// filters them in Go (the check before the store selected them),
// select=store has the store select them (NodeFilter.Due) and checks what
// it returns in Go, as the conductor does. The fleet: 70 % active and
// powered on, 20 % available and powered off, 10 % waiting for a call-back
// with their agents heartbeating; the 10 due ones are 5 whose call-back
// timed out and 5 available, powered on, whose agents fell silent.
func BenchDueNodes(b *testing.B, s store.Store) {
	const fleet, special = 10_000, 10
	base := time.Unix(1_800_000_000, 0).UTC()
	due := store.Due{Now: base,
		CallbackTimeouts: map[string]time.Duration{"wait call-back": 1800 * time.Second, "clean wait": 1800 * time.Second, "rescue wait": 1800 * time.Second},
		WatchdogStates:   []string{"available", "manageable", "wait call-back", "clean wait"}, WatchdogPower: "power on", HeartbeatTimeout: 300 * time.Second}
	for i := range fleet {
		n := &store.Node{UUID: fmt.Sprintf("node-%05d", i), Driver: "fake_agent", ProvisionUpdatedAt: base,
			Agent: store.Agent{URL: "http://127.0.0.1:9999", LastHeartbeat: base}}
		switch {
		case i < special/2:
			n.ProvisionState, n.PowerState, n.ProvisionUpdatedAt = "wait call-back", "power on", base.Add(-1801*time.Second)
		case i < special:
			n.ProvisionState, n.PowerState, n.Agent.LastHeartbeat = "available", "power on", base.Add(-301*time.Second)
		case i%10 < 7:
			n.ProvisionState, n.PowerState = "active", "power on"
		case i%10 < 9:
			n.ProvisionState, n.PowerState, n.Agent = "available", "power off", store.Agent{}
		default:
			n.ProvisionState, n.PowerState = "wait call-back", "power on"
		}
		if err := s.CreateNode(ctx, n); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		due int
		now time.Time
	}{{0, base.Add(-2 * time.Second)}, {special, base}} {
		d := due
		d.Now = c.now
		for _, sel := range []string{"go", "store"} {
			b.Run(fmt.Sprintf("due=%d/select=%s", c.due, sel), func(b *testing.B) {
				f := store.NodeFilter{ColumnsOnly: true}
				if sel == "store" {
					f.Due = &d
				}
				for range b.N {
					nodes, err := s.ListNodes(ctx, f)
					if err != nil {
						b.Fatal(err)
					}
					found := 0
					for _, n := range nodes {
						if d.Matches(n) {
							found++
						}
					}
					if found != c.due {
						b.Fatalf("%d nodes due, want %d", found, c.due)
					}
				}
			})
		}
	}
}

// BenchDueFastTrack is the periodic check's selection (NodeFilter.Due) in
// the bench's fast-track fleet: 10,000 nodes available and powered on,
// their agents heartbeating, each with a BMC's driver_info and the
// properties a node has (rows as large as the bench's), of which 10 are due:
// 4 silent agents, 2 silent since the watchdog's reboot, 2 call-backs timed
// out, 2 silent agents in clean wait. With due=0 (a second earlier) none is.
// The cost of one check should be that of the due nodes, not of the fleet.
func BenchDueFastTrack(b *testing.B, s store.Store) {
	const fleet = 10_000
	base := time.Unix(1_800_000_000, 0).UTC()
	due := store.Due{Now: base,
		CallbackTimeouts: map[string]time.Duration{"wait call-back": 1800 * time.Second, "clean wait": 1800 * time.Second, "rescue wait": 1800 * time.Second},
		WatchdogStates:   []string{"available", "manageable", "wait call-back", "clean wait"}, WatchdogPower: "power on", HeartbeatTimeout: 300 * time.Second}
	for i := range fleet {
		n := FastTrackNode(i, base)
		switch i {
		case 100, 2600, 5100, 7600:
			n.Agent.LastHeartbeat = base.Add(-301 * time.Second)
		case 1000, 6000:
			n.Agent = store.Agent{WatchdogReboots: 1, WatchdogLastAction: base.Add(-301 * time.Second)}
		case 3000, 8000:
			n.ProvisionState, n.ProvisionUpdatedAt = "wait call-back", base.Add(-1801*time.Second)
		case 4000, 9000:
			n.ProvisionState, n.Agent.LastHeartbeat = "clean wait", base.Add(-301*time.Second)
		}
		if err := s.CreateNode(ctx, n); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		due int
		now time.Time
	}{{0, base.Add(-2 * time.Second)}, {10, base}} {
		d := due
		d.Now = c.now
		b.Run(fmt.Sprintf("due=%d", c.due), func(b *testing.B) {
			cpu0 := processCPU()
			for b.Loop() {
				nodes, err := s.ListNodes(ctx, store.NodeFilter{ColumnsOnly: true, Due: &d})
				if err != nil {
					b.Fatal(err)
				}
				if len(nodes) != c.due {
					b.Fatalf("%d nodes due, want %d", len(nodes), c.due)
				}
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-us/op")
		})
	}
}

// FastTrackNode is node i of the bench's fast-track fleet as of base:
// available, powered on, its agent heartbeating (last within 20 s of
// base), with a BMC's driver_info and the properties, internal info and
// extra a node has, so its row is as large as the bench's.
func FastTrackNode(i int, base time.Time) *store.Node {
	return &store.Node{UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Name: fmt.Sprintf("node-%05d", i), Driver: "agent_pyghmi",
		ProvisionState: "available", PowerState: "power on", ProvisionUpdatedAt: base.Add(-time.Minute),
		DriverInfo: map[string]any{"ipmi_address": "127.0.0.1", "ipmi_port": float64(6231 + i), "ipmi_username": "admin",
			"ipmi_password": "password", "deploy_kernel": "http://127.0.0.1:8080/agent.kernel",
			"deploy_ramdisk": "http://127.0.0.1:8080/agent.initramfs", "ipmi_cipher_suite": float64(3)},
		DriverInternalInfo: map[string]any{"last_power_state_change": "2027-01-15T08:00:00.000000",
			"agent_cached_deploy_steps_refreshed": "2027-01-15T08:00:00.000000", "is_whole_disk_image": true},
		Properties: map[string]any{"cpu_arch": "x86_64", "memory_mb": float64(1024), "local_gb": float64(10), "cpus": float64(1),
			"capabilities": "boot_mode:uefi,secure_boot:false", "vendor": "ironlab", "root_device": map[string]any{"name": "/dev/vda"}},
		Extra: map[string]any{"rack": fmt.Sprintf("r%02d", i/400), "serial": fmt.Sprintf("SN%010d", i)},
		Agent: store.Agent{URL: fmt.Sprintf("http://127.0.0.%d:9999", 2+i%200), LastHeartbeat: base.Add(-time.Duration(i%20) * time.Second),
			Version: "10.0.0", Dialect: "ironic-python-agent"}}
}

// processCPU is the process's CPU time so far (user and system): on a
// shared machine, a steadier measure than the wall time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
