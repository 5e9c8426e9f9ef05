// Package store is the driver's persistence seam: the Store interface and
// the records it keeps (nodes, ports, the event history, the agent's
// liveness). Implementations live beside it: driver/store/sqlite (the
// default, no cgo); a PostgreSQL store for several conductors can be added
// the same way without touching the conductor. driver/store/storetest is
// the suite every implementation must pass.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Sentinel errors; implementations wrap them with %w.
var (
	// ErrNotFound: no node, port or event with that identity.
	ErrNotFound = errors.New("not found")
	// ErrDuplicate: a node UUID or name, or a port UUID or MAC, already exists.
	ErrDuplicate = errors.New("already exists")
	// ErrLocked: the node is reserved by a conductor.
	ErrLocked = errors.New("node is locked")
	// ErrNotHeld: a write by the holder of a node's lock found the lock
	// held by another conductor, or by none (it was taken over).
	ErrNotHeld = errors.New("node lock no longer held")
)

// Node is an Ironic node. JSON columns are plain maps (numbers decode as float64).
type Node struct {
	UUID                 string         `json:"uuid"`
	Name                 string         `json:"name,omitempty"`
	Driver               string         `json:"driver"`
	DriverInfo           map[string]any `json:"driver_info"`
	DriverInternalInfo   map[string]any `json:"driver_internal_info"`
	InstanceInfo         map[string]any `json:"instance_info"`
	Properties           map[string]any `json:"properties"`
	Extra                map[string]any `json:"extra"`
	ProvisionState       string         `json:"provision_state"`
	TargetProvisionState string         `json:"target_provision_state,omitempty"`
	PowerState           string         `json:"power_state,omitempty"`
	TargetPowerState     string         `json:"target_power_state,omitempty"`
	Maintenance          bool           `json:"maintenance"`
	MaintenanceReason    string         `json:"maintenance_reason,omitempty"`
	Fault                string         `json:"fault,omitempty"`
	LastError            string         `json:"last_error,omitempty"`
	// Reservation is the conductor host holding the node's lock; only
	// Reserve and Release change it.
	Reservation string `json:"reservation,omitempty"`
	// CleanStep / DeployStep are the step running now (nil: none; the API
	// shows {}).
	CleanStep          *Step     `json:"clean_step"`
	DeployStep         *Step     `json:"deploy_step"`
	CreatedAt          time.Time `json:"created_at"`
	UpdatedAt          time.Time `json:"updated_at"`
	ProvisionUpdatedAt time.Time `json:"provision_updated_at"`
	// Agent is the node's running agent; UpdateNode does not write it.
	Agent Agent `json:"-"`
	// CleanPlan is the cleaning under way (nil: none).
	CleanPlan *CleanPlan `json:"-"`
}

// Step is a deploy or clean step as Ironic names it.
type Step struct {
	Interface       string         `json:"interface"`
	Step            string         `json:"step"`
	Priority        int            `json:"priority"`
	Args            map[string]any `json:"args,omitempty"`
	Abortable       bool           `json:"abortable,omitempty"`
	RebootRequested bool           `json:"reboot_requested,omitempty"`
}

// String is the step as Ironic's messages print it.
func (s *Step) String() string {
	if s == nil {
		return "{'interface': '', 'step': ''}"
	}
	return fmt.Sprintf("{'interface': '%s', 'step': '%s'}", s.Interface, s.Step)
}

// Key names a step as "interface.step", the way Ironic matches a requested
// step against the ones a driver offers.
func (s Step) Key() string { return s.Interface + "." + s.Step }

// CleanPlan is a cleaning: its steps in order, the one running, whether the
// user asked for them (manual cleaning), and the agent's
// hardware_manager_version the steps were planned with. The API shows it in
// driver_internal_info as clean_steps, clean_step_index, clean_manual and
// clean_version.
type CleanPlan struct {
	// Steps is nil until planned: for a manual cleaning Requested holds
	// what the user asked for.
	Steps     []Step         `json:"steps,omitempty"`
	Requested []Step         `json:"requested,omitempty"`
	Index     int            `json:"index"`
	Started   bool           `json:"started,omitempty"`
	Manual    bool           `json:"manual,omitempty"`
	Version   map[string]any `json:"version,omitempty"`
}

// Agent is what the node's running agent reported (lookup, heartbeats) and
// what the heartbeat watchdog did since. It has its own writes
// (RecordHeartbeat, IssueAgentToken, ClearAgent, SetWatchdog), each one
// small UPDATE: heartbeats write it without the node's lock, and a save of
// the locked node (UpdateNode) never rolls it back.
type Agent struct {
	URL           string
	Token         string
	LastHeartbeat time.Time
	Version       string
	// VerifyCA is the PEM of the agent's auto-TLS certificate
	// (agent_verify_ca): its https API is verified against it.
	VerifyCA string
	// Dialect is "legacy" (vendor_passthru lookup and heartbeat) or "v1".
	Dialect string
	// WatchdogReboots counts the watchdog's reboots since the last
	// heartbeat; WatchdogLastAction is when it last acted.
	WatchdogReboots    int
	WatchdogLastAction time.Time
}

// Heartbeat is one agent heartbeat as RecordHeartbeat writes it.
type Heartbeat struct {
	URL string
	// Version and VerifyCA are kept as they were when empty.
	Version  string
	VerifyCA string
	Dialect  string
	At       time.Time
	// TouchStates are the provision states in which the heartbeat also
	// sets provision_updated_at (the call-back waits).
	TouchStates []string
	// Check, when set, runs inside the write on the node as stored (its
	// scalar fields and Agent; no maps, steps or plan) before anything is
	// written: an error leaves the node unwritten and RecordHeartbeat
	// returns it as is. The agent's token and URL are checked against the
	// row the heartbeat writes, and the heartbeat needs no read of its own.
	// Check must not use the store: it runs while the write holds the
	// writer (SQLite) or the node's row lock (PostgreSQL).
	Check func(n *Node) error
}

// DriverInfoView is driver_info as the API shows it: the stored map with
// the agent's agent_url and agent_last_heartbeat (Unix seconds), where the
// agent driver spec (Juno) keeps them.
func (n *Node) DriverInfoView() map[string]any {
	out := cloneMap(n.DriverInfo)
	if out == nil {
		out = map[string]any{}
	}
	if n.Agent.URL != "" {
		out["agent_url"] = n.Agent.URL
	}
	if !n.Agent.LastHeartbeat.IsZero() {
		out["agent_last_heartbeat"] = n.Agent.LastHeartbeat.Unix()
	}
	return out
}

// DriverInternalInfoView is driver_internal_info as the API shows it: the
// stored map with the agent's fields under Ironic's names (agent_url,
// agent_last_heartbeat in Unix seconds, agent_version, agent_secret_token)
// and ours (agent_dialect, watchdog_reboots, watchdog_last_action).
func (n *Node) DriverInternalInfoView() map[string]any {
	out := cloneMap(n.DriverInternalInfo)
	if out == nil {
		out = map[string]any{}
	}
	a := n.Agent
	for k, v := range map[string]string{"agent_url": a.URL, "agent_version": a.Version, "agent_dialect": a.Dialect, "agent_secret_token": a.Token, "agent_verify_ca": a.VerifyCA} {
		if v != "" {
			out[k] = v
		}
	}
	if !a.LastHeartbeat.IsZero() {
		out["agent_last_heartbeat"] = a.LastHeartbeat.Unix()
	}
	if a.WatchdogReboots > 0 {
		out["watchdog_reboots"] = a.WatchdogReboots
	}
	if !a.WatchdogLastAction.IsZero() {
		out["watchdog_last_action"] = a.WatchdogLastAction.Unix()
	}
	if p := n.CleanPlan; p != nil {
		switch {
		case p.Steps != nil:
			out["clean_steps"] = p.Steps
		case p.Requested != nil:
			out["clean_steps"] = p.Requested
		}
		if p.Manual {
			out["clean_manual"] = true
		}
		if p.Started {
			out["clean_step_index"] = p.Index
		}
		if p.Version != nil {
			out["clean_version"] = p.Version
		}
	}
	return out
}

// StepView is a step as the API shows it: {} for none.
func StepView(s *Step) map[string]any {
	out := map[string]any{}
	if s == nil {
		return out
	}
	b, _ := json.Marshal(s)
	_ = json.Unmarshal(b, &out)
	return out
}

// Clone returns a deep copy, so callers can change maps without aliasing.
func (n *Node) Clone() *Node {
	c := *n
	c.DriverInfo = cloneMap(n.DriverInfo)
	c.DriverInternalInfo = cloneMap(n.DriverInternalInfo)
	c.InstanceInfo = cloneMap(n.InstanceInfo)
	c.Properties = cloneMap(n.Properties)
	c.Extra = cloneMap(n.Extra)
	c.CleanStep, c.DeployStep = n.CleanStep.clone(), n.DeployStep.clone()
	if n.CleanPlan != nil {
		p := *n.CleanPlan
		p.Steps, p.Requested = cloneSteps(p.Steps), cloneSteps(p.Requested)
		p.Version = cloneMap(p.Version)
		c.CleanPlan = &p
	}
	return &c
}

func (s *Step) clone() *Step {
	if s == nil {
		return nil
	}
	c := *s
	c.Args = cloneMap(s.Args)
	return &c
}

func cloneSteps(steps []Step) []Step {
	if steps == nil {
		return nil
	}
	out := make([]Step, len(steps))
	for i := range steps {
		out[i] = *steps[i].clone()
	}
	return out
}

func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return m
	}
	var out map[string]any
	if json.Unmarshal(b, &out) != nil {
		return m
	}
	return out
}

// Port is a NIC of a node; lookup matches agents on Address.
type Port struct {
	UUID       string         `json:"uuid"`
	Address    string         `json:"address"`
	NodeUUID   string         `json:"node_uuid"`
	PXEEnabled bool           `json:"pxe_enabled"`
	Extra      map[string]any `json:"extra"`
	CreatedAt  time.Time      `json:"created_at"`
	UpdatedAt  time.Time      `json:"updated_at"`
}

// Event kinds recorded in the history.
const (
	KindProvision    = "provision"
	KindPower        = "power"
	KindAgentCommand = "agent_command"
	KindHeartbeat    = "heartbeat"
	KindLookup       = "lookup"
	KindMaintenance  = "maintenance"
	KindError        = "error"
)

// Event is one append-only history record.
type Event struct {
	ID        int64           `json:"id"`
	UUID      string          `json:"uuid"`
	NodeUUID  string          `json:"node_uuid"`
	Time      time.Time       `json:"time"`
	Kind      string          `json:"kind"`
	FromState string          `json:"from_state,omitempty"`
	ToState   string          `json:"to_state,omitempty"`
	Event     string          `json:"event,omitempty"`
	Message   string          `json:"message,omitempty"`
	Detail    json.RawMessage `json:"detail,omitempty"`
}

// NodeFilter selects nodes in ListNodes; zero fields match everything.
type NodeFilter struct {
	ProvisionState string
	Driver         string
	Maintenance    *bool
	// ColumnsOnly lets a store leave the JSON columns out (driver_info,
	// driver_internal_info, instance_info, properties, extra, the steps and
	// the clean plan stay nil): a list that needs only the states reads
	// 1000s of nodes for a fraction of the cost. A store may ignore it.
	ColumnsOnly bool
	// Due, when set, keeps only the nodes due for the periodic check (see
	// Due): the store selects them in its query, so a check reads the due
	// nodes (and the stores' indexes narrow the search to the nodes in the
	// states it names), not every node.
	Due *Due
}

// Due selects the nodes the conductor's periodic check has to act on as of
// Now: unreserved, not in maintenance, and either
//   - in a state of CallbackTimeouts, unchanged (provision_updated_at) for
//     more than that state's timeout: its call-back timed out; or
//   - powered on (PowerState is WatchdogPower) in one of WatchdogStates,
//     with its agent silent for more than HeartbeatTimeout since its last
//     heartbeat or the watchdog's last action, whichever is later (a node
//     with neither is not due): the watchdog's.
//
// "More than" is strict, as the conductor counts it (now.Sub(t) > timeout):
// a node exactly at its timeout is not due yet.
type Due struct {
	Now time.Time
	// CallbackTimeouts maps a provision state to its call-back timeout;
	// timeouts <= 0 are off.
	CallbackTimeouts map[string]time.Duration
	// WatchdogStates empty or HeartbeatTimeout <= 0: no watchdog.
	WatchdogStates   []string
	WatchdogPower    string
	HeartbeatTimeout time.Duration
}

// States are the provision states a due node can be in: those of
// CallbackTimeouts with a timeout on and, with the watchdog on, the
// watched ones; sorted, so a store's query text stays the same from one
// check to the next. A store's query takes each state once (one index
// search per state, each node read once).
func (d *Due) States() []string {
	var out []string
	for st, limit := range d.CallbackTimeouts {
		if limit > 0 {
			out = append(out, st)
		}
	}
	if d.Watchdog() {
		out = append(out, d.WatchdogStates...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Watchdog reports whether the watchdog part of the selection is on.
func (d *Due) Watchdog() bool { return len(d.WatchdogStates) > 0 && d.HeartbeatTimeout > 0 }

// Watched reports whether the watchdog is on for nodes in state.
func (d *Due) Watched(state string) bool {
	return d.Watchdog() && slices.Contains(d.WatchdogStates, state)
}

// Matches is the selection in Go, over a node as read (the reference the
// stores' queries are tested against).
func (d *Due) Matches(n *Node) bool {
	if n.Reservation != "" || n.Maintenance {
		return false
	}
	if limit := d.CallbackTimeouts[n.ProvisionState]; limit > 0 && d.Now.Sub(n.ProvisionUpdatedAt) > limit {
		return true
	}
	if !d.Watched(n.ProvisionState) || n.PowerState != d.WatchdogPower {
		return false
	}
	last := n.Agent.LastHeartbeat
	if n.Agent.WatchdogLastAction.After(last) {
		last = n.Agent.WatchdogLastAction
	}
	return !last.IsZero() && d.Now.Sub(last) > d.HeartbeatTimeout
}

// PortFilter selects ports in ListPorts; zero fields match everything.
type PortFilter struct {
	NodeUUID string
	Address  string
}

// Store is the driver's persistence.
type Store interface {
	// CreateNode inserts n and appends events (its "create" event) in one
	// transaction: a crash leaves both or neither.
	CreateNode(ctx context.Context, n *Node, events ...*Event) error
	GetNode(ctx context.Context, uuid string) (*Node, error)
	// GetAgent returns the node's Agent as GetNode would (ErrNotFound for
	// no such node), reading the agent's columns alone: the fast-track
	// check reads them fresh under the node's lock, where a whole-node read
	// decoded every JSON column to keep one struct.
	GetAgent(ctx context.Context, uuid string) (Agent, error)
	GetNodeByName(ctx context.Context, name string) (*Node, error)
	ListNodes(ctx context.Context, f NodeFilter) ([]*Node, error)
	// UpdateNode writes every column but reservation and created_at, and
	// appends events, in one transaction: a provision state is never saved
	// without the event that records it.
	UpdateNode(ctx context.Context, n *Node, events ...*Event) error
	// UpdateNodeHeld is UpdateNode by the holder of the node's lock: in the
	// same statement it checks that host still holds the reservation, and
	// if not it writes nothing and returns ErrNotHeld. A conductor that hung
	// while another took its node over cannot undo the new owner's work.
	UpdateNodeHeld(ctx context.Context, n *Node, host string, events ...*Event) error
	// DeleteNode removes a node and its ports and appends events, in one
	// transaction; the node's earlier events stay.
	DeleteNode(ctx context.Context, uuid string, events ...*Event) error
	// Reserve sets the node's reservation to host if it is free (ErrLocked otherwise).
	Reserve(ctx context.Context, uuid, host string) error
	// Release clears the reservation if host holds it and appends events
	// in the same transaction (the events are appended either way): a task
	// that changed nothing records what it did and lets go in one write.
	Release(ctx context.Context, uuid, host string, events ...*Event) error
	// ReleaseAll clears every reservation host holds (after a conductor restart).
	ReleaseAll(ctx context.Context, host string) (int, error)
	// StealReservation moves the node's reservation from (a dead conductor)
	// to host in one statement, ErrNotHeld when from no longer holds it (it
	// released it, or another conductor took the node over first), ErrLocked
	// when a transaction in progress holds the node's row (try again later).
	StealReservation(ctx context.Context, uuid, from, host string) error

	CreatePort(ctx context.Context, p *Port) error
	GetPort(ctx context.Context, uuid string) (*Port, error)
	ListPorts(ctx context.Context, f PortFilter) ([]*Port, error)
	DeletePort(ctx context.Context, uuid string) error

	AddEvent(ctx context.Context, e *Event) error
	ListEvents(ctx context.Context, nodeUUID string) ([]Event, error)
	// LastTransitions returns, for each node that has one, the state its
	// history's latest provision event that changed state (FromState !=
	// ToState) went to, by node UUID: what a conductor checks every node's
	// saved state against at start-up, in one read where reading each
	// node's whole history took seconds at 10,000 nodes.
	LastTransitions(ctx context.Context) (map[string]string, error)

	// RecordHeartbeat writes a heartbeat as one UPDATE of the node's agent
	// fields (URL, last heartbeat, dialect, version unless empty; the
	// watchdog's count reset; provision_updated_at touched in
	// hb.TouchStates) and returns the agent fields as they were before.
	// ident is the node's UUID or, when no node has that UUID, its name.
	RecordHeartbeat(ctx context.Context, ident string, hb Heartbeat) (prev Agent, err error)
	// IssueAgentToken sets the agent token unless one is set; it reports
	// whether it did. A node a conductor holds (its reservation) gets no
	// token: ErrLocked, the check and the write in one statement, so the
	// lookup needs no lock of its own (it was three writes: reserve,
	// token, release).
	IssueAgentToken(ctx context.Context, uuid, token string) (bool, error)
	// ClearAgent forgets the running agent (URL, token, version, last
	// heartbeat, certificate; the dialect and the watchdog's count stay), after a power
	// off or reboot.
	ClearAgent(ctx context.Context, uuid string) error
	// SetWatchdog records a watchdog action: its count and time.
	SetWatchdog(ctx context.Context, uuid string, reboots int, at time.Time) error

	Close() error
}

// Rows is what database/sql's and pgx's query results share.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// ScanTransitions reads LastTransitions' rows (node UUID, state) into its
// map.
func ScanTransitions(rows Rows) (map[string]string, error) {
	out := map[string]string{}
	for rows.Next() {
		var id, to string
		if err := rows.Scan(&id, &to); err != nil {
			return nil, fmt.Errorf("last transitions: %w", err)
		}
		out[id] = to
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("last transitions: %w", err)
	}
	return out, nil
}

// NormalizeMAC returns a MAC in lower-case colon form, or "" if s is not a
// 6-byte MAC address.
func NormalizeMAC(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.ReplaceAll(s, "-", ":")
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return ""
	}
	for _, p := range parts {
		if len(p) != 2 || strings.Trim(p, "0123456789abcdef") != "" {
			return ""
		}
	}
	return strings.Join(parts, ":")
}

// ConductorRecord is a conductor in the conductors table: its host name,
// the driver classes it enables, its conductor group, the URL of its API
// (where other conductors forward actions), its last heartbeat and whether
// it is online (false once it stopped cleanly).
type ConductorRecord struct {
	Hostname  string    `json:"hostname"`
	Drivers   []string  `json:"drivers"`
	Group     string    `json:"conductor_group"`
	URL       string    `json:"url"`
	UpdatedAt time.Time `json:"updated_at"`
	Online    bool      `json:"online"`
}

// Registry is the conductors table of a store several conductors share
// (both stores implement it; one conductor on SQLite registers too).
type Registry interface {
	// RegisterConductor inserts or replaces c's row, online, updated at
	// c.UpdatedAt.
	RegisterConductor(ctx context.Context, c ConductorRecord) error
	// TouchConductor is a conductor's heartbeat: one UPDATE of updated_at
	// (ErrNotFound for a host not registered).
	TouchConductor(ctx context.Context, host string, at time.Time) error
	// UnregisterConductor marks host offline (a clean stop).
	UnregisterConductor(ctx context.Context, host string) error
	// ListConductors returns every registered conductor, by host name.
	ListConductors(ctx context.Context) ([]ConductorRecord, error)
}

type urgentKey struct{}

// Urgent marks ctx as a request a client waits on (the API's): a store
// with one writer may let its writes go before those of background work
// (call-backs, deploy steps), so that requests do not queue behind them.
func Urgent(ctx context.Context) context.Context {
	return context.WithValue(ctx, urgentKey{}, true)
}

// IsUrgent reports whether ctx was marked by Urgent.
func IsUrgent(ctx context.Context) bool {
	v, _ := ctx.Value(urgentKey{}).(bool)
	return v
}
