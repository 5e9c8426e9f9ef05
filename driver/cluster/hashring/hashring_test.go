package hashring

import (
	"crypto/md5"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func uuids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%08x-0000-4000-8000-%012x", i*2654435761, i)
	}
	return out
}

func owners(r *Ring, keys []string) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		out[k] = r.Get(k, 1)[0]
	}
	return out
}

// TestDistribution: 3 hosts share 3000 nodes, none with less than half or
// more than twice its fair share (32 partitions each, Ironic's default).
func TestDistribution(t *testing.T) {
	keys := uuids(3000)
	count := map[string]int{}
	for _, h := range owners(New([]string{"c1", "c2", "c3"}, 0), keys) {
		count[h]++
	}
	if len(count) != 3 {
		t.Fatalf("owners = %v, want all 3 hosts", count)
	}
	for h, c := range count {
		if c < 500 || c > 2000 {
			t.Errorf("%s owns %d of 3000 nodes, want 500..2000 (fair share 1000): %v", h, c, count)
		}
	}
}

// TestJoinMovesOnlyToTheNewHost: when c4 joins, a node either keeps its
// conductor or moves to c4 (never between old hosts), and c4 takes about
// a quarter; when it leaves again every node goes back.
func TestJoinMovesOnlyToTheNewHost(t *testing.T) {
	keys := uuids(2000)
	before := owners(New([]string{"c1", "c2", "c3"}, 0), keys)
	after := owners(New([]string{"c1", "c2", "c3", "c4"}, 0), keys)
	moved := 0
	for _, k := range keys {
		if before[k] == after[k] {
			continue
		}
		if after[k] != "c4" {
			t.Fatalf("node %s moved from %s to %s: only moves to the new host are allowed", k, before[k], after[k])
		}
		moved++
	}
	if moved < 200 || moved > 1000 {
		t.Errorf("%d of 2000 nodes moved to c4, want about 500 (200..1000)", moved)
	}
	if diff := cmp.Diff(before, owners(New([]string{"c3", "c1", "c2"}, 0), keys)); diff != "" {
		t.Errorf("the ring depends on the order hosts are listed in (-3 hosts +same, reordered):\n%s", diff)
	}
}

// TestLeaveMovesOnlyTheDeadHostsNodes: c2 dies; only its nodes move.
func TestLeaveMovesOnlyTheDeadHostsNodes(t *testing.T) {
	keys := uuids(2000)
	before := owners(New([]string{"c1", "c2", "c3"}, 0), keys)
	after := owners(New([]string{"c1", "c3"}, 0), keys)
	for _, k := range keys {
		if before[k] != "c2" && before[k] != after[k] {
			t.Errorf("node %s of the live %s moved to %s", k, before[k], after[k])
		}
		if after[k] == "c2" {
			t.Errorf("node %s still on dead c2", k)
		}
	}
}

// TestToozPoints: the partition points are tooz's (md5 state fed the name
// again per partition), so a ring built here agrees with Ironic's. The
// first point of "c1" is int(md5(b"c1c1").hexdigest(), 16).
func TestToozPoints(t *testing.T) {
	r := New([]string{"c1"}, 1)
	if len(r.points) != 2 {
		t.Fatalf("%d points, want 2 (2^1 partitions)", len(r.points))
	}
	got := fmt.Sprintf("%032x", r.points[0])
	got2 := fmt.Sprintf("%032x", r.points[1])
	c1c1 := md5hex("c1c1")
	c1c1c1 := md5hex("c1c1c1")
	if !(got == c1c1 && got2 == c1c1c1 || got == c1c1c1 && got2 == c1c1) {
		t.Errorf("points %s %s, want md5(c1c1)=%s and md5(c1c1c1)=%s", got, got2, c1c1, c1c1c1)
	}
}

func TestReplicasAndIgnore(t *testing.T) {
	r := New([]string{"c1", "c2", "c3"}, 0)
	for _, k := range uuids(50) {
		all := r.Get(k, 5)
		if len(all) != 3 {
			t.Fatalf("Get(%s, 5) = %v, want the 3 hosts", k, all)
		}
		two := r.Get(k, 2)
		if diff := cmp.Diff(all[:2], two); diff != "" {
			t.Errorf("replicas 2 are not the first two of the ring order (-want +got):\n%s", diff)
		}
		if got := r.Get(k, 1, all[0]); got[0] != all[1] {
			t.Errorf("ignoring %s gave %v, want the next host %s", all[0], got, all[1])
		}
	}
	if got := New(nil, 0).Get("x", 1); got != nil {
		t.Errorf("empty ring = %v, want nil", got)
	}
}

// TestRingsByDriverAndGroup: a node goes only to conductors of its group
// that enable its driver.
func TestRingsByDriverAndGroup(t *testing.T) {
	rs := Build([]Member{
		{Host: "a1", Group: "rack-a", Drivers: []string{"fake_agent", "fake_pxe"}},
		{Host: "a2", Group: "rack-a", Drivers: []string{"fake_agent"}},
		{Host: "b1", Group: "rack-b", Drivers: []string{"fake_agent"}},
	}, 0, 1)
	for _, k := range uuids(100) {
		if h := rs.Hosts(k, "fake_pxe", "rack-a"); len(h) != 1 || h[0] != "a1" {
			t.Fatalf("fake_pxe in rack-a -> %v, want [a1]", h)
		}
		if h := rs.Hosts(k, "fake_agent", "rack-b"); len(h) != 1 || h[0] != "b1" {
			t.Fatalf("fake_agent in rack-b -> %v, want [b1]", h)
		}
		if h := rs.Hosts(k, "fake_agent", "rack-a"); len(h) != 1 || (h[0] != "a1" && h[0] != "a2") {
			t.Fatalf("fake_agent in rack-a -> %v, want a1 or a2", h)
		}
	}
	if h := rs.Hosts("x", "fake_pxe", "rack-b"); h != nil {
		t.Errorf("no conductor of rack-b enables fake_pxe, got %v", h)
	}
	// Without groups, one ring per driver over every conductor.
	rs = Build([]Member{{Host: "c1", Drivers: []string{"fake_agent"}}, {Host: "c2", Drivers: []string{"fake_agent"}}}, 0, 1)
	seen := map[string]bool{}
	for _, k := range uuids(100) {
		seen[rs.Hosts(k, "fake_agent", "")[0]] = true
	}
	if len(seen) != 2 {
		t.Errorf("100 nodes went to %v, want both conductors", seen)
	}
}

func md5hex(s string) string {
	return fmt.Sprintf("%x", md5.Sum([]byte(s)))
}

// TestAgreesWithTooz: owners computed with tooz's HashRing algorithm
// (transcribed to Python, hashlib + bisect, 2^5 partitions, 2 replicas in
// ring order) for three conductors.
func TestAgreesWithTooz(t *testing.T) {
	r := New([]string{"conductor-1", "conductor-2", "conductor-3"}, 5)
	for uuid, want := range map[string][]string{
		"1be26c0b-03f2-4d2e-ae87-c02d7f33c123": {"conductor-1", "conductor-2"},
		"00000000-0000-4000-8000-000000000001": {"conductor-1", "conductor-3"},
		"f81d4fae-7dec-11d0-a765-00a0c91e6bf6": {"conductor-1", "conductor-2"},
		"6ba7b810-9dad-11d1-80b4-00c04fd430c8": {"conductor-3", "conductor-2"},
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11": {"conductor-2", "conductor-1"},
		"123e4567-e89b-12d3-a456-426614174000": {"conductor-2", "conductor-1"},
	} {
		if diff := cmp.Diff(want, r.Get(uuid, 2)); diff != "" {
			t.Errorf("hosts of %s (-tooz +ours):\n%s", uuid, diff)
		}
	}
}
