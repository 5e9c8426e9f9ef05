// Package hashring is the consistent hash ring Ironic maps nodes to
// conductors with (ironic/common/hash_ring.py over tooz.hashring): each
// host owns 2^hash_partition_exponent partitions on a ring of MD5 values,
// the i-th partition of a host being the MD5 state of its name fed i+1
// times; a node's UUID hashes to a point, and its conductors are the
// hash_distribution_replicas first distinct hosts from there on. Adding or
// removing one host moves only the nodes whose partitions it takes or
// gives up. Ironic keeps one ring per (conductor group, driver): Rings.
package hashring

import (
	"crypto/md5"
	"math/big"
	"sort"
)

// DefaultPartitionExponent is Ironic's [DEFAULT]hash_partition_exponent.
const DefaultPartitionExponent = 5

// Ring is tooz's HashRing with weight 1 for every host.
type Ring struct {
	hosts      map[string]bool
	points     []*big.Int // sorted
	owner      map[string]string
	partitions int
}

// New builds the ring of hosts with 2^exponent partitions each (exponent
// <= 0: DefaultPartitionExponent).
func New(hosts []string, exponent int) *Ring {
	if exponent <= 0 {
		exponent = DefaultPartitionExponent
	}
	r := &Ring{hosts: map[string]bool{}, owner: map[string]string{}, partitions: 1 << exponent}
	for _, h := range hosts {
		if r.hosts[h] {
			continue
		}
		r.hosts[h] = true
		// tooz: key_hash = md5(key); for each partition key_hash.update(key)
		// and the partition is int(key_hash.hexdigest(), 16).
		key := []byte(h)
		sum := md5.New()
		sum.Write(key)
		for i := 0; i < r.partitions; i++ {
			sum.Write(key)
			p := new(big.Int).SetBytes(sum.Sum(nil))
			r.owner[string(p.Bytes())] = h
		}
	}
	for k := range r.owner {
		r.points = append(r.points, new(big.Int).SetBytes([]byte(k)))
	}
	sort.Slice(r.points, func(i, j int) bool { return r.points[i].Cmp(r.points[j]) < 0 })
	return r
}

// Hosts returns the ring's hosts, sorted.
func (r *Ring) Hosts() []string {
	out := make([]string, 0, len(r.hosts))
	for h := range r.hosts {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

// partition is tooz's _get_partition: bisect_right of md5(data) in the
// sorted points, wrapping to 0.
func (r *Ring) partition(data string) int {
	sum := md5.Sum([]byte(data))
	h := new(big.Int).SetBytes(sum[:])
	pos := sort.Search(len(r.points), func(i int) bool { return r.points[i].Cmp(h) > 0 })
	if pos >= len(r.points) {
		return 0
	}
	return pos
}

// Get returns the hosts for key (a node UUID), in ring order: up to
// replicas distinct hosts not in ignore, starting at key's partition
// (tooz's get_nodes, which returns them as a set; the first is the one
// Ironic's RPC picks when replicas is 1). Nil for an empty ring.
func (r *Ring) Get(key string, replicas int, ignore ...string) []string {
	if len(r.points) == 0 {
		return nil
	}
	skip := map[string]bool{}
	for _, h := range ignore {
		skip[h] = true
	}
	candidates := 0
	for h := range r.hosts {
		if !skip[h] {
			candidates++
		}
	}
	replicas = min(max(replicas, 1), candidates)
	var out []string
	seen := map[string]bool{}
	for p := r.partition(key); len(out) < replicas; p = (p + 1) % len(r.points) {
		h := r.owner[string(r.points[p].Bytes())]
		if !skip[h] && !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

// Member is a live conductor as the rings see it.
type Member struct {
	Host    string
	Group   string
	Drivers []string
}

// Rings are Ironic's HashRingManager rings: one per driver, or with
// conductor groups one per "group:driver", over the conductors that are
// alive and enable that driver.
type Rings struct {
	rings     map[string]*Ring
	useGroups bool
	replicas  int
}

// Build makes the rings of members (exponent: hash_partition_exponent;
// replicas: hash_distribution_replicas, 1 when <= 0).
func Build(members []Member, exponent, replicas int) *Rings {
	hosts := map[string][]string{}
	useGroups := false
	for _, m := range members {
		if m.Group != "" {
			useGroups = true
		}
	}
	for _, m := range members {
		for _, d := range m.Drivers {
			k := ringKey(useGroups, m.Group, d)
			hosts[k] = append(hosts[k], m.Host)
		}
	}
	rs := &Rings{rings: map[string]*Ring{}, useGroups: useGroups, replicas: max(replicas, 1)}
	for k, h := range hosts {
		rs.rings[k] = New(h, exponent)
	}
	return rs
}

func ringKey(useGroups bool, group, driver string) string {
	if useGroups {
		return group + ":" + driver
	}
	return driver
}

// Hosts returns the conductors mapped to a node (its UUID, driver and
// conductor group), first the one actions go to; nil when no live
// conductor serves that driver in that group.
func (rs *Rings) Hosts(uuid, driver, group string) []string {
	r := rs.rings[ringKey(rs.useGroups, group, driver)]
	if r == nil {
		return nil
	}
	return r.Get(uuid, rs.replicas)
}
