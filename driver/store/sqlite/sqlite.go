// Package sqlite is the default store.Store: one SQLite database file in
// WAL mode, pure Go (modernc.org/sqlite, no cgo). A node's write and its
// events commit in one transaction; the agent's liveness has its own
// columns and single-statement writes.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/ironlab/ironlab/driver/store"
)

// migrations are applied in order; schema_version holds how many ran.
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
		maintenance INTEGER NOT NULL DEFAULT 0,
		maintenance_reason TEXT NOT NULL DEFAULT '',
		fault TEXT NOT NULL DEFAULT '',
		last_error TEXT NOT NULL DEFAULT '',
		reservation TEXT NOT NULL DEFAULT '',
		clean_step TEXT NOT NULL DEFAULT '{}',
		deploy_step TEXT NOT NULL DEFAULT '{}',
		created_at INTEGER NOT NULL,
		updated_at INTEGER NOT NULL,
		provision_updated_at INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX nodes_provision_state ON nodes(provision_state);
	CREATE TABLE ports (
		uuid TEXT PRIMARY KEY,
		address TEXT NOT NULL UNIQUE,
		node_uuid TEXT NOT NULL REFERENCES nodes(uuid) ON DELETE CASCADE,
		pxe_enabled INTEGER NOT NULL DEFAULT 1,
		extra TEXT NOT NULL DEFAULT '{}',
		created_at INTEGER NOT NULL,
		updated_at INTEGER NOT NULL
	);
	CREATE INDEX ports_node ON ports(node_uuid);
	CREATE TABLE events (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		uuid TEXT NOT NULL,
		node_uuid TEXT NOT NULL,
		time INTEGER NOT NULL,
		kind TEXT NOT NULL,
		from_state TEXT NOT NULL DEFAULT '',
		to_state TEXT NOT NULL DEFAULT '',
		event TEXT NOT NULL DEFAULT '',
		message TEXT NOT NULL DEFAULT '',
		detail TEXT
	);
	CREATE INDEX events_node ON events(node_uuid, id);`,
	// 2: the agent's liveness and the watchdog's count leave the JSON maps
	// for their own columns, so a heartbeat is one small UPDATE; existing
	// values move over (agent_last_heartbeat was Unix seconds).
	`ALTER TABLE nodes ADD COLUMN agent_url TEXT NOT NULL DEFAULT '';
	ALTER TABLE nodes ADD COLUMN agent_token TEXT NOT NULL DEFAULT '';
	ALTER TABLE nodes ADD COLUMN agent_last_heartbeat INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE nodes ADD COLUMN agent_version TEXT NOT NULL DEFAULT '';
	ALTER TABLE nodes ADD COLUMN agent_dialect TEXT NOT NULL DEFAULT '';
	ALTER TABLE nodes ADD COLUMN watchdog_reboots INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE nodes ADD COLUMN watchdog_last_action INTEGER NOT NULL DEFAULT 0;
	UPDATE nodes SET
		agent_url = COALESCE(json_extract(driver_internal_info, '$.agent_url'), json_extract(driver_info, '$.agent_url'), ''),
		agent_token = COALESCE(json_extract(driver_internal_info, '$.agent_secret_token'), ''),
		agent_last_heartbeat = CAST(COALESCE(json_extract(driver_internal_info, '$.agent_last_heartbeat'),
			json_extract(driver_info, '$.agent_last_heartbeat'), 0) AS INTEGER) * 1000000000,
		agent_version = COALESCE(json_extract(driver_internal_info, '$.agent_version'), ''),
		agent_dialect = COALESCE(json_extract(driver_internal_info, '$.agent_dialect'), ''),
		watchdog_reboots = CAST(COALESCE(json_extract(driver_internal_info, '$.watchdog_reboots'), 0) AS INTEGER),
		watchdog_last_action = CAST(COALESCE(json_extract(driver_internal_info, '$.watchdog_last_action'), 0) AS INTEGER) * 1000000000,
		driver_internal_info = json_remove(driver_internal_info, '$.agent_url', '$.agent_secret_token', '$.agent_last_heartbeat',
			'$.agent_version', '$.agent_dialect', '$.watchdog_reboots', '$.watchdog_last_action'),
		driver_info = json_remove(driver_info, '$.agent_url', '$.agent_last_heartbeat');`,
	// 3: the clean plan leaves driver_internal_info for its own column.
	`ALTER TABLE nodes ADD COLUMN clean_plan TEXT NOT NULL DEFAULT '';
	UPDATE nodes SET clean_plan = json_object(
			'steps', json(COALESCE(json_extract(driver_internal_info, '$.clean_steps'), 'null')),
			'index', COALESCE(json_extract(driver_internal_info, '$.clean_step_index'), 0),
			'started', json(CASE WHEN json_type(driver_internal_info, '$.clean_step_index') IS NULL THEN 'false' ELSE 'true' END),
			'manual', json(CASE WHEN json_extract(driver_internal_info, '$.clean_manual') THEN 'true' ELSE 'false' END),
			'version', json(COALESCE(json_extract(driver_internal_info, '$.clean_version'), 'null')))
		WHERE json_type(driver_internal_info, '$.clean_steps') IS NOT NULL OR json_type(driver_internal_info, '$.clean_manual') IS NOT NULL
			OR json_type(driver_internal_info, '$.clean_version') IS NOT NULL;
	UPDATE nodes SET driver_internal_info = json_remove(driver_internal_info, '$.clean_steps', '$.clean_step_index', '$.clean_manual', '$.clean_version');`,
	// 4: the conductors table (registration and heartbeat of each conductor).
	`CREATE TABLE conductors (
		hostname TEXT PRIMARY KEY,
		drivers TEXT NOT NULL DEFAULT '[]',
		conductor_group TEXT NOT NULL DEFAULT '',
		url TEXT NOT NULL DEFAULT '',
		updated_at INTEGER NOT NULL,
		online INTEGER NOT NULL DEFAULT 1
	);`,
	// 5: the agent's auto-TLS certificate (agent_verify_ca) is an agent field.
	`ALTER TABLE nodes ADD COLUMN agent_verify_ca TEXT NOT NULL DEFAULT '';
	UPDATE nodes SET agent_verify_ca = COALESCE(json_extract(driver_internal_info, '$.agent_verify_ca'), ''),
		driver_internal_info = json_remove(driver_internal_info, '$.agent_verify_ca');`,
	// 6: the index of provision states gets the power state, so the
	// periodic check's watchdog selection (store.Due: powered on, in a
	// watched state) reads only the nodes it may act on. It stays off the
	// heartbeat's columns (agent_last_heartbeat, watchdog_last_action,
	// provision_updated_at): SQLite rewrites a row's entry in every index
	// holding a column an UPDATE sets, changed or not (EXPLAIN of the
	// heartbeat's UPDATE shows an IdxDelete and IdxInsert for each), and
	// the heartbeat's write sets neither of these two.
	`DROP INDEX nodes_provision_state;
	CREATE INDEX nodes_provision_power ON nodes(provision_state, power_state);`,
	// 7: a node's history is a chain instead of an index. The index of
	// (node_uuid, id) put each event's entry on its node's leaf, a page of
	// its own at 10,000 nodes, which every save's transaction wrote whole
	// to the WAL (BenchmarkSaveContendedFleet: most of what a save wrote).
	// Now each event holds its node's previous event (prev_id) and the
	// node's row, which the save rewrites anyway, its last
	// (last_event_id); the head of a deleted node's history, or of events
	// recorded for a UUID no node has, is kept in event_heads, and a node
	// created again under that UUID takes it back. The triggers keep the
	// heads: no statement above them writes last_event_id.
	`ALTER TABLE events ADD COLUMN prev_id INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE nodes ADD COLUMN last_event_id INTEGER NOT NULL DEFAULT 0;
	CREATE TABLE event_heads (node_uuid TEXT PRIMARY KEY, last_id INTEGER NOT NULL) WITHOUT ROWID;
	` + qLinkEvents + `
	DROP INDEX events_node;
	CREATE TRIGGER events_head AFTER INSERT ON events BEGIN
		UPDATE nodes SET last_event_id = NEW.id WHERE uuid = NEW.node_uuid;
		INSERT INTO event_heads (node_uuid, last_id) SELECT NEW.node_uuid, NEW.id WHERE changes() = 0
			ON CONFLICT (node_uuid) DO UPDATE SET last_id = excluded.last_id;
	END;
	CREATE TRIGGER nodes_delete_keeps_history AFTER DELETE ON nodes WHEN OLD.last_event_id > 0 BEGIN
		INSERT INTO event_heads (node_uuid, last_id) VALUES (OLD.uuid, OLD.last_event_id)
			ON CONFLICT (node_uuid) DO UPDATE SET last_id = excluded.last_id;
	END;
	CREATE TRIGGER nodes_create_takes_history AFTER INSERT ON nodes BEGIN
		UPDATE nodes SET last_event_id = h.last_id FROM event_heads h WHERE nodes.uuid = NEW.uuid AND h.node_uuid = NEW.uuid;
		DELETE FROM event_heads WHERE node_uuid = NEW.uuid;
	END;`,
}

// qLinkEvents links the events table's rows into their nodes' chains
// (migration 7): each event's prev_id is its node's event before it, each
// node's last_event_id its last, and the heads of UUIDs without a node go
// to event_heads. No UUID without a node may have a head in event_heads yet.
const qLinkEvents = `UPDATE events SET prev_id = p.prev
		FROM (SELECT id, LAG(id, 1, 0) OVER (PARTITION BY node_uuid ORDER BY id) AS prev FROM events) p
		WHERE events.id = p.id AND p.prev > 0;
	UPDATE nodes SET last_event_id = h.last FROM (SELECT node_uuid, MAX(id) AS last FROM events GROUP BY node_uuid) h
		WHERE nodes.uuid = h.node_uuid;
	INSERT INTO event_heads (node_uuid, last_id) SELECT node_uuid, MAX(id) FROM events
		WHERE node_uuid NOT IN (SELECT uuid FROM nodes) GROUP BY node_uuid;`

// SQLite is the default Store: one database file in WAL mode.
type SQLite struct {
	db *sql.DB
	// rdb is a pool of read-only connections for reads outside a
	// transaction: in WAL mode they read the last commit while the one
	// writer (db) writes or checkpoints, instead of queueing behind it.
	rdb *sql.DB
	// gate orders the writers of db: API requests first (see gate).
	gate gate
	// hbq batches the heartbeats that wait for the writer (a group commit),
	// wq the other writes (see inTx).
	hbq heartbeatQueue
	wq  writeQueue
	// stmts are the hot path's statements, prepared once at Open: SQLite
	// parses and compiles a statement on every unprepared call, which was
	// 40 % of a heartbeat's CPU.
	stmts map[string]*sql.Stmt
	// beforeEvent, when set (tests only), runs before each event insert; an
	// error aborts the transaction as a crash at that point would.
	beforeEvent func(e *store.Event) error
}

// execer is what *sql.DB and *sql.Tx share.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// addEvents inserts events inside tx.
func (s *SQLite) addEvents(ctx context.Context, tx *sql.Tx, events []*store.Event) error {
	for _, e := range events {
		if err := s.insertEvent(ctx, tx, e); err != nil {
			return err
		}
	}
	return nil
}

var _ store.Store = (*SQLite)(nil)

// Open opens (creating if needed) the database at path and migrates it.
func Open(ctx context.Context, path string) (*SQLite, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}
	// dsn is path's data source name with the pragmas every connection
	// has, extra and the transaction lock.
	dsn := func(txlock string, extra ...string) string {
		q := url.Values{"_txlock": {txlock}, "_pragma": append([]string{
			"journal_mode(WAL)", "busy_timeout(10000)", "foreign_keys(1)", "synchronous(NORMAL)"}, extra...)}
		return "file:" + path + "?" + q.Encode()
	}
	// The writer's page cache holds the rows every write reads and
	// rewrites (a node, its indexes, the events' last pages): SQLite's
	// default of 2 MiB is 1,400 nodes' rows, so at 10,000 nodes writes read
	// pages back from the OS (pread was 3.8 % of the driver's CPU). Pages
	// are allocated as used: a small lab pays only for what it holds.
	// The writer checkpoints the WAL every 10,000 pages (40 MiB), not
	// SQLite's 1000: a checkpoint copies each page once however often it
	// was written since the last, and at 10,000 nodes a deploy rewrites
	// more than 1000 distinct pages, so a checkpoint every 1000 frames
	// copied nearly every frame (the checkpoints were 4.3 % of a 10,000-node bench's driver CPU, in
	// the one writer's commits; BenchmarkSaveContendedFleet: 20.1 -> 16.8
	// KiB written and 17.8 -> 14.5 read per save).
	db, err := sql.Open("sqlite", dsn("immediate", "cache_size(-16384)", "wal_autocheckpoint(10000)"))
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// One connection serialises writers inside the process, so SQLITE_BUSY
	// only ever comes from another process (covered by busy_timeout).
	db.SetMaxOpenConns(1)
	s := &SQLite{db: db, stmts: map[string]*sql.Stmt{}}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate store %s: %w", path, err)
	}
	// The readers keep SQLite's default cache: a reader's cache is dropped
	// whenever another connection has written since its last read. They
	// read with pread, not mmap_size: mapped reads cost more CPU per read
	// (BenchmarkGetNodeUnderWritesFleet).
	rdb, err := sql.Open("sqlite", dsn("deferred", "query_only(1)"))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	rdb.SetMaxOpenConns(readConns)
	rdb.SetMaxIdleConns(readConns)
	s.rdb = rdb
	for _, q := range preparedQueries {
		on := db
		if readQueries[q] {
			on = rdb
		}
		st, err := on.PrepareContext(ctx, q)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("open store %s: prepare %q: %w", path, q, err)
		}
		s.stmts[q] = st
	}
	return s, nil
}

// preparedQueries are prepared at Open (never later: inside a transaction
// the one connection is taken, and a prepare on the pool would wait for it).
var preparedQueries = []string{qNodeByUUID, qAgentOf, qNodeByName, qHeartbeatRead, qHeartbeatReadByName, qHeartbeatWrite, qInsertEvent,
	qUpdateNode, qUpdateNodeHeld, qUpdateNodeIndexed, qReserve, qRelease, qPortsOfNode, qPortsByAddress, qSavepoint, qRollbackTo, qReleaseSP, qListEvents}

// The ListPorts queries of acquire (a node's ports) and lookup (by MAC).
const (
	qPortsOfNode    = `SELECT ` + portCols + ` FROM ports WHERE 1=1 AND node_uuid = ? ORDER BY created_at, uuid`
	qPortsByAddress = `SELECT ` + portCols + ` FROM ports WHERE 1=1 AND address = ? ORDER BY created_at, uuid`
)

// readConns is the read pool's size.
const readConns = 4

// readQueries are the prepared queries that run on the read pool.
var readQueries = map[string]bool{qNodeByUUID: true, qNodeByName: true, qPortsOfNode: true, qPortsByAddress: true, qAgentOf: true, qListEvents: true}

// stmt is the prepared statement of q (one of preparedQueries), bound to tx
// when tx is not nil.
func (s *SQLite) stmt(ctx context.Context, tx *sql.Tx, q string) *sql.Stmt {
	st := s.stmts[q]
	if tx != nil {
		return tx.StmtContext(ctx, st)
	}
	return st
}

func (s *SQLite) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return err
	}
	var v int
	err := s.db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := s.db.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if v > len(migrations) {
		// A newer ironlab's schema: this one would write it wrong (since
		// 7, an event written without its prev_id breaks its node's
		// history).
		return fmt.Errorf("schema %d is newer than this ironlab's (%d): open it with the ironlab that wrote it", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, i+1); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the database.
func (s *SQLite) Close() error {
	s.closeHeartbeatStmts(context.Background())
	for _, st := range s.stmts {
		st.Close()
	}
	if s.rdb != nil {
		s.rdb.Close()
	}
	return s.db.Close()
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
	if len(m) == 0 {
		return "{}" // most nodes' driver_internal_info and extra
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "{}"
	}
	return string(b)
}

func decMap(s string) map[string]any {
	m := map[string]any{}
	if s != "" && s != "{}" {
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
	if v == "" || v == "{}" || json.Unmarshal([]byte(v), &s) != nil || (s.Step == "" && s.Interface == "") {
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

func isConstraint(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		c := se.Code()
		return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || c == sqlite3.SQLITE_CONSTRAINT
	}
	return strings.Contains(err.Error(), "UNIQUE constraint")
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

const nodeCols = `uuid, name, driver, driver_info, driver_internal_info, instance_info, properties, extra,
	provision_state, target_provision_state, power_state, target_power_state, maintenance, maintenance_reason,
	fault, last_error, reservation, clean_step, deploy_step, created_at, updated_at, provision_updated_at,
	agent_url, agent_token, agent_last_heartbeat, agent_version, agent_dialect, watchdog_reboots, watchdog_last_action, clean_plan, agent_verify_ca`

// CreateNode inserts n; a duplicate UUID or name is ErrDuplicate.
func (s *SQLite) CreateNode(ctx context.Context, n *store.Node, events ...*store.Event) error {
	now := time.Now().UTC()
	if n.CreatedAt.IsZero() {
		n.CreatedAt = now
	}
	n.UpdatedAt = n.CreatedAt
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := s.insertNode(ctx, tx, n); err != nil {
			return err
		}
		return s.addEvents(ctx, tx, events)
	})
	if err != nil {
		if isConstraint(err) {
			return fmt.Errorf("create node %s (name %q): %w", n.UUID, n.Name, store.ErrDuplicate)
		}
		return fmt.Errorf("create node %s: %w", n.UUID, err)
	}
	return nil
}

func (s *SQLite) insertNode(ctx context.Context, tx execer, n *store.Node) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO nodes (`+nodeCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		n.UUID, nullable(n.Name), n.Driver, encMap(n.DriverInfo), encMap(n.DriverInternalInfo), encMap(n.InstanceInfo),
		encMap(n.Properties), encMap(n.Extra), n.ProvisionState, n.TargetProvisionState, n.PowerState, n.TargetPowerState,
		n.Maintenance, n.MaintenanceReason, n.Fault, n.LastError, n.Reservation, encStep(n.CleanStep), encStep(n.DeployStep),
		ns(n.CreatedAt), ns(n.UpdatedAt), ns(n.ProvisionUpdatedAt),
		n.Agent.URL, n.Agent.Token, ns(n.Agent.LastHeartbeat), n.Agent.Version, n.Agent.Dialect,
		n.Agent.WatchdogReboots, ns(n.Agent.WatchdogLastAction), encPlan(n.CleanPlan), n.Agent.VerifyCA)
	return err
}

type scanner interface{ Scan(dest ...any) error }

func scanNode(r scanner) (*store.Node, error) {
	var n store.Node
	var name sql.NullString
	var di, dii, ii, props, extra, cs, ds string
	var c, u, p, hb, wd int64
	var plan string
	a := &n.Agent
	err := r.Scan(&n.UUID, &name, &n.Driver, &di, &dii, &ii, &props, &extra, &n.ProvisionState,
		&n.TargetProvisionState, &n.PowerState, &n.TargetPowerState, &n.Maintenance, &n.MaintenanceReason,
		&n.Fault, &n.LastError, &n.Reservation, &cs, &ds, &c, &u, &p,
		&a.URL, &a.Token, &hb, &a.Version, &a.Dialect, &a.WatchdogReboots, &wd, &plan, &a.VerifyCA)
	if err != nil {
		return nil, err
	}
	n.Name = name.String
	n.DriverInfo, n.DriverInternalInfo, n.InstanceInfo = decMap(di), decMap(dii), decMap(ii)
	n.Properties, n.Extra, n.CleanStep, n.DeployStep = decMap(props), decMap(extra), decStep(cs), decStep(ds)
	n.CleanPlan = decPlan(plan)
	n.CreatedAt, n.UpdatedAt, n.ProvisionUpdatedAt = fromNS(c), fromNS(u), fromNS(p)
	a.LastHeartbeat, a.WatchdogLastAction = fromNS(hb), fromNS(wd)
	return &n, nil
}

const (
	qNodeByUUID = `SELECT ` + nodeCols + ` FROM nodes WHERE uuid = ?`
	qNodeByName = `SELECT ` + nodeCols + ` FROM nodes WHERE name = ?`
)

func (s *SQLite) getNode(ctx context.Context, q, v string) (*store.Node, error) {
	n, err := scanNode(s.stmt(ctx, nil, q).QueryRowContext(ctx, v))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("node %s: %w", v, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get node %s: %w", v, err)
	}
	return n, nil
}

// GetNode reads a node by UUID.
func (s *SQLite) GetNode(ctx context.Context, id string) (*store.Node, error) {
	return s.getNode(ctx, qNodeByUUID, id)
}

// qAgentOf reads a node's agent fields.
const qAgentOf = `SELECT agent_url, agent_token, agent_last_heartbeat, agent_version, agent_dialect,
	watchdog_reboots, watchdog_last_action, agent_verify_ca FROM nodes WHERE uuid = ?`

// GetAgent reads the node's agent fields only.
func (s *SQLite) GetAgent(ctx context.Context, id string) (store.Agent, error) {
	var a store.Agent
	var hb, wd int64
	err := s.stmt(ctx, nil, qAgentOf).QueryRowContext(ctx, id).Scan(&a.URL, &a.Token, &hb, &a.Version, &a.Dialect,
		&a.WatchdogReboots, &wd, &a.VerifyCA)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Agent{}, fmt.Errorf("node %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Agent{}, fmt.Errorf("get agent of node %s: %w", id, err)
	}
	a.LastHeartbeat, a.WatchdogLastAction = fromNS(hb), fromNS(wd)
	return a, nil
}

// GetNodeByName reads a node by name.
func (s *SQLite) GetNodeByName(ctx context.Context, name string) (*store.Node, error) {
	return s.getNode(ctx, qNodeByName, name)
}

// ListNodes returns the nodes matching f, oldest first.
func (s *SQLite) ListNodes(ctx context.Context, f store.NodeFilter) ([]*store.Node, error) {
	cols, scan := nodeCols, scanNode
	if f.ColumnsOnly {
		cols, scan = stateCols, scanNodeState
	}
	q := `SELECT ` + cols + ` FROM nodes WHERE 1=1`
	var args []any
	if f.ProvisionState != "" {
		q += ` AND provision_state = ?`
		args = append(args, f.ProvisionState)
	}
	if f.Driver != "" {
		q += ` AND driver = ?`
		args = append(args, f.Driver)
	}
	if f.Maintenance != nil {
		q += ` AND maintenance = ?`
		args = append(args, *f.Maintenance)
	}
	if f.Due != nil {
		w, a := dueWhere(f.Due)
		q += w
		args = append(args, a...)
	}
	rows, err := s.rdb.QueryContext(ctx, q+` ORDER BY created_at, uuid`, args...)
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
	return out, rows.Err()
}

// dueWhere is the condition of a NodeFilter.Due (store.Due): one term per
// provision state, each a search of the index of (provision_state,
// power_state) (migration 6). Times are Unix nanoseconds, 0 for never:
// "older than the timeout" is a column below Now minus the timeout, and
// the watchdog's "a heartbeat or an action at all" is the later of the two
// above 0.
func dueWhere(d *store.Due) (string, []any) {
	now := d.Now.UnixNano()
	var or []string
	var args []any
	for _, st := range d.States() {
		var either []string
		args = append(args, st)
		if limit := d.CallbackTimeouts[st]; limit > 0 {
			either = append(either, `provision_updated_at < ?`)
			args = append(args, now-limit.Nanoseconds())
		}
		if d.Watched(st) {
			either = append(either, `(power_state = ? AND MAX(agent_last_heartbeat, watchdog_last_action) > 0
				AND MAX(agent_last_heartbeat, watchdog_last_action) < ?)`)
			args = append(args, d.WatchdogPower, now-d.HeartbeatTimeout.Nanoseconds())
		}
		or = append(or, `(provision_state = ? AND (`+strings.Join(either, ` OR `)+`))`)
	}
	if len(or) == 0 {
		return ` AND 0`, nil
	}
	return ` AND reservation = '' AND maintenance = 0 AND (` + strings.Join(or, ` OR `) + `)`, args
}

// stateCols are the columns of a NodeFilter.ColumnsOnly list: no JSON.
const stateCols = `uuid, name, driver, provision_state, target_provision_state, power_state, target_power_state,
	maintenance, maintenance_reason, fault, last_error, reservation, created_at, updated_at, provision_updated_at,
	agent_url, agent_last_heartbeat, agent_version, agent_dialect, watchdog_reboots, watchdog_last_action`

func scanNodeState(r scanner) (*store.Node, error) {
	var n store.Node
	var name sql.NullString
	var c, u, p, hb, wd int64
	a := &n.Agent
	err := r.Scan(&n.UUID, &name, &n.Driver, &n.ProvisionState, &n.TargetProvisionState, &n.PowerState, &n.TargetPowerState,
		&n.Maintenance, &n.MaintenanceReason, &n.Fault, &n.LastError, &n.Reservation, &c, &u, &p,
		&a.URL, &hb, &a.Version, &a.Dialect, &a.WatchdogReboots, &wd)
	if err != nil {
		return nil, err
	}
	n.Name = name.String
	n.CreatedAt, n.UpdatedAt, n.ProvisionUpdatedAt = fromNS(c), fromNS(u), fromNS(p)
	a.LastHeartbeat, a.WatchdogLastAction = fromNS(hb), fromNS(wd)
	return &n, nil
}

// UpdateNode writes n back but for its agent fields, and sets n.UpdatedAt.
// provision_updated_at never goes back: a heartbeat may have touched it
// since n was read. The indexed columns (name, provision_state,
// power_state) are written by qUpdateNodeIndexed.
const qUpdateNode = `UPDATE nodes SET driver=?, driver_info=?, driver_internal_info=?,
		instance_info=?, properties=?, extra=?, target_provision_state=?,
		target_power_state=?, maintenance=?, maintenance_reason=?, fault=?, last_error=?, clean_step=?,
		deploy_step=?, updated_at=?, provision_updated_at=MAX(provision_updated_at, ?), clean_plan=? WHERE uuid=?`

// qUpdateNodeHeld is qUpdateNode while a host holds the reservation.
const qUpdateNodeHeld = qUpdateNode + ` AND reservation=?`

// qUpdateNodeIndexed writes the node's indexed columns, in the same
// transaction after qUpdateNode, only where one of them differs from the
// row's. SQLite rewrites an index's entry for every column a statement
// assigns, changed or not: at 10,000 nodes those entries sit on pages of
// their own, so a save that kept the node's state and name still wrote
// those pages to the WAL, and the checkpoint copied them again
// (BenchmarkSaveContendedFleet: 29.8 -> 20.1 KiB written per save).
const qUpdateNodeIndexed = `UPDATE nodes SET name=?1, provision_state=?2, power_state=?3
		WHERE uuid=?4 AND (name IS NOT ?1 OR provision_state IS NOT ?2 OR power_state IS NOT ?3)`

// UpdateNode writes n unconditionally (see qUpdateNode).
func (s *SQLite) UpdateNode(ctx context.Context, n *store.Node, events ...*store.Event) error {
	return s.updateNode(ctx, n, "", events)
}

// UpdateNodeHeld is UpdateNode while host holds the node's reservation.
func (s *SQLite) UpdateNodeHeld(ctx context.Context, n *store.Node, host string, events ...*store.Event) error {
	if host == "" {
		return fmt.Errorf("update node %s: no lock holder given", n.UUID)
	}
	return s.updateNode(ctx, n, host, events)
}

// updateNode writes n; a host other than "" must hold its reservation.
func (s *SQLite) updateNode(ctx context.Context, n *store.Node, host string, events []*store.Event) error {
	n.UpdatedAt = time.Now().UTC()
	found, heldBy := true, ""
	// The row's JSON is encoded here, in the caller's goroutine: the
	// transaction runs on the one writer, which every save queues for.
	q, args := qUpdateNode, []any{n.Driver, encMap(n.DriverInfo), encMap(n.DriverInternalInfo), encMap(n.InstanceInfo),
		encMap(n.Properties), encMap(n.Extra), n.TargetProvisionState,
		n.TargetPowerState, n.Maintenance, n.MaintenanceReason, n.Fault, n.LastError, encStep(n.CleanStep),
		encStep(n.DeployStep), ns(n.UpdatedAt), ns(n.ProvisionUpdatedAt), encPlan(n.CleanPlan), n.UUID}
	if host != "" {
		q, args = qUpdateNodeHeld, append(args, host)
	}
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := s.stmt(ctx, tx, q).ExecContext(ctx, args...)
		if err != nil {
			return err
		}
		if c, _ := res.RowsAffected(); c == 0 {
			if host != "" {
				if err := tx.QueryRowContext(ctx, `SELECT reservation FROM nodes WHERE uuid = ?`, n.UUID).Scan(&heldBy); err == nil {
					return store.ErrNotHeld
				}
			}
			found = false
			return store.ErrNotFound
		}
		if _, err := s.stmt(ctx, tx, qUpdateNodeIndexed).ExecContext(ctx, nullable(n.Name), n.ProvisionState, n.PowerState, n.UUID); err != nil {
			return err
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
	case isConstraint(err):
		return fmt.Errorf("update node %s (name %q): %w", n.UUID, n.Name, store.ErrDuplicate)
	}
	return fmt.Errorf("update node %s: %w", n.UUID, err)
}

// DeleteNode removes a node and its ports.
func (s *SQLite) DeleteNode(ctx context.Context, id string, events ...*store.Event) error {
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM nodes WHERE uuid = ?`, id)
		if err != nil {
			return err
		}
		if c, _ := res.RowsAffected(); c == 0 {
			return store.ErrNotFound
		}
		return s.addEvents(ctx, tx, events)
	})
	if err != nil {
		return fmt.Errorf("delete node %s: %w", id, err)
	}
	return nil
}

const (
	qReserve = `UPDATE nodes SET reservation = ? WHERE uuid = ? AND reservation = ''`
	qRelease = `UPDATE nodes SET reservation = '' WHERE uuid = ? AND reservation = ?`
)

// Reserve takes the node's reservation for host.
func (s *SQLite) Reserve(ctx context.Context, id, host string) error {
	var holder string
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := s.stmt(ctx, tx, qReserve).ExecContext(ctx, host, id)
		if err != nil {
			return err
		}
		if c, _ := res.RowsAffected(); c == 1 {
			return nil
		}
		err = tx.QueryRowContext(ctx, `SELECT reservation FROM nodes WHERE uuid = ?`, id).Scan(&holder)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		return store.ErrLocked
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrLocked):
		return fmt.Errorf("node %s is locked by host %s: %w", id, holder, store.ErrLocked)
	}
	return fmt.Errorf("reserve node %s: %w", id, err)
}

// StealReservation moves the reservation from a dead host to host.
func (s *SQLite) StealReservation(ctx context.Context, id, from, host string) error {
	if from == "" || host == "" {
		return fmt.Errorf("take over node %s: empty host name (from %q, to %q)", id, from, host)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE nodes SET reservation = ? WHERE uuid = ? AND reservation = ?`, host, id, from)
	if err != nil {
		return fmt.Errorf("take over node %s from %s: %w", id, from, err)
	}
	if c, _ := res.RowsAffected(); c == 1 {
		return nil
	}
	var holder string
	if err := s.db.QueryRowContext(ctx, `SELECT reservation FROM nodes WHERE uuid = ?`, id).Scan(&holder); errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("take over node %s: %w", id, store.ErrNotFound)
	}
	return fmt.Errorf("take over node %s from %s: reserved by %q: %w", id, from, holder, store.ErrNotHeld)
}

// Release drops host's reservation of the node.
func (s *SQLite) Release(ctx context.Context, id, host string, events ...*store.Event) error {
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := s.stmt(ctx, tx, qRelease).ExecContext(ctx, id, host); err != nil {
			return err
		}
		return s.addEvents(ctx, tx, events)
	})
	if err != nil {
		return fmt.Errorf("release node %s: %w", id, err)
	}
	return nil
}

// ReleaseAll drops every reservation held by host.
func (s *SQLite) ReleaseAll(ctx context.Context, host string) (int, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE nodes SET reservation = '' WHERE reservation = ?`, host)
	if err != nil {
		return 0, fmt.Errorf("release locks of %s: %w", host, err)
	}
	c, _ := res.RowsAffected()
	return int(c), nil
}

const portCols = `uuid, address, node_uuid, pxe_enabled, extra, created_at, updated_at`

// CreatePort inserts p with its address normalised; a duplicate MAC is ErrDuplicate,
// an unknown node ErrNotFound.
func (s *SQLite) CreatePort(ctx context.Context, p *store.Port) error {
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
	if _, err := s.GetNode(ctx, p.NodeUUID); err != nil {
		return fmt.Errorf("create port %s: %w", mac, err)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO ports (`+portCols+`) VALUES (?,?,?,?,?,?,?)`,
		p.UUID, p.Address, p.NodeUUID, p.PXEEnabled, encMap(p.Extra), ns(now), ns(now))
	if err != nil {
		if isConstraint(err) {
			return fmt.Errorf("create port with MAC %s: %w", mac, store.ErrDuplicate)
		}
		return fmt.Errorf("create port %s: %w", mac, err)
	}
	return nil
}

func scanPort(r scanner) (*store.Port, error) {
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
func (s *SQLite) GetPort(ctx context.Context, id string) (*store.Port, error) {
	p, err := scanPort(s.rdb.QueryRowContext(ctx, `SELECT `+portCols+` FROM ports WHERE uuid = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("port %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get port %s: %w", id, err)
	}
	return p, nil
}

// ListPorts returns ports matching f, oldest first.
func (s *SQLite) ListPorts(ctx context.Context, f store.PortFilter) ([]*store.Port, error) {
	q := `SELECT ` + portCols + ` FROM ports WHERE 1=1`
	var args []any
	if f.NodeUUID != "" {
		q += ` AND node_uuid = ?`
		args = append(args, f.NodeUUID)
	}
	if f.Address != "" {
		q += ` AND address = ?`
		args = append(args, store.NormalizeMAC(f.Address))
	}
	q += ` ORDER BY created_at, uuid`
	var rows *sql.Rows
	var err error
	if _, ok := s.stmts[q]; ok {
		rows, err = s.stmt(ctx, nil, q).QueryContext(ctx, args...)
	} else {
		rows, err = s.rdb.QueryContext(ctx, q, args...)
	}
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
	return out, rows.Err()
}

// DeletePort removes a port.
func (s *SQLite) DeletePort(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM ports WHERE uuid = ?`, id)
	if err != nil {
		return fmt.Errorf("delete port %s: %w", id, err)
	}
	if c, _ := res.RowsAffected(); c == 0 {
		return fmt.Errorf("delete port %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// AddEvent appends e, filling ID, UUID and Time when unset.
func (s *SQLite) AddEvent(ctx context.Context, e *store.Event) error {
	var ierr error // insertEvent's own, which names the event
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		ierr = s.insertEvent(ctx, tx, e)
		return ierr
	})
	if err != nil && ierr == nil {
		return fmt.Errorf("add event of node %s: %w", e.NodeUUID, err)
	}
	return err
}

// qInsertEvent appends an event to its node's chain (migration 7): its
// prev_id is the head, the node's last_event_id or, for a UUID without a
// node, event_heads'; the trigger events_head moves the head to it.
const qInsertEvent = `INSERT INTO events (uuid, node_uuid, time, kind, from_state, to_state, event, message, detail, prev_id)
		VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9, COALESCE((SELECT last_event_id FROM nodes WHERE uuid = ?2),
			(SELECT last_id FROM event_heads WHERE node_uuid = ?2), 0))`

// insertEvent inserts e inside tx, or on its own when tx is nil.
func (s *SQLite) insertEvent(ctx context.Context, tx *sql.Tx, e *store.Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if e.UUID == "" {
		e.UUID = uuid.NewString()
	}
	var detail any
	if len(e.Detail) > 0 {
		detail = string(e.Detail)
	}
	if s.beforeEvent != nil {
		if err := s.beforeEvent(e); err != nil {
			return fmt.Errorf("add %s event for node %s: %w", e.Kind, e.NodeUUID, err)
		}
	}
	res, err := s.stmt(ctx, tx, qInsertEvent).ExecContext(ctx, e.UUID, e.NodeUUID, e.Time.UnixNano(), e.Kind, e.FromState, e.ToState, e.Event, e.Message, detail)
	if err != nil {
		return fmt.Errorf("add %s event for node %s: %w", e.Kind, e.NodeUUID, err)
	}
	e.ID, _ = res.LastInsertId()
	return nil
}

// qListEvents walks the node's chain (migration 7) from its head back;
// each step is a lookup by id. An event's prev_id is below its id, so the
// walk ends, whatever the table holds.
const qListEvents = `WITH RECURSIVE chain AS (
		SELECT id, uuid, node_uuid, time, kind, from_state, to_state, event, message, detail, prev_id
			FROM events WHERE id = COALESCE((SELECT last_event_id FROM nodes WHERE uuid = ?1),
				(SELECT last_id FROM event_heads WHERE node_uuid = ?1), 0)
		UNION ALL
		SELECT e.id, e.uuid, e.node_uuid, e.time, e.kind, e.from_state, e.to_state, e.event, e.message, e.detail, e.prev_id
			FROM chain c JOIN events e ON e.id = c.prev_id AND e.id < c.id
	)
	SELECT id, uuid, node_uuid, time, kind, from_state, to_state, event, message, detail FROM chain ORDER BY id`

// ListEvents returns a node's events in the order they were recorded.
func (s *SQLite) ListEvents(ctx context.Context, nodeUUID string) ([]store.Event, error) {
	rows, err := s.stmt(ctx, nil, qListEvents).QueryContext(ctx, nodeUUID)
	if err != nil {
		return nil, fmt.Errorf("list events of node %s: %w", nodeUUID, err)
	}
	defer rows.Close()
	out := []store.Event{}
	for rows.Next() {
		var e store.Event
		var t int64
		var detail sql.NullString
		if err := rows.Scan(&e.ID, &e.UUID, &e.NodeUUID, &t, &e.Kind, &e.FromState, &e.ToState, &e.Event, &e.Message, &detail); err != nil {
			return nil, fmt.Errorf("list events of node %s: %w", nodeUUID, err)
		}
		e.Time = fromNS(t)
		if detail.Valid {
			e.Detail = json.RawMessage(detail.String)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// qLastTransitions walks each node's chain back from its head only as far
// as its latest provision transition (most nodes' is among their last few
// events), rather than reading every history whole.
const qLastTransitions = `WITH RECURSIVE walk(node_uuid, id, prev_id, hit, to_state) AS (
		SELECT n.uuid, e.id, e.prev_id, e.kind = ?1 AND e.from_state <> e.to_state, e.to_state
			FROM nodes n JOIN events e ON e.id = n.last_event_id
		UNION ALL
		SELECT w.node_uuid, e.id, e.prev_id, e.kind = ?1 AND e.from_state <> e.to_state, e.to_state
			FROM walk w JOIN events e ON e.id = w.prev_id AND e.id < w.id WHERE NOT w.hit
	)
	SELECT node_uuid, to_state FROM walk WHERE hit`

// LastTransitions returns each node's latest provision transition's state.
func (s *SQLite) LastTransitions(ctx context.Context) (map[string]string, error) {
	rows, err := s.rdb.QueryContext(ctx, qLastTransitions, store.KindProvision)
	if err != nil {
		return nil, fmt.Errorf("last transitions: %w", err)
	}
	defer rows.Close()
	return store.ScanTransitions(rows)
}

// agentWrite runs one UPDATE of a node's agent columns; none matched is
// ErrNotFound.
func (s *SQLite) agentWrite(ctx context.Context, tx *sql.Tx, what, id, set string, args ...any) (int64, error) {
	res, err := tx.ExecContext(ctx, `UPDATE nodes SET `+set, append(args, id)...)
	if err != nil {
		return 0, fmt.Errorf("%s of node %s: %w", what, id, err)
	}
	c, _ := res.RowsAffected()
	return c, nil
}

func (s *SQLite) exists(ctx context.Context, tx *sql.Tx, id string) error {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM nodes WHERE uuid = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("node %s: %w", id, store.ErrNotFound)
	}
	return err
}

// IssueAgentToken sets the token unless one is set.
func (s *SQLite) IssueAgentToken(ctx context.Context, id, token string) (bool, error) {
	var issued bool
	var have, holder string
	var werr error
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		c, err := s.agentWrite(ctx, tx, "issue agent token", id, `agent_token = ? WHERE agent_token = '' AND reservation = '' AND uuid = ?`, token)
		if err != nil || c == 1 {
			issued, werr = c == 1, err
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT agent_token, reservation FROM nodes WHERE uuid = ?`, id).Scan(&have, &holder)
	})
	if werr != nil {
		return false, werr
	}
	switch {
	case err == nil && issued:
		return true, nil
	case errors.Is(err, sql.ErrNoRows):
		return false, fmt.Errorf("issue agent token: node %s: %w", id, store.ErrNotFound)
	case err != nil:
		return false, fmt.Errorf("issue agent token of node %s: %w", id, err)
	case have == "" && holder != "":
		return false, fmt.Errorf("issue agent token: node %s is locked by host %s: %w", id, holder, store.ErrLocked)
	}
	return false, nil
}

// ClearAgent forgets the node's running agent.
func (s *SQLite) ClearAgent(ctx context.Context, id string) error {
	return s.agentUpdate(ctx, "clear agent", id, `agent_url = '', agent_token = '', agent_version = '', agent_last_heartbeat = 0, agent_verify_ca = '' WHERE uuid = ?`)
}

// agentUpdate runs agentWrite in a transaction of its own; a node that is
// not there is ErrNotFound.
func (s *SQLite) agentUpdate(ctx context.Context, what, id, set string, args ...any) error {
	var werr error
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		c, err := s.agentWrite(ctx, tx, what, id, set, args...)
		if err != nil {
			werr = err
			return err
		}
		if c == 1 {
			return nil
		}
		werr = s.exists(ctx, tx, id)
		return werr
	})
	if werr != nil {
		return werr
	}
	if err != nil {
		return fmt.Errorf("%s of node %s: %w", what, id, err)
	}
	return nil
}

// SetWatchdog records a watchdog action.
func (s *SQLite) SetWatchdog(ctx context.Context, id string, reboots int, at time.Time) error {
	return s.agentUpdate(ctx, "record watchdog action", id, `watchdog_reboots = ?, watchdog_last_action = ? WHERE uuid = ?`, reboots, ns(at))
}

var _ store.Registry = (*SQLite)(nil)

// RegisterConductor inserts or replaces the conductor's row.
func (s *SQLite) RegisterConductor(ctx context.Context, c store.ConductorRecord) error {
	drivers, _ := json.Marshal(append([]string{}, c.Drivers...))
	_, err := s.db.ExecContext(ctx, `INSERT INTO conductors (hostname, drivers, conductor_group, url, updated_at, online)
		VALUES (?,?,?,?,?,1) ON CONFLICT(hostname) DO UPDATE SET drivers = excluded.drivers,
		conductor_group = excluded.conductor_group, url = excluded.url, updated_at = excluded.updated_at, online = 1`,
		c.Hostname, string(drivers), c.Group, c.URL, ns(c.UpdatedAt))
	if err != nil {
		return fmt.Errorf("register conductor %s: %w", c.Hostname, err)
	}
	return nil
}

// TouchConductor records a conductor's heartbeat in one UPDATE.
func (s *SQLite) TouchConductor(ctx context.Context, host string, at time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE conductors SET updated_at = ? WHERE hostname = ?`, ns(at), host)
	if err != nil {
		return fmt.Errorf("heartbeat of conductor %s: %w", host, err)
	}
	if c, _ := res.RowsAffected(); c == 0 {
		return fmt.Errorf("heartbeat of conductor %s: %w", host, store.ErrNotFound)
	}
	return nil
}

// UnregisterConductor marks the conductor offline.
func (s *SQLite) UnregisterConductor(ctx context.Context, host string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE conductors SET online = 0 WHERE hostname = ?`, host); err != nil {
		return fmt.Errorf("unregister conductor %s: %w", host, err)
	}
	return nil
}

// ListConductors returns the registered conductors by host name.
func (s *SQLite) ListConductors(ctx context.Context) ([]store.ConductorRecord, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT hostname, drivers, conductor_group, url, updated_at, online FROM conductors ORDER BY hostname`)
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
	return out, rows.Err()
}
