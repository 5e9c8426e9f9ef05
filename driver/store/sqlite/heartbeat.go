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
// name), runs hb.Check on them and writes the heartbeat in one UPDATE, all
// in one transaction.
func (s *SQLite) RecordHeartbeat(ctx context.Context, ident string, hb store.Heartbeat) (store.Agent, error) {
	var prev store.Agent
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		prev, err = s.heartbeatInTx(ctx, tx, ident, &hb)
		return err
	})
	if err != nil {
		var ce checkError
		if errors.As(err, &ce) {
			return store.Agent{}, ce.err
		}
		return store.Agent{}, fmt.Errorf("record heartbeat of node %s: %w", ident, err)
	}
	return prev, nil
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
	prev := n.Agent
	version, ca, touched := hb.Version, hb.VerifyCA, n.ProvisionUpdatedAt
	if version == "" {
		version = prev.Version
	}
	if ca == "" {
		ca = prev.VerifyCA
	}
	if slices.Contains(hb.TouchStates, n.ProvisionState) && hb.At.After(touched) {
		touched = hb.At
	}
	_, err = s.stmt(ctx, tx, qHeartbeatWrite).ExecContext(ctx, hb.URL, ns(hb.At), version, ca, hb.Dialect, ns(touched), n.UUID)
	return prev, err
}
