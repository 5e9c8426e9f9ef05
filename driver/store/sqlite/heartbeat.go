package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/ironlab/ironlab/driver/store"
)

// hbCols are what a heartbeat reads of its node: the scalar fields its
// checks and its call-back decision need, and the agent's.
const hbCols = `uuid, name, driver, provision_state, maintenance, reservation, provision_updated_at,
	agent_url, agent_token, agent_last_heartbeat, agent_version, agent_dialect, watchdog_reboots, watchdog_last_action, agent_verify_ca`

const (
	qHeartbeatRead       = `SELECT ` + hbCols + ` FROM nodes WHERE uuid = ?`
	qHeartbeatReadByName = `SELECT ` + hbCols + ` FROM nodes WHERE name = ?`
	// The nodes of a batch by UUID, the UUIDs a JSON array.
	qHeartbeatReadMany = `SELECT ` + hbCols + ` FROM nodes WHERE uuid IN (SELECT value FROM json_each(?))`
	// What is kept (an empty version or certificate, a provision_updated_at
	// that would go back) is decided on the row read in the same
	// transaction, so the statement is plain assignments.
	qHeartbeatWrite = `UPDATE nodes SET agent_url = ?, agent_last_heartbeat = ?, agent_version = ?, agent_verify_ca = ?,
		agent_dialect = ?, watchdog_reboots = 0, watchdog_last_action = 0, provision_updated_at = ? WHERE uuid = ?`
)

func scanHeartbeatNode(r scanner) (*store.Node, error) {
	n := &store.Node{}
	var name sql.NullString
	var p, hb, wd int64
	a := &n.Agent
	if err := r.Scan(&n.UUID, &name, &n.Driver, &n.ProvisionState, &n.Maintenance, &n.Reservation, &p,
		&a.URL, &a.Token, &hb, &a.Version, &a.Dialect, &a.WatchdogReboots, &wd, &a.VerifyCA); err != nil {
		return nil, err
	}
	n.Name = name.String
	n.ProvisionUpdatedAt, a.LastHeartbeat, a.WatchdogLastAction = fromNS(p), fromNS(hb), fromNS(wd)
	return n, nil
}

// RecordHeartbeat reads the node's heartbeat fields (by UUID, else by
// name), runs hb.Check on them and writes the heartbeat in one UPDATE. The
// heartbeats that wait for the writer meanwhile are written together, in
// one transaction (a group commit): each is its own read, check and UPDATE,
// and each returns only after that transaction committed.
func (s *SQLite) RecordHeartbeat(ctx context.Context, ident string, hb store.Heartbeat) (store.Agent, error) {
	r := &hbRequest{ticket: newTicket(false), ident: ident, hb: &hb}
	lead, err := s.hbq.await(ctx, r)
	if err != nil {
		return store.Agent{}, fmt.Errorf("record heartbeat of node %s: %w", ident, err)
	}
	if lead {
		s.writeHeartbeats(ctx, r)
	}
	<-r.done
	if r.err != nil {
		var ce checkError
		if errors.As(r.err, &ce) {
			return store.Agent{}, ce.err
		}
		return store.Agent{}, fmt.Errorf("record heartbeat of node %s: %w", ident, r.err)
	}
	return r.prev, nil
}

// hbRequest is one heartbeat waiting for its batch in heartbeatQueue (prev
// and err are set when it is done).
type hbRequest struct {
	ticket
	ident string
	hb    *store.Heartbeat
	prev  store.Agent
	err   error
}

// heartbeatQueue holds the heartbeats that wait for the writer (none of
// them urgent: their batch goes to the gate as a background write).
type heartbeatQueue struct {
	leaderQueue[*hbRequest]
	// raw are the batch's statements on the writer's driver connection;
	// only the leader (holding the gate) and Close use them.
	raw *hbStmts
}

// maxHeartbeatBatch bounds one transaction's heartbeats.
const maxHeartbeatBatch = 128

// writeHeartbeats writes one batch of the queue, led by leader, and hands
// the rest to the next leader. The statements run without the request's
// cancellation (a batch is other requests' writes too), and without a Done
// channel modernc's driver watches no context per statement.
func (s *SQLite) writeHeartbeats(ctx context.Context, leader *hbRequest) {
	wctx := context.WithoutCancel(ctx)
	// Without the yield batches averaged 1.2 heartbeats, each paying its
	// own BEGIN, COMMIT, WAL locks and hand-off (bench heartbeat_load: 64
	// us of driver CPU per heartbeat, 50 with it). The gate is not held
	// meanwhile: other writes go on. The batch is taken once the gate is
	// passed, so the heartbeats that queue while the leader waits for it
	// join too.
	s.hbq.letJoin()
	leave, err := s.gate.enter(wctx)
	batch := s.hbq.take(leader, maxHeartbeatBatch)
	if err == nil {
		err = s.writeBatch(wctx, batch)
		leave()
		if err != nil {
			// A statement or the commit failed and nothing was kept: each
			// heartbeat alone, so that one's failure is not the others'.
			for _, r := range batch {
				var prev store.Agent
				r.err = s.inTx(wctx, func(wctx context.Context, tx *sql.Tx) error {
					var err error
					prev, err = s.heartbeatInTx(wctx, tx, r.ident, r.hb)
					return err
				})
				r.prev = prev
			}
		}
	} else {
		for _, r := range batch {
			r.err = err
		}
	}
	s.hbq.finish(batch)
}

// checkError carries an error of Heartbeat.Check out of the transaction,
// to be returned as is.
type checkError struct{ err error }

func (e checkError) Error() string { return e.err.Error() }

// heartbeatInTx is one heartbeat's read, check and write inside tx.
func (s *SQLite) heartbeatInTx(ctx context.Context, tx *sql.Tx, ident string, hb *store.Heartbeat) (store.Agent, error) {
	n, err := scanHeartbeatNode(s.stmt(ctx, tx, qHeartbeatRead).QueryRowContext(ctx, ident))
	if errors.Is(err, sql.ErrNoRows) {
		n, err = scanHeartbeatNode(s.stmt(ctx, tx, qHeartbeatReadByName).QueryRowContext(ctx, ident))
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.Agent{}, store.ErrNotFound
	}
	if err != nil {
		return store.Agent{}, err
	}
	if hb.Check != nil {
		if err := hb.Check(n); err != nil {
			return store.Agent{}, checkError{err}
		}
	}
	_, err = s.stmt(ctx, tx, qHeartbeatWrite).ExecContext(ctx, heartbeatWriteArgs(n, hb)...)
	return n.Agent, err
}

// heartbeatWriteArgs are qHeartbeatWrite's arguments for hb on node n as
// read: an empty version or certificate keeps the stored one, and
// provision_updated_at moves only forward, in hb.TouchStates.
func heartbeatWriteArgs(n *store.Node, hb *store.Heartbeat) []any {
	version, ca, touched := hb.Version, hb.VerifyCA, n.ProvisionUpdatedAt
	if version == "" {
		version = n.Agent.Version
	}
	if ca == "" {
		ca = n.Agent.VerifyCA
	}
	if slices.Contains(hb.TouchStates, n.ProvisionState) && hb.At.After(touched) {
		touched = hb.At
	}
	return []any{hb.URL, ns(hb.At), version, ca, hb.Dialect, ns(touched), n.UUID}
}
