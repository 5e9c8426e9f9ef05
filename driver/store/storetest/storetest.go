// Package storetest is the suite every store.Store implementation passes:
// the behaviour the conductor relies on, written once over the interface.
// An implementation's test calls Run with a function that opens an empty
// store.
package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ironlab/ironlab/driver/store"
)

// Run runs the suite; open returns a new, empty store (closed by the test's
// cleanup).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		f    func(t *testing.T, s store.Store)
	}{
		{"NodeRoundTrip", nodeRoundTrip},
		{"Reservation", reservation},
		{"Ports", ports},
		{"StateCommitsWithItsEvent", stateWithEvent},
		{"Heartbeat", heartbeat},
		{"AgentFieldsSurviveNodeSaves", agentSurvivesSave},
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
// that succeeds appends them (a failing event insert is tested per
// implementation, with a hook).
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
