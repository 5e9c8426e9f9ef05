// Package cluster lets several conductors share one store, as Ironic's
// do: each registers in the conductors table and heartbeats there; one
// whose heartbeat is older than the timeout (or that stopped cleanly) is
// dead; nodes map to the live ones on the hash ring (package hashring, per
// driver and conductor group), rebuilt at every refresh, so it follows a
// conductor that dies or joins; and the dead conductors' nodes are taken
// over (the callback, in practice conductor.TakeOver).
package cluster

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ironlab/ironlab/driver/cluster/hashring"
	"github.com/ironlab/ironlab/driver/store"
)

// Config describes this conductor and the cluster's settings. Zero values
// take Ironic's defaults.
type Config struct {
	Host    string
	Group   string
	Drivers []string
	// URL is this conductor's API, where the others forward actions on the
	// nodes it owns.
	URL string
	// HeartbeatInterval is how often the conductor heartbeats and rebuilds
	// the ring (Ironic's [conductor]heartbeat_interval, 10 s); Timeout is
	// when a silent conductor is dead ([conductor]heartbeat_timeout, 60 s).
	HeartbeatInterval time.Duration
	Timeout           time.Duration
	// PartitionExponent is hash_partition_exponent (5); Replicas is
	// hash_distribution_replicas (1).
	PartitionExponent int
	Replicas          int
	// TakeOver is called at each refresh with the dead conductors and the
	// ring's ownership test (conductor.TakeOver).
	TakeOver func(ctx context.Context, dead map[string]bool, owns func(*store.Node) bool) (int, error)
	Logger   *slog.Logger
}

// Cluster is this conductor's view of the others.
type Cluster struct {
	reg store.Registry
	cfg Config

	mu    sync.Mutex
	rings *hashring.Rings
	live  map[string]store.ConductorRecord
	dead  map[string]bool
}

// New returns the cluster view of the conductor cfg describes over reg;
// call Register, then Run.
func New(reg store.Registry, cfg Config) *Cluster {
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 10 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// Until the first refresh the conductor sees only itself.
	self := store.ConductorRecord{Hostname: cfg.Host, Drivers: cfg.Drivers, Group: cfg.Group, URL: cfg.URL, Online: true}
	c := &Cluster{reg: reg, cfg: cfg, live: map[string]store.ConductorRecord{cfg.Host: self}, dead: map[string]bool{}}
	c.rings = hashring.Build([]hashring.Member{{Host: cfg.Host, Group: cfg.Group, Drivers: cfg.Drivers}}, cfg.PartitionExponent, cfg.Replicas)
	return c
}

// Host is this conductor's name.
func (c *Cluster) Host() string { return c.cfg.Host }

// SetURL sets the API URL this conductor registers (known once it listens).
func (c *Cluster) SetURL(u string) { c.cfg.URL = u }

// Register writes this conductor's row (online, heartbeat now) and refreshes.
func (c *Cluster) Register(ctx context.Context, now time.Time) error {
	if err := c.reg.RegisterConductor(ctx, store.ConductorRecord{Hostname: c.cfg.Host, Drivers: c.cfg.Drivers,
		Group: c.cfg.Group, URL: c.cfg.URL, UpdatedAt: now}); err != nil {
		return err
	}
	return c.Refresh(ctx, now)
}

// Unregister marks this conductor offline (a clean stop), so the others
// take its nodes at once instead of after the timeout.
func (c *Cluster) Unregister(ctx context.Context) error {
	return c.reg.UnregisterConductor(ctx, c.cfg.Host)
}

// Heartbeat is one beat: this conductor's row touched, then a refresh.
func (c *Cluster) Heartbeat(ctx context.Context, now time.Time) error {
	if err := c.reg.TouchConductor(ctx, c.cfg.Host, now); err != nil {
		return err
	}
	return c.Refresh(ctx, now)
}

// Refresh reads the conductors table, rebuilds the rings over the live
// ones, and takes over from the dead.
func (c *Cluster) Refresh(ctx context.Context, now time.Time) error {
	all, err := c.reg.ListConductors(ctx)
	if err != nil {
		return err
	}
	live := map[string]store.ConductorRecord{}
	dead := map[string]bool{}
	var members []hashring.Member
	for _, r := range all {
		if r.Hostname != c.cfg.Host && (!r.Online || now.Sub(r.UpdatedAt) > c.cfg.Timeout) {
			dead[r.Hostname] = true
			continue
		}
		live[r.Hostname] = r
		members = append(members, hashring.Member{Host: r.Hostname, Group: r.Group, Drivers: r.Drivers})
	}
	rings := hashring.Build(members, c.cfg.PartitionExponent, c.cfg.Replicas)
	c.mu.Lock()
	for h := range live {
		if _, was := c.live[h]; !was {
			c.cfg.Logger.Info("conductor joined the ring", "conductor", h)
		}
	}
	for h := range dead {
		if _, was := c.live[h]; was {
			c.cfg.Logger.Warn("conductor left the ring (stopped heartbeating)", "conductor", h)
		}
	}
	c.live, c.dead, c.rings = live, dead, rings
	c.mu.Unlock()
	if c.cfg.TakeOver != nil && len(dead) > 0 {
		if _, err := c.cfg.TakeOver(ctx, dead, c.Owns); err != nil {
			return err
		}
	}
	return nil
}

// Run heartbeats every HeartbeatInterval until ctx is done.
func (c *Cluster) Run(ctx context.Context) {
	tk := time.NewTicker(c.cfg.HeartbeatInterval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tk.C:
			if err := c.Heartbeat(ctx, now); err != nil && ctx.Err() == nil {
				c.cfg.Logger.Error("conductor heartbeat", "conductor", c.cfg.Host, "err", err)
			}
		}
	}
}

// nodeGroup is the conductor group of a node: ironlab's nodes carry none
// yet, so they go to conductors of the default group "".
func nodeGroup(*store.Node) string { return "" }

// Owners returns the node's conductors on the ring, first the one actions
// go to.
func (c *Cluster) Owners(n *store.Node) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rings.Hosts(n.UUID, n.Driver, nodeGroup(n))
}

// Owns tells whether this conductor is one of the node's conductors.
func (c *Cluster) Owns(n *store.Node) bool {
	return slices.Contains(c.Owners(n), c.cfg.Host)
}

// Owner returns the conductor actions on the node go to, and whether
// there is one alive.
func (c *Cluster) Owner(n *store.Node) (store.ConductorRecord, bool) {
	hosts := c.Owners(n)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(hosts) == 0 {
		return store.ConductorRecord{}, false
	}
	r, ok := c.live[hosts[0]]
	return r, ok
}

// Members returns the live conductors by name.
func (c *Cluster) Members() []store.ConductorRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]store.ConductorRecord, 0, len(c.live))
	for _, r := range c.live {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b store.ConductorRecord) int {
		if a.Hostname < b.Hostname {
			return -1
		}
		if a.Hostname > b.Hostname {
			return 1
		}
		return 0
	})
	return out
}

// Dead returns the registered conductors that are dead now.
func (c *Cluster) Dead() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for h := range c.dead {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}
