// Package conductor is the driver's engine: it moves nodes through the
// provision state machine (package states), holds the per-node locks, runs
// a driver class's deploy and power interfaces, answers the agent's lookup
// and heartbeat, and runs the periodic checks (call-back timeouts and the
// heartbeat watchdog). It persists every state before acting on it.
package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/internal/shacrypt"
)

// Sentinel errors; the API maps them to status codes.
var (
	ErrNotFound          = store.ErrNotFound                                   // 404
	ErrDuplicate         = store.ErrDuplicate                                  // 409
	ErrNodeLocked        = errors.New("node is locked")                        // 409
	ErrInvalidState      = errors.New("invalid state for this operation")      // 409
	ErrInvalidRequest    = errors.New("requested action not allowed in state") // 400
	ErrInvalidParameter  = errors.New("invalid parameter")                     // 400
	ErrDriverNotEnabled  = errors.New("driver is not enabled")                 // 400
	ErrInvalidAgentToken = errors.New("invalid or missing agent token")        // 400
)

// Watchdog actions for nodes whose agent stopped heartbeating.
const (
	WatchdogReboot      = "reboot"
	WatchdogMaintenance = "maintenance"
)

// Config tunes a Conductor. Zero durations and counts take the defaults noted.
type Config struct {
	// Host names this conductor in node reservations (default: os.Hostname()).
	Host string
	// LockRetries x LockRetryInterval is how long exclusive callers wait for a
	// locked node before ErrNodeLocked (3 x 1 s).
	LockRetries       int
	LockRetryInterval time.Duration
	// LookupLockWait is how long an agent's lookup that issues its token
	// waits for a task of this conductor to release the node (default 2 s:
	// Ironic's get_node_with_token upgrades its lock with 3 attempts, 1 s
	// apart). Not LockRetries x LockRetryInterval: those a lab shortens for
	// the API's callers, and a lookup refused sooner only waits out the
	// agent's own retry interval (1 s) instead.
	LookupLockWait time.Duration
	// PowerRetries, PowerRetryInterval, PowerTimeout bound every power call
	// (3 attempts, 1 s apart, 30 s each).
	PowerRetries       int
	PowerRetryInterval time.Duration
	PowerTimeout       time.Duration
	// AutomatedClean runs cleaning on provide and undeploy.
	AutomatedClean bool
	// HeartbeatTimeout is agent.heartbeat_timeout (300 s): sent to agents on
	// lookup and used by the watchdog.
	HeartbeatTimeout time.Duration
	// DeployCallbackTimeout / CleanCallbackTimeout fail nodes that wait for
	// their agent longer (1800 s; negative disables).
	DeployCallbackTimeout time.Duration
	CleanCallbackTimeout  time.Duration
	// RescueCallbackTimeout fails a node in "rescue wait" whose rescue
	// ramdisk did not call back (rescue_callback_timeout, 1800 s; negative disables).
	RescueCallbackTimeout time.Duration
	// RescuePasswordHash is [conductor]rescue_password_hash_algorithm:
	// "sha256" (Ironic 21.4's default) or "sha512".
	RescuePasswordHash string
	// WatchdogAction is "reboot", "maintenance" or "" (off) for nodes that are
	// powered on, not provisioned, and whose agent missed HeartbeatTimeout.
	WatchdogAction string
	// WatchdogMaxReboots caps watchdog reboots before maintenance (3).
	WatchdogMaxReboots int
	// AgentTokenRequired refuses heartbeats without a token (true in Ironic).
	AgentTokenRequired bool
	// RequireTLS refuses non-https callback URLs (Ironic >= 2024.2 default; off here).
	RequireTLS bool
	// RestrictLookup limits modern lookups to nodes in a deploy/clean state.
	RestrictLookup bool
	// FastTrack also allows lookups of enroll, manageable and available nodes.
	FastTrack bool
	// PeriodicWorkers bounds how many nodes the periodic check acts on at
	// once (8, Ironic's periodic_max_workers); PeriodicNodeTimeout bounds
	// the work on one node (3 min), so one dead BMC stalls neither the
	// sweep nor the next one.
	PeriodicWorkers     int
	PeriodicNodeTimeout time.Duration

	// Owns tells whether this conductor is the node's owner on the hash
	// ring (several conductors on one store); the periodic tasks act only
	// on nodes it owns. Nil: it owns every node (one conductor).
	Owns func(n *store.Node) bool

	PowerInterfaces  map[string]power.Interface
	DeployInterfaces map[string]deploy.Interface
	Logger           *slog.Logger
}

// Class is a driver class: a deploy interface plus a power interface.
type Class struct{ Deploy, Power string }

// classes are the driver classes the conductor knows; Classes and ClassOf
// read them.
var classes = map[string]Class{
	"fake_agent":     {"agent", "fake"},
	"agent_ipmitool": {"agent", "ipmitool"},
	"agent_pyghmi":   {"agent", "native"},
	"agent_ssh":      {"agent", "ssh"},
	"fake_pxe":       {"pxe", "fake"},
	"pxe_ipmitool":   {"pxe", "ipmitool"},
	"pxe_pyghmi":     {"pxe", "native"},
	"pxe_ssh":        {"pxe", "ssh"},
	// Lab extensions beside the spec's classes: power and boot device over
	// Redfish (driver/power/redfish).
	"agent_redfish": {"agent", "redfish"},
	"pxe_redfish":   {"pxe", "redfish"},
}

// Classes returns the driver classes the conductor knows (a copy).
func Classes() map[string]Class {
	out := make(map[string]Class, len(classes))
	for k, v := range classes {
		out[k] = v
	}
	return out
}

// ClassOf returns the interfaces of a driver class.
func ClassOf(driver string) (Class, bool) {
	cl, ok := classes[driver]
	return cl, ok
}

func (c *Config) defaults() {
	if c.Host == "" {
		c.Host, _ = os.Hostname()
		if c.Host == "" {
			c.Host = "ironlab"
		}
	}
	if c.LockRetries <= 0 {
		c.LockRetries = 3
	}
	if c.LockRetryInterval <= 0 {
		c.LockRetryInterval = time.Second
	}
	if c.LookupLockWait <= 0 {
		c.LookupLockWait = 2 * time.Second
	}
	if c.PowerRetries <= 0 {
		c.PowerRetries = 3
	}
	if c.PowerRetryInterval <= 0 {
		c.PowerRetryInterval = time.Second
	}
	if c.PowerTimeout <= 0 {
		c.PowerTimeout = 30 * time.Second
	}
	if c.HeartbeatTimeout <= 0 {
		c.HeartbeatTimeout = 300 * time.Second
	}
	if c.DeployCallbackTimeout == 0 {
		c.DeployCallbackTimeout = 1800 * time.Second
	}
	if c.CleanCallbackTimeout == 0 {
		c.CleanCallbackTimeout = 1800 * time.Second
	}
	if c.RescuePasswordHash == "" {
		c.RescuePasswordHash = shacrypt.SHA256
	}
	if c.RescueCallbackTimeout == 0 {
		c.RescueCallbackTimeout = 1800 * time.Second
	}
	if c.WatchdogMaxReboots <= 0 {
		c.WatchdogMaxReboots = 3
	}
	if c.PeriodicWorkers <= 0 {
		c.PeriodicWorkers = 8
	}
	if c.PeriodicNodeTimeout <= 0 {
		c.PeriodicNodeTimeout = 3 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Conductor runs the nodes of one store.
type Conductor struct {
	cfg   Config
	store store.Store
	log   *slog.Logger

	mu    sync.Mutex
	nodes map[string]*nodeMu

	// cas are the agent certificates (PEM) heartbeats sent that parsed.
	caMu sync.Mutex
	cas  map[string]bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// nodeMu is the in-process half of a node's lock (the other half is the
// reservation column): a one-slot channel, so that a caller can wait for it
// a bounded time and take it the moment the task holding it releases it.
type nodeMu struct {
	held chan struct{}
}

// tryLock takes the lock if it is free.
func (m *nodeMu) tryLock() bool {
	select {
	case m.held <- struct{}{}:
		return true
	default:
		return false
	}
}

// lockWithin takes the lock, waiting for it at most d (or until ctx ends).
func (m *nodeMu) lockWithin(ctx context.Context, d time.Duration) bool {
	if m.tryLock() {
		return true
	}
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case m.held <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (m *nodeMu) unlock() { <-m.held }

// New returns a Conductor over s. It does not recover or start periodic
// tasks; call Recover and RunPeriodic.
func New(s store.Store, cfg Config) *Conductor {
	cfg.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Conductor{cfg: cfg, store: s, log: cfg.Logger, nodes: map[string]*nodeMu{}, cas: map[string]bool{}, ctx: ctx, cancel: cancel}
}

// Config returns the effective configuration (defaults filled in).
func (c *Conductor) Config() Config { return c.cfg }

// Store returns the conductor's store.
func (c *Conductor) Store() store.Store { return c.store }

// Close stops background work and waits for it; it does not close the store.
func (c *Conductor) Close() {
	c.cancel()
	c.wg.Wait()
}

// Wait blocks until every background task started so far has finished.
func (c *Conductor) Wait() { c.wg.Wait() }

func (c *Conductor) nodeMu(id string) *nodeMu {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.nodes[id]
	if m == nil {
		m = &nodeMu{held: make(chan struct{}, 1)}
		c.nodes[id] = m
	}
	return m
}

func (c *Conductor) goWork(f func(ctx context.Context)) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f(c.ctx)
	}()
}

// CheckDriver returns ErrDriverNotEnabled unless both interfaces of the
// class are registered.
func (c *Conductor) CheckDriver(name string) error {
	cl, ok := classes[name]
	if !ok {
		return fmt.Errorf("driver %s is not enabled (unknown driver class): %w", name, ErrDriverNotEnabled)
	}
	if c.cfg.DeployInterfaces[cl.Deploy] == nil || c.cfg.PowerInterfaces[cl.Power] == nil {
		return fmt.Errorf("driver %s is not enabled (needs deploy %q and power %q): %w", name, cl.Deploy, cl.Power, ErrDriverNotEnabled)
	}
	return nil
}

// EnabledDrivers lists the classes whose interfaces are registered.
func (c *Conductor) EnabledDrivers() []string {
	var out []string
	for name := range classes {
		if c.CheckDriver(name) == nil {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func (c *Conductor) interfaces(driver string) (deploy.Interface, power.Interface, error) {
	if err := c.CheckDriver(driver); err != nil {
		return nil, nil, err
	}
	cl := classes[driver]
	return c.cfg.DeployInterfaces[cl.Deploy], c.cfg.PowerInterfaces[cl.Power], nil
}

// GetNode resolves ident as a UUID, then as a name.
func (c *Conductor) GetNode(ctx context.Context, ident string) (*store.Node, error) {
	n, err := c.store.GetNode(ctx, ident)
	if errors.Is(err, store.ErrNotFound) {
		n, err = c.store.GetNodeByName(ctx, ident)
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("node %s could not be found: %w", ident, ErrNotFound)
	}
	return n, err
}

// newEvent builds a history record of node n.
func newEvent(n *store.Node, kind, from, to, event, message string, detail any) *store.Event {
	e := &store.Event{NodeUUID: n.UUID, Kind: kind, FromState: from, ToState: to, Event: event, Message: message}
	if detail != nil {
		if b, err := json.Marshal(detail); err == nil {
			e.Detail = b
		}
	}
	return e
}

// record appends an event; a failure to record is logged, not fatal.
func (c *Conductor) record(ctx context.Context, n *store.Node, kind, from, to, event, message string, detail any) {
	if err := c.store.AddEvent(context.WithoutCancel(ctx), newEvent(n, kind, from, to, event, message, detail)); err != nil {
		c.log.Error("record event", "node", n.UUID, "kind", kind, "err", err)
	}
}

// lock takes the node's lock: the in-process mutex, then the reservation.
// With retry it tries LockRetries times, LockRetryInterval apart; held by a
// task of this conductor, the node is taken as that task releases it
// (within the pause), not only when the pause ends.
func (c *Conductor) lock(ctx context.Context, id string, retry bool) (func(events ...*store.Event), error) {
	m := c.nodeMu(id)
	attempts := 1
	if retry {
		attempts = c.cfg.LockRetries
	}
	var last error
	inProcess := false // the last attempt found a task of ours on the node
	for i := 0; i < attempts; i++ {
		locked := false
		if i == 0 {
			locked = m.tryLock()
		} else if inProcess {
			// A task of this conductor holds the node: take the lock the
			// moment it ends, within the pause, instead of after it.
			if locked = m.lockWithin(ctx, c.cfg.LockRetryInterval); !locked && ctx.Err() != nil {
				return nil, ctx.Err()
			}
		} else {
			// Another conductor's reservation: look again after the pause.
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(c.cfg.LockRetryInterval):
			}
			locked = m.tryLock()
		}
		inProcess = !locked
		if !locked {
			last = fmt.Errorf("node %s is locked by host %s, please retry after the current operation is completed: %w", id, c.cfg.Host, ErrNodeLocked)
			continue
		}
		err := c.store.Reserve(ctx, id, c.cfg.Host)
		if err == nil {
			release := func(events ...*store.Event) {
				if err := c.store.Release(context.WithoutCancel(ctx), id, c.cfg.Host, events...); err != nil {
					c.log.Error("release node lock", "node", id, "err", err)
				}
				m.unlock()
			}
			return release, nil
		}
		if !errors.Is(err, store.ErrLocked) && !errors.Is(err, store.ErrNotFound) {
			// The reservation may be written even though Reserve failed (a
			// request cancelled while PostgreSQL committed the UPDATE): undo
			// it while this node's in-process lock still says no task of
			// ours holds it, or this conductor would lock itself out.
			if rerr := c.store.Release(context.WithoutCancel(ctx), id, c.cfg.Host); rerr != nil {
				c.log.Error("release node lock after a failed reserve", "node", id, "err", rerr)
			}
		}
		m.unlock()
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("node %s could not be found: %w", id, ErrNotFound)
		}
		if !errors.Is(err, store.ErrLocked) {
			return nil, err
		}
		last = fmt.Errorf("%v, please retry after the current operation is completed: %w", err, ErrNodeLocked)
	}
	return nil, last
}

// acquire locks a node and loads it into a task.
func (c *Conductor) acquire(ctx context.Context, id string, retry bool) (*task, error) {
	release, err := c.lock(ctx, id, retry)
	if err != nil {
		return nil, err
	}
	n, err := c.store.GetNode(ctx, id)
	if err != nil {
		release()
		return nil, err
	}
	ports, err := c.store.ListPorts(ctx, store.PortFilter{NodeUUID: id})
	if err != nil {
		release()
		return nil, err
	}
	t := &task{c: c, node: n, ports: ports,
		log: c.log.With("node", n.UUID, "driver", n.Driver)}
	t.release = func() {
		events := t.pending
		t.pending = nil
		release(events...)
	}
	t.dep, t.pw, _ = c.interfaces(n.Driver)
	return t, nil
}

// acquireIdent locks the node ident names (its UUID, else its name, as
// GetNode resolves it) and loads it into a task. A UUID is locked and read
// once: resolving it first (a whole-node read) and reading it again under
// the lock read every API request's node twice. A name is resolved first.
func (c *Conductor) acquireIdent(ctx context.Context, ident string, retry bool) (*task, error) {
	if uuid.Validate(ident) == nil {
		t, err := c.acquire(ctx, ident, retry)
		if !errors.Is(err, store.ErrNotFound) {
			return t, err
		}
	}
	n, err := c.GetNode(ctx, ident)
	if err != nil {
		return nil, err
	}
	return c.acquire(ctx, n.UUID, retry)
}

// Events returns a node's full history.
func (c *Conductor) Events(ctx context.Context, ident string) ([]store.Event, error) {
	n, err := c.GetNode(ctx, ident)
	if err != nil {
		return nil, err
	}
	return c.store.ListEvents(ctx, n.UUID)
}

// Recover runs once at start-up: it releases the locks this host held
// before a restart and fails nodes caught in a transient state that cannot
// resume (nodes waiting for a call-back simply continue on the next heartbeat).
func (c *Conductor) Recover(ctx context.Context) error {
	nodes, err := c.store.ListNodes(ctx, store.NodeFilter{})
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if _, err := c.store.ReleaseAll(ctx, c.cfg.Host); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	last, err := c.store.LastTransitions(ctx)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, n := range nodes {
		if n.Reservation != "" && n.Reservation != c.cfg.Host {
			continue // another live conductor's node
		}
		c.repairHistory(ctx, n, last[n.UUID])
		var ev string
		switch n.ProvisionState {
		case states.Deploying, states.Cleaning, states.Verifying, states.Rescuing, states.Unrescuing:
			ev = states.EvFail
		case states.Deleting:
			ev = states.EvError
		}
		if ev == "" && n.TargetPowerState == "" {
			continue
		}
		from := n.ProvisionState
		n.TargetPowerState = ""
		if ev != "" {
			to, _ := states.Next(from, ev)
			n.LastError = fmt.Sprintf("Node was in %q state when the conductor restarted; the operation could not continue", from)
			n.ProvisionState = to
			n.ProvisionUpdatedAt = time.Now().UTC()
			if states.Stable(to) {
				n.TargetProvisionState = ""
			}
		}
		var events []*store.Event
		if ev != "" {
			events = append(events, newEvent(n, store.KindProvision, from, n.ProvisionState, ev, n.LastError, map[string]any{"reason": "conductor restart"}))
		}
		if err := c.store.UpdateNode(ctx, n, events...); err != nil {
			return fmt.Errorf("recover node %s: %w", n.UUID, err)
		}
		if ev != "" {
			c.log.Warn("failed node after restart", "node", n.UUID, "from", from, "state", n.ProvisionState)
		}
	}
	return nil
}

// repairHistory closes the gap a kill could leave in a node's history when
// a state and its event were two writes: a transition saved on the node
// whose event the dead process had not yet written (the state is the
// truth). States and events now commit together; this repairs databases
// written by older versions. last is the state the node's latest recorded
// transition went to (store.LastTransitions), "" for none.
func (c *Conductor) repairHistory(ctx context.Context, n *store.Node, last string) {
	if last == "" || last == n.ProvisionState {
		return
	}
	c.record(ctx, n, store.KindProvision, last, n.ProvisionState, EventUnrecorded,
		"the conductor stopped after saving this state change and before recording it", map[string]any{"reason": "conductor restart"})
}

// EventUnrecorded names a transition recorded at start-up that the previous
// process saved but did not record.
const EventUnrecorded = "unrecorded transition"
