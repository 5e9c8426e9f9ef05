package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/cluster"
	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/deploy/agent"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/power/fake"
	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/driver/store/postgres"
	"github.com/ironlab/ironlab/driver/store/sqlite"
	"github.com/ironlab/ironlab/scenarios/labtest/pgtest"
)

var ctx = context.Background()

type member struct {
	cond *conductor.Conductor
	cl   *cluster.Cluster
}

type shared interface {
	store.Store
	store.Registry
}

// conductors starts the named conductors on st: each its own conductor
// engine and cluster view (60 s timeout), registered at t0.
func conductors(t *testing.T, st shared, t0 time.Time, names ...string) map[string]*member {
	out := map[string]*member{}
	for _, h := range names {
		out[h] = join(t, st, t0, h)
	}
	for _, m := range out {
		if err := m.cl.Refresh(ctx, t0); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func join(t *testing.T, st shared, t0 time.Time, h string) *member {
	m := &member{}
	var cl *cluster.Cluster
	m.cond = conductor.New(st, conductor.Config{Host: h, DeployCallbackTimeout: time.Minute,
		Owns:             func(n *store.Node) bool { return cl.Owns(n) },
		PowerInterfaces:  map[string]power.Interface{"fake": fake.New()},
		DeployInterfaces: map[string]deploy.Interface{"agent": agent.New(agent.Config{})}})
	cl = cluster.New(st, cluster.Config{Host: h, Drivers: []string{"fake_agent"}, URL: "http://127.0.0.1:1/" + h,
		Timeout: time.Minute, TakeOver: m.cond.TakeOver})
	m.cl = cl
	t.Cleanup(m.cond.Close)
	if err := cl.Register(ctx, t0); err != nil {
		t.Fatal(err)
	}
	return m
}

func stores(t *testing.T, f func(t *testing.T, st shared)) {
	t.Run("sqlite", func(t *testing.T) {
		st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "ironlab.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		f(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		st, err := postgres.Open(ctx, pgtest.Start(t).NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		f(t, st)
	})
}

func owners(t *testing.T, m *member, st store.Store) map[string]string {
	t.Helper()
	nodes, err := st.ListNodes(ctx, store.NodeFilter{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range nodes {
		o, ok := m.cl.Owner(n)
		if !ok {
			t.Fatalf("node %s has no live owner in %s's view", n.UUID, m.cl.Host())
		}
		out[n.UUID] = o.Hostname
	}
	return out
}

// TestTakeover: of three conductors c2 stops heartbeating mid-deploy. After
// the timeout c1 and c3 drop it from the ring; each fails the deploying and
// cleaning nodes c2 held that it now owns, with a reason naming the
// takeover, frees c2's reservations, and leaves the nodes waiting for
// their agent in wait call-back for the next heartbeat. No node of c1 or
// c3 changes owner. A clean stop (Unregister) is seen at once.
func TestTakeover(t *testing.T) {
	stores(t, func(t *testing.T, st shared) {
		t0 := time.Now().UTC()
		cs := conductors(t, st, t0, "c1", "c2", "c3")
		type plan struct{ state, reservation string }
		var ids []string
		for i := 0; i < 60; i++ {
			id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
			ids = append(ids, id)
			if err := st.CreateNode(ctx, &store.Node{UUID: id, Driver: "fake_agent", ProvisionState: states.Available}); err != nil {
				t.Fatal(err)
			}
		}
		before := owners(t, cs["c1"], st)
		if diff := fmt.Sprint(owners(t, cs["c3"], st)); diff != fmt.Sprint(before) {
			t.Fatalf("c1 and c3 disagree on the owners:\n%v\n%v", before, diff)
		}
		count := map[string]int{}
		for _, o := range before {
			count[o]++
		}
		if len(count) != 3 {
			t.Fatalf("60 nodes on 3 conductors: owners %v", count)
		}
		// c2's nodes, by their place in the list: deploying (reserved by c2,
		// as during a deploy step), cleaning (reserved), wait call-back
		// (unreserved, waiting for the agent).
		want := map[string]plan{}
		k := 0
		for _, id := range ids {
			if before[id] != "c2" {
				continue
			}
			n, _ := st.GetNode(ctx, id)
			switch k % 3 {
			case 0:
				n.ProvisionState, n.TargetProvisionState = states.Deploying, states.Active
				want[id] = plan{states.DeployFailed, ""}
			case 1:
				n.ProvisionState, n.TargetProvisionState = states.Cleaning, states.Available
				want[id] = plan{states.CleanFailed, ""}
			case 2:
				n.ProvisionState, n.TargetProvisionState = states.DeployWait, states.Active
				want[id] = plan{states.DeployWait, ""}
			}
			k++
			if err := st.UpdateNode(ctx, n); err != nil {
				t.Fatal(err)
			}
			if n.ProvisionState != states.DeployWait {
				if err := st.Reserve(ctx, id, "c2"); err != nil {
					t.Fatal(err)
				}
			}
		}
		// A heartbeat within the timeout changes nothing.
		for _, h := range []string{"c1", "c3"} {
			if err := cs[h].cl.Heartbeat(ctx, t0.Add(50*time.Second)); err != nil {
				t.Fatal(err)
			}
			if d := cs[h].cl.Dead(); len(d) != 0 {
				t.Fatalf("%s sees %v dead 50 s after c2's last heartbeat (timeout 60 s)", h, d)
			}
		}
		// Past the timeout: c2 is dead to both.
		for _, h := range []string{"c1", "c3"} {
			if err := cs[h].cl.Heartbeat(ctx, t0.Add(70*time.Second)); err != nil {
				t.Fatal(err)
			}
			if d := cs[h].cl.Dead(); fmt.Sprint(d) != "[c2]" {
				t.Fatalf("%s sees dead %v, want [c2]", h, d)
			}
		}
		after := owners(t, cs["c1"], st)
		heirs := map[string]int{}
		for _, id := range ids {
			if before[id] == "c2" {
				heirs[after[id]]++
			}
		}
		if len(heirs) != 2 {
			t.Fatalf("c2's nodes went to %v; want some to each of c1 and c3 (more nodes needed?)", heirs)
		}
		for _, id := range ids {
			n, _ := st.GetNode(ctx, id)
			if n.Reservation != "" {
				t.Errorf("node %s still reserved by %s after the takeover", id, n.Reservation)
			}
			if before[id] != "c2" {
				if after[id] != before[id] {
					t.Errorf("node %s of live %s moved to %s", id, before[id], after[id])
				}
				if n.ProvisionState != states.Available {
					t.Errorf("node %s of live %s: state %s, want available (untouched)", id, before[id], n.ProvisionState)
				}
				continue
			}
			if after[id] == "c2" {
				t.Errorf("node %s still mapped to dead c2", id)
			}
			if n.ProvisionState != want[id].state {
				t.Errorf("c2's node %s: state %s, want %s", id, n.ProvisionState, want[id].state)
			}
			if want[id].state == states.DeployWait {
				if n.LastError != "" {
					t.Errorf("waiting node %s got last_error %q; it carries on", id, n.LastError)
				}
				continue
			}
			if !strings.Contains(n.LastError, "conductor c2") || !strings.Contains(n.LastError, after[id]+" took the node over") {
				t.Errorf("node %s: last_error %q does not name the dead c2 and the new owner %s", id, n.LastError, after[id])
			}
			evs, _ := st.ListEvents(ctx, id)
			last := evs[len(evs)-1]
			if last.Event != conductor.EventTakeover || last.ToState != want[id].state || !strings.Contains(string(last.Detail), `"dead_conductor":"c2"`) {
				t.Errorf("node %s: last event %+v, want a %q event to %s naming c2", id, last, conductor.EventTakeover, want[id].state)
			}
		}

		// c4 joins: nodes move only to it.
		c4 := join(t, st, t0.Add(80*time.Second), "c4")
		if err := cs["c1"].cl.Refresh(ctx, t0.Add(80*time.Second)); err != nil {
			t.Fatal(err)
		}
		joined := owners(t, cs["c1"], st)
		if fmt.Sprint(joined) != fmt.Sprint(owners(t, c4, st)) {
			t.Errorf("c1 and the new c4 disagree on the owners")
		}
		for _, id := range ids {
			if joined[id] != after[id] && joined[id] != "c4" {
				t.Errorf("node %s moved from %s to %s when c4 joined", id, after[id], joined[id])
			}
		}
		// A clean stop is seen at once, without waiting for the timeout.
		if err := c4.cl.Unregister(ctx); err != nil {
			t.Fatal(err)
		}
		if err := cs["c1"].cl.Refresh(ctx, t0.Add(81*time.Second)); err != nil {
			t.Fatal(err)
		}
		if d := cs["c1"].cl.Dead(); fmt.Sprint(d) != "[c2 c4]" {
			t.Errorf("after c4 stopped: dead %v, want [c2 c4]", d)
		}
	})
}

// TestPeriodicTasksRunOnlyOnTheOwner: two nodes past their call-back
// timeout, one owned by c1 and one by c3; c1's periodic check fails only
// its own.
func TestPeriodicTasksRunOnlyOnTheOwner(t *testing.T) {
	stores(t, func(t *testing.T, st shared) {
		t0 := time.Now().UTC()
		cs := conductors(t, st, t0, "c1", "c3")
		mine, theirs := "", ""
		for i := 0; mine == "" || theirs == ""; i++ {
			id := fmt.Sprintf("10000000-0000-4000-8000-%012d", i)
			n := &store.Node{UUID: id, Driver: "fake_agent", ProvisionState: states.DeployWait, TargetProvisionState: states.Active,
				ProvisionUpdatedAt: t0.Add(-time.Hour)}
			switch {
			case cs["c1"].cl.Owns(n) && mine == "":
				mine = id
			case cs["c3"].cl.Owns(n) && theirs == "":
				theirs = id
			default:
				continue
			}
			if err := st.CreateNode(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		if err := cs["c1"].cond.Check(ctx, t0); err != nil {
			t.Fatal(err)
		}
		if n, _ := st.GetNode(ctx, mine); n.ProvisionState != states.DeployFailed {
			t.Errorf("c1's own timed-out node: %s, want deploy failed", n.ProvisionState)
		}
		if n, _ := st.GetNode(ctx, theirs); n.ProvisionState != states.DeployWait {
			t.Errorf("c3's node after c1's check: %s, want wait call-back (c1 must leave it to c3)", n.ProvisionState)
		}
		if err := cs["c3"].cond.Check(ctx, t0); err != nil {
			t.Fatal(err)
		}
		if n, _ := st.GetNode(ctx, theirs); n.ProvisionState != states.DeployFailed {
			t.Errorf("c3's node after c3's check: %s, want deploy failed", n.ProvisionState)
		}
	})
}

// TestTwoTakeOversFailANodeOnce: two conductors whose rings briefly differ
// both take over the same node of a dead conductor at once (each thinks it
// owns it). One wins the lock: the node fails once, with one takeover event,
// and no reservation is left; the dead conductor, had it only hung, could
// save nothing more.
func TestTwoTakeOversFailANodeOnce(t *testing.T) {
	stores(t, func(t *testing.T, st shared) {
		cs := conductors(t, st, time.Now().UTC(), "c1", "c2")
		for round := range 10 {
			id := fmt.Sprintf("00000000-0000-4000-8000-%012d", round)
			if err := st.CreateNode(ctx, &store.Node{UUID: id, Driver: "fake_agent", ProvisionState: states.Deploying,
				TargetProvisionState: states.Active}); err != nil {
				t.Fatal(err)
			}
			if err := st.Reserve(ctx, id, "c9"); err != nil {
				t.Fatal(err)
			}
			stale, _ := st.GetNode(ctx, id)
			dead := map[string]bool{"c9": true}
			freed := make(chan int, 2)
			for _, h := range []string{"c1", "c2"} {
				go func() {
					n, err := cs[h].cond.TakeOver(ctx, dead, nil)
					if err != nil {
						t.Errorf("%s: take over: %v", h, err)
					}
					freed <- n
				}()
			}
			total := 0
			for range 2 {
				select {
				case n := <-freed:
					total += n
				case <-time.After(30 * time.Second):
					t.Fatal("a takeover did not return within 30 s")
				}
			}
			n, _ := st.GetNode(ctx, id)
			evs, _ := st.ListEvents(ctx, id)
			takeovers := 0
			for _, e := range evs {
				if e.Event == conductor.EventTakeover {
					takeovers++
				}
			}
			if total != 1 || takeovers != 1 || n.ProvisionState != states.DeployFailed || n.Reservation != "" {
				t.Fatalf("round %d: freed %d, %d takeover events, node %s reserved by %q; want 1, 1, deploy failed, none",
					round, total, takeovers, n.ProvisionState, n.Reservation)
			}
			stale.ProvisionState = states.Active
			if err := st.UpdateNodeHeld(ctx, stale, "c9"); !errors.Is(err, store.ErrNotHeld) {
				t.Errorf("round %d: the dead conductor's late save: got %v, want ErrNotHeld", round, err)
			}
		}
	})
}
