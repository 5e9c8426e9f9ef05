// Package postgres is the store.Store of several conductors: one
// PostgreSQL database they share (github.com/jackc/pgx/v5). Its semantics
// are the SQLite store's, checked by the same suite (driver/store/storetest):
// a node's write and its events commit in one transaction, and a heartbeat
// is one UPDATE of the agent's columns that returns what they were.
package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ironlab/ironlab/driver/store"
)

// IsDSN reports whether s names a PostgreSQL database (a URL starting with
// postgres:// or postgresql://) rather than an SQLite file.
func IsDSN(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// migrations are applied in order; schema_version holds how many ran. Times
// are Unix nanoseconds (0: never), JSON columns text, as in the SQLite store.
var migrations = []string{
	`CREATE TABLE nodes (
		uuid TEXT PRIMARY KEY,
		name TEXT UNIQUE,
		driver TEXT NOT NULL,
		driver_info TEXT NOT NULL DEFAULT '{}',
		driver_internal_info TEXT NOT NULL DEFAULT '{}',
		instance_info TEXT NOT NULL DEFAULT '{}',
		properties TEXT NOT NULL DEFAULT '{}',
		extra TEXT NOT NULL DEFAULT '{}',
		provision_state TEXT NOT NULL,
		target_provision_state TEXT NOT NULL DEFAULT '',
		power_state TEXT NOT NULL DEFAULT '',
		target_power_state TEXT NOT NULL DEFAULT '',
		maintenance BOOLEAN NOT NULL DEFAULT FALSE,
		maintenance_reason TEXT NOT NULL DEFAULT '',
		fault TEXT NOT NULL DEFAULT '',
		last_error TEXT NOT NULL DEFAULT '',
		reservation TEXT NOT NULL DEFAULT '',
		clean_step TEXT NOT NULL DEFAULT '{}',
		deploy_step TEXT NOT NULL DEFAULT '{}',
		created_at BIGINT NOT NULL,
		updated_at BIGINT NOT NULL,
		provision_updated_at BIGINT NOT NULL DEFAULT 0,
		agent_url TEXT NOT NULL DEFAULT '',
		agent_token TEXT NOT NULL DEFAULT '',
		agent_last_heartbeat BIGINT NOT NULL DEFAULT 0,
		agent_version TEXT NOT NULL DEFAULT '',
		agent_dialect TEXT NOT NULL DEFAULT '',
		watchdog_reboots INTEGER NOT NULL DEFAULT 0,
		watchdog_last_action BIGINT NOT NULL DEFAULT 0,
		clean_plan TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX nodes_provision_state ON nodes(provision_state);
	CREATE INDEX nodes_reservation ON nodes(reservation) WHERE reservation <> '';
	CREATE TABLE ports (
		uuid TEXT PRIMARY KEY,
		address TEXT NOT NULL UNIQUE,
		node_uuid TEXT NOT NULL REFERENCES nodes(uuid) ON DELETE CASCADE,
		pxe_enabled BOOLEAN NOT NULL DEFAULT TRUE,
		extra TEXT NOT NULL DEFAULT '{}',
		created_at BIGINT NOT NULL,
		updated_at BIGINT NOT NULL
	);
	CREATE INDEX ports_node ON ports(node_uuid);
	CREATE TABLE events (
		id BIGSERIAL PRIMARY KEY,
		uuid TEXT NOT NULL,
		node_uuid TEXT NOT NULL,
		time BIGINT NOT NULL,
		kind TEXT NOT NULL,
		from_state TEXT NOT NULL DEFAULT '',
		to_state TEXT NOT NULL DEFAULT '',
		event TEXT NOT NULL DEFAULT '',
		message TEXT NOT NULL DEFAULT '',
		detail TEXT
	);
	CREATE INDEX events_node ON events(node_uuid, id);`,
	// 2: the conductors table (registration and heartbeat of each conductor).
	`CREATE TABLE conductors (
		hostname TEXT PRIMARY KEY,
		drivers TEXT NOT NULL DEFAULT '[]',
		conductor_group TEXT NOT NULL DEFAULT '',
		url TEXT NOT NULL DEFAULT '',
		updated_at BIGINT NOT NULL,
		online BOOLEAN NOT NULL DEFAULT TRUE
	);`,
	// 3: the agent's auto-TLS certificate (agent_verify_ca) is an agent field.
	`ALTER TABLE nodes ADD COLUMN agent_verify_ca TEXT NOT NULL DEFAULT '';`,
	// 4: the index of provision states gets the power state, so the
	// periodic check's watchdog selection (store.Due: powered on, in a
	// watched state) reads only the nodes it may act on. It stays off the
	// heartbeat's columns (agent_last_heartbeat, watchdog_last_action,
	// provision_updated_at): a heartbeat changes no indexed column, so it
	// can stay a HOT update (no index writes).
	`DROP INDEX nodes_provision_state;
	CREATE INDEX nodes_provision_power ON nodes(provision_state, power_state);`,
}

// migrationLock is the advisory lock key conductors starting at once take
// around the migrations, so exactly one of them runs each.
const migrationLock = 0x1a0b1ab

// Postgres is the shared Store of several conductors.
type Postgres struct {
	db *pgxpool.Pool
	// beforeEvent, when set (tests only), runs before each event insert; an
	// error aborts the transaction as a crash at that point would.
	beforeEvent func(e *store.Event) error
}

var _ store.Store = (*Postgres)(nil)

// Open connects to the database named by dsn (postgres://user@host/db) and
// migrates it.
func Open(ctx context.Context, dsn string) (*Postgres, error) {
	return openWith(ctx, dsn, nil)
}

// openWith is Open with the pool's configuration adjusted (tests: a tracer).
func openWith(ctx context.Context, dsn string, adjust func(*pgxpool.Config)) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", Redact(dsn), err)
	}
	// A conductor that hangs (stopped, paused, starved) inside a transaction
	// keeps its row locks, and other conductors' takeovers and heartbeats of
	// those nodes wait on them: the server ends such a session after this
	// long idle in a transaction (its transaction rolls back). Every
	// transaction of the store is a few statements sent back to back. A
	// DSN parameter idle_in_transaction_session_timeout=... overrides it.
	if _, set := cfg.ConnConfig.RuntimeParams[idleInTxParam]; !set {
		cfg.ConnConfig.RuntimeParams[idleInTxParam] = idleInTxTimeout
	}
	if adjust != nil {
		adjust(cfg)
	}
	db, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", Redact(dsn), err)
	}
	s := &Postgres{db: db}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate store %s: %w", Redact(dsn), err)
	}
	return s, nil
}

// idleInTxTimeout is the default idle_in_transaction_session_timeout of
// the store's sessions (see openWith).
const (
	idleInTxParam   = "idle_in_transaction_session_timeout"
	idleInTxTimeout = "10s"
)

// Redact is the DSN without its password, for messages.
func Redact(dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "(unparsable PostgreSQL DSN)"
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
}

func (s *Postgres) migrate(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
			return err
		}
		var v int
		err := tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		if v > len(migrations) {
			return fmt.Errorf("the database has schema version %d; this ironlab knows %d (a newer ironlab wrote it)", v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			if _, err := tx.Exec(ctx, migrations[i]); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
		_, err = tx.Exec(ctx, `UPDATE schema_version SET version = $1`, len(migrations))
		return err
	})
}

// Close closes the connections.
func (s *Postgres) Close() error {
	s.db.Close()
	return nil
}

func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v).UTC()
}

func encMap(m map[string]any) string {
	if m == nil {
		return "{}"
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "{}"
	}
	return string(b)
}

func decMap(s string) map[string]any {
	m := map[string]any{}
	if s != "" {
		_ = json.Unmarshal([]byte(s), &m)
	}
	return m
}

func encStep(s *store.Step) string {
	if s == nil {
		return "{}"
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func decStep(v string) *store.Step {
	var s store.Step
	if v == "" || json.Unmarshal([]byte(v), &s) != nil || (s.Step == "" && s.Interface == "") {
		return nil
	}
	return &s
}

func encPlan(p *store.CleanPlan) string {
	if p == nil {
		return ""
	}
	b, _ := json.Marshal(p)
	return string(b)
}

func decPlan(v string) *store.CleanPlan {
	if v == "" {
		return nil
	}
	var p store.CleanPlan
	if json.Unmarshal([]byte(v), &p) != nil {
		return nil
	}
	return &p
}

// pgCode is the SQLSTATE of a server error, "" for others.
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
)

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// execer is what the pool and a transaction share.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (s *Postgres) addEvents(ctx context.Context, tx execer, events []*store.Event) error {
	for _, e := range events {
		if err := s.insertEvent(ctx, tx, e); err != nil {
			return err
		}
	}
	return nil
}

const nodeCols = `uuid, name, driver, driver_info, driver_internal_info, instance_info, properties, extra,
	provision_state, target_provision_state, power_state, target_power_state, maintenance, maintenance_reason,
	fault, last_error, reservation, clean_step, deploy_step, created_at, updated_at, provision_updated_at,
	agent_url, agent_token, agent_last_heartbeat, agent_version, agent_dialect, watchdog_reboots, watchdog_last_action, clean_plan, agent_verify_ca`

// CreateNode inserts n and its events; a duplicate UUID or name is ErrDuplicate.
func (s *Postgres) CreateNode(ctx context.Context, n *store.Node, events ...*store.Event) error {
	now := time.Now().UTC()
	if n.CreatedAt.IsZero() {
		n.CreatedAt = now
	}
	n.UpdatedAt = n.CreatedAt
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO nodes (`+nodeCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,
			$16,$17,$18,$19,$20,$21,$22,$23,$24,$25,$26,$27,$28,$29,$30,$31)`,
			n.UUID, nullable(n.Name), n.Driver, encMap(n.DriverInfo), encMap(n.DriverInternalInfo), encMap(n.InstanceInfo),
			encMap(n.Properties), encMap(n.Extra), n.ProvisionState, n.TargetProvisionState, n.PowerState, n.TargetPowerState,
			n.Maintenance, n.MaintenanceReason, n.Fault, n.LastError, n.Reservation, encStep(n.CleanStep), encStep(n.DeployStep),
			ns(n.CreatedAt), ns(n.UpdatedAt), ns(n.ProvisionUpdatedAt),
			n.Agent.URL, n.Agent.Token, ns(n.Agent.LastHeartbeat), n.Agent.Version, n.Agent.Dialect,
			n.Agent.WatchdogReboots, ns(n.Agent.WatchdogLastAction), encPlan(n.CleanPlan), n.Agent.VerifyCA)
		if err != nil {
			return err
		}
		return s.addEvents(ctx, tx, events)
	})
	if err != nil {
		if pgCode(err) == uniqueViolation {
			return fmt.Errorf("create node %s (name %q): %w", n.UUID, n.Name, store.ErrDuplicate)
		}
		return fmt.Errorf("create node %s: %w", n.UUID, err)
	}
	return nil
}

func scanNode(r pgx.Row) (*store.Node, error) {
	var n store.Node
	var name *string
	var di, dii, ii, props, extra, cs, ds, plan string
	var c, u, p, hb, wd int64
	a := &n.Agent
	err := r.Scan(&n.UUID, &name, &n.Driver, &di, &dii, &ii, &props, &extra, &n.ProvisionState,
		&n.TargetProvisionState, &n.PowerState, &n.TargetPowerState, &n.Maintenance, &n.MaintenanceReason,
		&n.Fault, &n.LastError, &n.Reservation, &cs, &ds, &c, &u, &p,
		&a.URL, &a.Token, &hb, &a.Version, &a.Dialect, &a.WatchdogReboots, &wd, &plan, &a.VerifyCA)
	if err != nil {
		return nil, err
	}
	if name != nil {
		n.Name = *name
	}
	n.DriverInfo, n.DriverInternalInfo, n.InstanceInfo = decMap(di), decMap(dii), decMap(ii)
	n.Properties, n.Extra, n.CleanStep, n.DeployStep = decMap(props), decMap(extra), decStep(cs), decStep(ds)
	n.CleanPlan = decPlan(plan)
	n.CreatedAt, n.UpdatedAt, n.ProvisionUpdatedAt = fromNS(c), fromNS(u), fromNS(p)
	a.LastHeartbeat, a.WatchdogLastAction = fromNS(hb), fromNS(wd)
	return &n, nil
}

// stateCols are the columns of a NodeFilter.ColumnsOnly list: no JSON.
const stateCols = `uuid, name, driver, provision_state, target_provision_state, power_state, target_power_state,
	maintenance, maintenance_reason, fault, last_error, reservation, created_at, updated_at, provision_updated_at,
	agent_url, agent_last_heartbeat, agent_version, agent_dialect, watchdog_reboots, watchdog_last_action`

func scanNodeState(r pgx.Row) (*store.Node, error) {
	var n store.Node
	var name *string
	var c, u, p, hb, wd int64
	a := &n.Agent
	err := r.Scan(&n.UUID, &name, &n.Driver, &n.ProvisionState, &n.TargetProvisionState, &n.PowerState, &n.TargetPowerState,
		&n.Maintenance, &n.MaintenanceReason, &n.Fault, &n.LastError, &n.Reservation, &c, &u, &p,
		&a.URL, &hb, &a.Version, &a.Dialect, &a.WatchdogReboots, &wd)
	if err != nil {
		return nil, err
	}
	if name != nil {
		n.Name = *name
	}
	n.CreatedAt, n.UpdatedAt, n.ProvisionUpdatedAt = fromNS(c), fromNS(u), fromNS(p)
	a.LastHeartbeat, a.WatchdogLastAction = fromNS(hb), fromNS(wd)
	return &n, nil
}

func (s *Postgres) getNode(ctx context.Context, col, v string) (*store.Node, error) {
	n, err := scanNode(s.db.QueryRow(ctx, `SELECT `+nodeCols+` FROM nodes WHERE `+col+` = $1`, v))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("node %s: %w", v, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get node %s: %w", v, err)
	}
	return n, nil
}

// GetNode reads a node by UUID.
func (s *Postgres) GetNode(ctx context.Context, id string) (*store.Node, error) {
	return s.getNode(ctx, "uuid", id)
}

// qAgentOf reads a node's agent fields.
const qAgentOf = `SELECT agent_url, agent_token, agent_last_heartbeat, agent_version, agent_dialect,
	watchdog_reboots, watchdog_last_action, agent_verify_ca FROM nodes WHERE uuid = $1`

// GetAgent reads the node's agent fields only.
func (s *Postgres) GetAgent(ctx context.Context, id string) (store.Agent, error) {
	var a store.Agent
	var hb, wd int64
	err := s.db.QueryRow(ctx, qAgentOf, id).Scan(&a.URL, &a.Token, &hb, &a.Version, &a.Dialect,
		&a.WatchdogReboots, &wd, &a.VerifyCA)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Agent{}, fmt.Errorf("node %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Agent{}, fmt.Errorf("get agent of node %s: %w", id, err)
	}
	a.LastHeartbeat, a.WatchdogLastAction = fromNS(hb), fromNS(wd)
	return a, nil
}

// GetNodeByName reads a node by name.
func (s *Postgres) GetNodeByName(ctx context.Context, name string) (*store.Node, error) {
	return s.getNode(ctx, "name", name)
}

// ListNodes returns the nodes matching f, oldest first.
func (s *Postgres) ListNodes(ctx context.Context, f store.NodeFilter) ([]*store.Node, error) {
	cols, scan := nodeCols, scanNode
	if f.ColumnsOnly {
		cols, scan = stateCols, scanNodeState
	}
	q := `SELECT ` + cols + ` FROM nodes WHERE TRUE`
	var args []any
	if f.ProvisionState != "" {
		args = append(args, f.ProvisionState)
		q += fmt.Sprintf(` AND provision_state = $%d`, len(args))
	}
	if f.Driver != "" {
		args = append(args, f.Driver)
		q += fmt.Sprintf(` AND driver = $%d`, len(args))
	}
	if f.Maintenance != nil {
		args = append(args, *f.Maintenance)
		q += fmt.Sprintf(` AND maintenance = $%d`, len(args))
	}
	if f.Due != nil {
		var w string
		w, args = dueWhere(f.Due, args)
		q += w
	}
	rows, err := s.db.Query(ctx, q+` ORDER BY created_at, uuid`, args...)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var out []*store.Node
	for rows.Next() {
		n, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return out, nil
}

// dueWhere is the condition of a NodeFilter.Due (store.Due), its arguments
// appended to args: one term per provision state, each a scan of the
// index of (provision_state, power_state) (migration 4). Times are Unix
// nanoseconds, 0 for never: "older than the timeout" is a column below Now
// minus the timeout, and the watchdog's "a heartbeat or an action at all"
// is the later of the two above 0.
func dueWhere(d *store.Due, args []any) (string, []any) {
	now := d.Now.UnixNano()
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	var or []string
	for _, st := range d.States() {
		term := `(provision_state = ` + arg(st) + ` AND (`
		var either []string
		if limit := d.CallbackTimeouts[st]; limit > 0 {
			either = append(either, `provision_updated_at < `+arg(now-limit.Nanoseconds()))
		}
		if d.Watched(st) {
			either = append(either, `(power_state = `+arg(d.WatchdogPower)+` AND GREATEST(agent_last_heartbeat, watchdog_last_action) > 0
				AND GREATEST(agent_last_heartbeat, watchdog_last_action) < `+arg(now-d.HeartbeatTimeout.Nanoseconds())+`)`)
		}
		or = append(or, term+strings.Join(either, ` OR `)+`))`)
	}
	if len(or) == 0 {
		return ` AND FALSE`, args
	}
	return ` AND reservation = '' AND NOT maintenance AND (` + strings.Join(or, ` OR `) + `)`, args
}

// UpdateNode writes n back but for its agent fields and reservation, with
// its events, and sets n.UpdatedAt. provision_updated_at never goes back: a
// heartbeat may have touched it since n was read.
func (s *Postgres) UpdateNode(ctx context.Context, n *store.Node, events ...*store.Event) error {
	return s.updateNode(ctx, n, "", events)
}

// UpdateNodeHeld is UpdateNode while host holds the node's reservation.
func (s *Postgres) UpdateNodeHeld(ctx context.Context, n *store.Node, host string, events ...*store.Event) error {
	if host == "" {
		return fmt.Errorf("update node %s: no lock holder given", n.UUID)
	}
	return s.updateNode(ctx, n, host, events)
}

// updateNode writes n; a host other than "" must hold its reservation.
func (s *Postgres) updateNode(ctx context.Context, n *store.Node, host string, events []*store.Event) error {
	n.UpdatedAt = time.Now().UTC()
	found, heldBy := true, ""
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		args := []any{nullable(n.Name), n.Driver, encMap(n.DriverInfo), encMap(n.DriverInternalInfo), encMap(n.InstanceInfo),
			encMap(n.Properties), encMap(n.Extra), n.ProvisionState, n.TargetProvisionState, n.PowerState,
			n.TargetPowerState, n.Maintenance, n.MaintenanceReason, n.Fault, n.LastError, encStep(n.CleanStep),
			encStep(n.DeployStep), ns(n.UpdatedAt), ns(n.ProvisionUpdatedAt), encPlan(n.CleanPlan), n.UUID}
		held := ""
		if host != "" {
			held, args = ` AND reservation=$22`, append(args, host)
		}
		tag, err := tx.Exec(ctx, `UPDATE nodes SET name=$1, driver=$2, driver_info=$3, driver_internal_info=$4,
		instance_info=$5, properties=$6, extra=$7, provision_state=$8, target_provision_state=$9, power_state=$10,
		target_power_state=$11, maintenance=$12, maintenance_reason=$13, fault=$14, last_error=$15, clean_step=$16,
		deploy_step=$17, updated_at=$18, provision_updated_at=GREATEST(provision_updated_at, $19), clean_plan=$20 WHERE uuid=$21`+held, args...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			if host != "" {
				if err := tx.QueryRow(ctx, `SELECT reservation FROM nodes WHERE uuid = $1`, n.UUID).Scan(&heldBy); err == nil {
					return store.ErrNotHeld
				}
			}
			found = false
			return store.ErrNotFound
		}
		return s.addEvents(ctx, tx, events)
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotHeld):
		return fmt.Errorf("update node %s by %s: reserved by %q: %w", n.UUID, host, heldBy, store.ErrNotHeld)
	case !found:
		return fmt.Errorf("update node %s: %w", n.UUID, store.ErrNotFound)
	case pgCode(err) == uniqueViolation:
		return fmt.Errorf("update node %s (name %q): %w", n.UUID, n.Name, store.ErrDuplicate)
	}
	return fmt.Errorf("update node %s: %w", n.UUID, err)
}

// DeleteNode removes a node and its ports, with its events.
func (s *Postgres) DeleteNode(ctx context.Context, id string, events ...*store.Event) error {
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM nodes WHERE uuid = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		return s.addEvents(ctx, tx, events)
	})
	if err != nil {
		return fmt.Errorf("delete node %s: %w", id, err)
	}
	return nil
}

// Reserve takes the node's reservation for host.
func (s *Postgres) Reserve(ctx context.Context, id, host string) error {
	tag, err := s.db.Exec(ctx, `UPDATE nodes SET reservation = $1 WHERE uuid = $2 AND reservation = ''`, host, id)
	if err != nil {
		return fmt.Errorf("reserve node %s: %w", id, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var holder string
	err = s.db.QueryRow(ctx, `SELECT reservation FROM nodes WHERE uuid = $1`, id).Scan(&holder)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("reserve node %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("reserve node %s: %w", id, err)
	}
	return fmt.Errorf("node %s is locked by host %s: %w", id, holder, store.ErrLocked)
}

// StealReservation moves the reservation from a dead host to host.
func (s *Postgres) StealReservation(ctx context.Context, id, from, host string) error {
	if from == "" || host == "" {
		return fmt.Errorf("take over node %s: empty host name (from %q, to %q)", id, from, host)
	}
	// SKIP LOCKED: a conductor that hung inside a transaction on the row
	// keeps it locked (until idle_in_transaction_session_timeout ends its
	// session); the takeover does not wait for it but tries again at the
	// next refresh.
	tag, err := s.db.Exec(ctx, `UPDATE nodes SET reservation = $1 WHERE uuid =
		(SELECT uuid FROM nodes WHERE uuid = $2 AND reservation = $3 FOR UPDATE SKIP LOCKED)`, host, id, from)
	if err != nil {
		return fmt.Errorf("take over node %s from %s: %w", id, from, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var holder string
	if err := s.db.QueryRow(ctx, `SELECT reservation FROM nodes WHERE uuid = $1`, id).Scan(&holder); errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("take over node %s: %w", id, store.ErrNotFound)
	}
	if holder == from {
		return fmt.Errorf("take over node %s from %s: its row is locked by a transaction in progress: %w", id, from, store.ErrLocked)
	}
	return fmt.Errorf("take over node %s from %s: reserved by %q: %w", id, from, holder, store.ErrNotHeld)
}

// Release drops host's reservation of the node.
func (s *Postgres) Release(ctx context.Context, id, host string, events ...*store.Event) error {
	if len(events) > 0 {
		err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `UPDATE nodes SET reservation = '' WHERE uuid = $1 AND reservation = $2`, id, host); err != nil {
				return err
			}
			return s.addEvents(ctx, tx, events)
		})
		if err != nil {
			return fmt.Errorf("release node %s: %w", id, err)
		}
		return nil
	}
	if _, err := s.db.Exec(ctx, `UPDATE nodes SET reservation = '' WHERE uuid = $1 AND reservation = $2`, id, host); err != nil {
		return fmt.Errorf("release node %s: %w", id, err)
	}
	return nil
}

// ReleaseAll drops every reservation held by host.
func (s *Postgres) ReleaseAll(ctx context.Context, host string) (int, error) {
	tag, err := s.db.Exec(ctx, `UPDATE nodes SET reservation = '' WHERE reservation = $1`, host)
	if err != nil {
		return 0, fmt.Errorf("release locks of %s: %w", host, err)
	}
	return int(tag.RowsAffected()), nil
}

const portCols = `uuid, address, node_uuid, pxe_enabled, extra, created_at, updated_at`

// CreatePort inserts p with its address normalised; a duplicate MAC is
// ErrDuplicate, an unknown node ErrNotFound.
func (s *Postgres) CreatePort(ctx context.Context, p *store.Port) error {
	mac := store.NormalizeMAC(p.Address)
	if mac == "" {
		return fmt.Errorf("create port: invalid MAC address %q", p.Address)
	}
	p.Address = mac
	if p.UUID == "" {
		p.UUID = uuid.NewString()
	}
	now := time.Now().UTC()
	p.CreatedAt, p.UpdatedAt = now, now
	_, err := s.db.Exec(ctx, `INSERT INTO ports (`+portCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7)`,
		p.UUID, p.Address, p.NodeUUID, p.PXEEnabled, encMap(p.Extra), ns(now), ns(now))
	switch pgCode(err) {
	case "":
		if err != nil {
			return fmt.Errorf("create port %s: %w", mac, err)
		}
		return nil
	case uniqueViolation:
		return fmt.Errorf("create port with MAC %s: %w", mac, store.ErrDuplicate)
	case foreignKeyViolation:
		return fmt.Errorf("create port %s: node %s: %w", mac, p.NodeUUID, store.ErrNotFound)
	}
	return fmt.Errorf("create port %s: %w", mac, err)
}

func scanPort(r pgx.Row) (*store.Port, error) {
	var p store.Port
	var extra string
	var c, u int64
	if err := r.Scan(&p.UUID, &p.Address, &p.NodeUUID, &p.PXEEnabled, &extra, &c, &u); err != nil {
		return nil, err
	}
	p.Extra = decMap(extra)
	p.CreatedAt, p.UpdatedAt = fromNS(c), fromNS(u)
	return &p, nil
}

// GetPort reads a port by UUID.
func (s *Postgres) GetPort(ctx context.Context, id string) (*store.Port, error) {
	p, err := scanPort(s.db.QueryRow(ctx, `SELECT `+portCols+` FROM ports WHERE uuid = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("port %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get port %s: %w", id, err)
	}
	return p, nil
}

// ListPorts returns ports matching f, oldest first.
func (s *Postgres) ListPorts(ctx context.Context, f store.PortFilter) ([]*store.Port, error) {
	q := `SELECT ` + portCols + ` FROM ports WHERE TRUE`
	var args []any
	if f.NodeUUID != "" {
		args = append(args, f.NodeUUID)
		q += fmt.Sprintf(` AND node_uuid = $%d`, len(args))
	}
	if f.Address != "" {
		args = append(args, store.NormalizeMAC(f.Address))
		q += fmt.Sprintf(` AND address = $%d`, len(args))
	}
	rows, err := s.db.Query(ctx, q+` ORDER BY created_at, uuid`, args...)
	if err != nil {
		return nil, fmt.Errorf("list ports: %w", err)
	}
	defer rows.Close()
	var out []*store.Port
	for rows.Next() {
		p, err := scanPort(rows)
		if err != nil {
			return nil, fmt.Errorf("list ports: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list ports: %w", err)
	}
	return out, nil
}

// DeletePort removes a port.
func (s *Postgres) DeletePort(ctx context.Context, id string) error {
	tag, err := s.db.Exec(ctx, `DELETE FROM ports WHERE uuid = $1`, id)
	if err != nil {
		return fmt.Errorf("delete port %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete port %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// AddEvent appends e, filling ID, UUID and Time when unset.
func (s *Postgres) AddEvent(ctx context.Context, e *store.Event) error {
	return s.insertEvent(ctx, s.db, e)
}

func (s *Postgres) insertEvent(ctx context.Context, db execer, e *store.Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if e.UUID == "" {
		e.UUID = uuid.NewString()
	}
	var detail *string
	if len(e.Detail) > 0 {
		d := string(e.Detail)
		detail = &d
	}
	if s.beforeEvent != nil {
		if err := s.beforeEvent(e); err != nil {
			return fmt.Errorf("add %s event for node %s: %w", e.Kind, e.NodeUUID, err)
		}
	}
	err := db.QueryRow(ctx, `INSERT INTO events (uuid, node_uuid, time, kind, from_state, to_state, event, message, detail)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) RETURNING id`, e.UUID, e.NodeUUID, e.Time.UnixNano(), e.Kind, e.FromState,
		e.ToState, e.Event, e.Message, detail).Scan(&e.ID)
	if err != nil {
		return fmt.Errorf("add %s event for node %s: %w", e.Kind, e.NodeUUID, err)
	}
	return nil
}

// ListEvents returns a node's events in the order they were recorded.
func (s *Postgres) ListEvents(ctx context.Context, nodeUUID string) ([]store.Event, error) {
	rows, err := s.db.Query(ctx, `SELECT id, uuid, node_uuid, time, kind, from_state, to_state, event, message, detail
		FROM events WHERE node_uuid = $1 ORDER BY id`, nodeUUID)
	if err != nil {
		return nil, fmt.Errorf("list events of node %s: %w", nodeUUID, err)
	}
	defer rows.Close()
	out := []store.Event{}
	for rows.Next() {
		var e store.Event
		var t int64
		var detail *string
		if err := rows.Scan(&e.ID, &e.UUID, &e.NodeUUID, &t, &e.Kind, &e.FromState, &e.ToState, &e.Event, &e.Message, &detail); err != nil {
			return nil, fmt.Errorf("list events of node %s: %w", nodeUUID, err)
		}
		e.Time = fromNS(t)
		if detail != nil {
			e.Detail = json.RawMessage(*detail)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list events of node %s: %w", nodeUUID, err)
	}
	return out, nil
}

// LastTransitions returns each node's latest provision transition's state:
// one backward scan of events_node per node, stopping at its first match.
func (s *Postgres) LastTransitions(ctx context.Context) (map[string]string, error) {
	rows, err := s.db.Query(ctx, `SELECT n.uuid, t.to_state FROM nodes n CROSS JOIN LATERAL (
		SELECT to_state FROM events e WHERE e.node_uuid = n.uuid AND e.kind = $1 AND e.from_state <> e.to_state
		ORDER BY e.id DESC LIMIT 1) t`, store.KindProvision)
	if err != nil {
		return nil, fmt.Errorf("last transitions: %w", err)
	}
	defer rows.Close()
	return store.ScanTransitions(rows)
}

// byIdent matches the node whose UUID is the parameter p or, when none has
// it, the one named p.
func byIdent(p string) string {
	return `(uuid = ` + p + ` OR (name = ` + p + ` AND NOT EXISTS (SELECT 1 FROM nodes WHERE uuid = ` + p + `)))`
}

// heartbeatUpdate is the whole heartbeat: one UPDATE that locks the row
// where picks (the sub-select FOR UPDATE), writes the agent columns and
// returns them as they were.
func heartbeatUpdate(where string) string {
	return `UPDATE nodes n SET agent_url = $1, agent_last_heartbeat = $2,
	agent_version = CASE WHEN $3 = '' THEN n.agent_version ELSE $3 END, agent_dialect = $4,
	agent_verify_ca = CASE WHEN $7 = '' THEN n.agent_verify_ca ELSE $7 END,
	watchdog_reboots = 0, watchdog_last_action = 0,
	provision_updated_at = CASE WHEN n.provision_state = ANY($5) THEN GREATEST(n.provision_updated_at, $2) ELSE n.provision_updated_at END
	FROM (SELECT uuid, agent_url, agent_token, agent_last_heartbeat, agent_version, agent_dialect, watchdog_reboots, watchdog_last_action, agent_verify_ca
		FROM nodes WHERE ` + where + ` FOR UPDATE) old
	WHERE n.uuid = old.uuid
	RETURNING old.agent_url, old.agent_token, old.agent_last_heartbeat, old.agent_version, old.agent_dialect,
		old.watchdog_reboots, old.watchdog_last_action, old.agent_verify_ca`
}

var (
	// heartbeatSQL writes the heartbeat of the node $6 (UUID or name).
	heartbeatSQL = heartbeatUpdate(byIdent("$6"))
	// heartbeatCheckedSQL writes it only if the row is still as
	// Heartbeat.Check saw it ($6, $8-$21: every column heartbeatReadSQL read).
	heartbeatCheckedSQL = heartbeatUpdate(`uuid = $6 AND name IS NOT DISTINCT FROM $8 AND driver = $9 AND provision_state = $10
		AND maintenance = $11 AND reservation = $12 AND provision_updated_at = $13 AND agent_url = $14 AND agent_token = $15
		AND agent_last_heartbeat = $16 AND agent_version = $17 AND agent_dialect = $18 AND watchdog_reboots = $19
		AND watchdog_last_action = $20 AND agent_verify_ca = $21`)
	// heartbeatReadSQL reads what Heartbeat.Check looks at.
	heartbeatReadSQL = `SELECT uuid, name, driver, provision_state, maintenance, reservation, provision_updated_at,
	agent_url, agent_token, agent_last_heartbeat, agent_version, agent_dialect, watchdog_reboots, watchdog_last_action, agent_verify_ca
	FROM nodes WHERE ` + byIdent("$1")
)

// heartbeatRetries bounds the reads of a checked heartbeat whose row
// changed between its read and its write.
const heartbeatRetries = 8

// RecordHeartbeat writes a heartbeat in one UPDATE and returns the agent
// fields as they were before it. With hb.Check, the row is read and
// checked first, and the UPDATE applies only if the row is still as read
// (else it is read and checked again): two statements, as a read of the
// node and the write were before, instead of a transaction of four.
func (s *Postgres) RecordHeartbeat(ctx context.Context, ident string, hb store.Heartbeat) (store.Agent, error) {
	touch := hb.TouchStates
	if touch == nil {
		touch = []string{}
	}
	var prev store.Agent
	write := func(q string, args ...any) error {
		var last, wd int64
		args = append([]any{hb.URL, ns(hb.At), hb.Version, hb.Dialect, touch, args[0], hb.VerifyCA}, args[1:]...)
		if err := s.db.QueryRow(ctx, q, args...).Scan(&prev.URL, &prev.Token, &last, &prev.Version, &prev.Dialect,
			&prev.WatchdogReboots, &wd, &prev.VerifyCA); err != nil {
			return err
		}
		prev.LastHeartbeat, prev.WatchdogLastAction = fromNS(last), fromNS(wd)
		return nil
	}
	var err error
	if hb.Check == nil {
		err = write(heartbeatSQL, ident)
	} else {
		err = errHeartbeatRaced
		for i := 0; i < heartbeatRetries && errors.Is(err, errHeartbeatRaced); i++ {
			var n *store.Node
			var row []any
			n, row, err = s.readHeartbeatNode(ctx, ident)
			if err != nil {
				break
			}
			if cerr := hb.Check(n); cerr != nil {
				return store.Agent{}, cerr
			}
			err = write(heartbeatCheckedSQL, row...)
			if errors.Is(err, pgx.ErrNoRows) {
				err = errHeartbeatRaced // changed (or deleted) since the read: read again
			}
		}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Agent{}, fmt.Errorf("record heartbeat of node %s: %w", ident, store.ErrNotFound)
	}
	if err != nil {
		return store.Agent{}, fmt.Errorf("record heartbeat of node %s: %w", ident, err)
	}
	return prev, nil
}

var errHeartbeatRaced = fmt.Errorf("the node changed between the heartbeat's read and its write %d times in a row", heartbeatRetries)

// readHeartbeatNode reads the node's heartbeat fields, and them as the
// UUID and guard arguments of heartbeatCheckedSQL.
func (s *Postgres) readHeartbeatNode(ctx context.Context, ident string) (*store.Node, []any, error) {
	n := &store.Node{}
	var name *string
	var p, last, wd int64
	a := &n.Agent
	if err := s.db.QueryRow(ctx, heartbeatReadSQL, ident).Scan(&n.UUID, &name, &n.Driver, &n.ProvisionState, &n.Maintenance,
		&n.Reservation, &p, &a.URL, &a.Token, &last, &a.Version, &a.Dialect, &a.WatchdogReboots, &wd, &a.VerifyCA); err != nil {
		return nil, nil, err
	}
	if name != nil {
		n.Name = *name
	}
	n.ProvisionUpdatedAt, a.LastHeartbeat, a.WatchdogLastAction = fromNS(p), fromNS(last), fromNS(wd)
	row := []any{n.UUID, name, n.Driver, n.ProvisionState, n.Maintenance, n.Reservation, p,
		a.URL, a.Token, last, a.Version, a.Dialect, a.WatchdogReboots, wd, a.VerifyCA}
	return n, row, nil
}

// agentWrite runs one UPDATE of a node's agent columns; none matched and
// the node absent is ErrNotFound.
func (s *Postgres) agentWrite(ctx context.Context, what, id, set string, args ...any) (bool, error) {
	tag, err := s.db.Exec(ctx, `UPDATE nodes SET `+set, append(args, id)...)
	if err != nil {
		return false, fmt.Errorf("%s of node %s: %w", what, id, err)
	}
	if tag.RowsAffected() == 1 {
		return true, nil
	}
	var one int
	err = s.db.QueryRow(ctx, `SELECT 1 FROM nodes WHERE uuid = $1`, id).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("%s: node %s: %w", what, id, store.ErrNotFound)
	}
	return false, err
}

// IssueAgentToken sets the token unless one is set.
func (s *Postgres) IssueAgentToken(ctx context.Context, id, token string) (bool, error) {
	tag, err := s.db.Exec(ctx, `UPDATE nodes SET agent_token = $1 WHERE agent_token = '' AND reservation = '' AND uuid = $2`, token, id)
	if err != nil {
		return false, fmt.Errorf("issue agent token of node %s: %w", id, err)
	}
	if tag.RowsAffected() == 1 {
		return true, nil
	}
	var have, holder string
	err = s.db.QueryRow(ctx, `SELECT agent_token, reservation FROM nodes WHERE uuid = $1`, id).Scan(&have, &holder)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, fmt.Errorf("issue agent token: node %s: %w", id, store.ErrNotFound)
	case err != nil:
		return false, fmt.Errorf("issue agent token of node %s: %w", id, err)
	case have == "" && holder != "":
		return false, fmt.Errorf("issue agent token: node %s is locked by host %s: %w", id, holder, store.ErrLocked)
	}
	return false, nil
}

// ClearAgent forgets the node's running agent.
func (s *Postgres) ClearAgent(ctx context.Context, id string) error {
	_, err := s.agentWrite(ctx, "clear agent", id, `agent_url = '', agent_token = '', agent_version = '', agent_last_heartbeat = 0, agent_verify_ca = '' WHERE uuid = $1`)
	return err
}

// SetWatchdog records a watchdog action.
func (s *Postgres) SetWatchdog(ctx context.Context, id string, reboots int, at time.Time) error {
	_, err := s.agentWrite(ctx, "record watchdog action", id, `watchdog_reboots = $1, watchdog_last_action = $2 WHERE uuid = $3`, reboots, ns(at))
	return err
}

var _ store.Registry = (*Postgres)(nil)

// RegisterConductor inserts or replaces the conductor's row.
func (s *Postgres) RegisterConductor(ctx context.Context, c store.ConductorRecord) error {
	drivers, _ := json.Marshal(append([]string{}, c.Drivers...))
	_, err := s.db.Exec(ctx, `INSERT INTO conductors (hostname, drivers, conductor_group, url, updated_at, online)
		VALUES ($1,$2,$3,$4,$5,TRUE) ON CONFLICT (hostname) DO UPDATE SET drivers = excluded.drivers,
		conductor_group = excluded.conductor_group, url = excluded.url, updated_at = excluded.updated_at, online = TRUE`,
		c.Hostname, string(drivers), c.Group, c.URL, ns(c.UpdatedAt))
	if err != nil {
		return fmt.Errorf("register conductor %s: %w", c.Hostname, err)
	}
	return nil
}

// TouchConductor records a conductor's heartbeat in one UPDATE.
func (s *Postgres) TouchConductor(ctx context.Context, host string, at time.Time) error {
	tag, err := s.db.Exec(ctx, `UPDATE conductors SET updated_at = $1 WHERE hostname = $2`, ns(at), host)
	if err != nil {
		return fmt.Errorf("heartbeat of conductor %s: %w", host, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("heartbeat of conductor %s: %w", host, store.ErrNotFound)
	}
	return nil
}

// UnregisterConductor marks the conductor offline.
func (s *Postgres) UnregisterConductor(ctx context.Context, host string) error {
	if _, err := s.db.Exec(ctx, `UPDATE conductors SET online = FALSE WHERE hostname = $1`, host); err != nil {
		return fmt.Errorf("unregister conductor %s: %w", host, err)
	}
	return nil
}

// ListConductors returns the registered conductors by host name.
func (s *Postgres) ListConductors(ctx context.Context) ([]store.ConductorRecord, error) {
	rows, err := s.db.Query(ctx, `SELECT hostname, drivers, conductor_group, url, updated_at, online FROM conductors ORDER BY hostname`)
	if err != nil {
		return nil, fmt.Errorf("list conductors: %w", err)
	}
	defer rows.Close()
	var out []store.ConductorRecord
	for rows.Next() {
		var c store.ConductorRecord
		var drivers string
		var at int64
		if err := rows.Scan(&c.Hostname, &drivers, &c.Group, &c.URL, &at, &c.Online); err != nil {
			return nil, fmt.Errorf("list conductors: %w", err)
		}
		_ = json.Unmarshal([]byte(drivers), &c.Drivers)
		c.UpdatedAt = fromNS(at)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list conductors: %w", err)
	}
	return out, nil
}
