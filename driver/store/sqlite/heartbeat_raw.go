package sqlite

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/ironlab/ironlab/driver/store"
)

// A batch of heartbeats runs on the writer's driver connection itself
// (database/sql's Conn.Raw), with statements prepared on it once, BEGIN
// and COMMIT included: through database/sql, a transaction prepared its
// BEGIN and COMMIT anew and started a goroutine, and every statement
// bound the prepared one to the transaction, converted its arguments and
// allocated its rows (a third of a heartbeat's time in the store).

// hbStmts are the batch's statements on the driver connection dc.
type hbStmts struct {
	dc                                                         any
	begin, commit, rollback, read, readByName, readMany, write driver.Stmt
}

// writeBatch runs batch in one transaction; a heartbeat refused by its
// check or of an unknown node writes nothing and the others go on. Any
// other error means nothing of the batch was kept.
func (s *SQLite) writeBatch(ctx context.Context, batch []*hbRequest) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		st, err := s.hbq.statements(ctx, dc)
		if err != nil {
			return err
		}
		if err := rawExec(ctx, st.begin); err != nil {
			return err
		}
		read, err := readBatchNodes(ctx, st, batch)
		if err != nil {
			return rawRollback(ctx, st, err)
		}
		// written are the nodes a heartbeat of the batch wrote: a node read
		// before that write is read again.
		var written map[string]bool
		for _, r := range batch {
			n := read[r.ident]
			delete(read, r.ident) // a second heartbeat of the same ident reads again
			if n != nil && written[n.UUID] {
				n = nil
			}
			var uuid string
			uuid, r.prev, r.err = heartbeatRaw(ctx, st, r.ident, r.hb, n)
			var ce checkError
			if r.err != nil && !errors.Is(r.err, store.ErrNotFound) && !errors.As(r.err, &ce) {
				return rawRollback(ctx, st, r.err)
			}
			if r.err == nil && len(batch) > 1 {
				if written == nil {
					written = make(map[string]bool, len(batch))
				}
				written[uuid] = true
			}
		}
		if err := rawExec(ctx, st.commit); err != nil {
			return rawRollback(ctx, st, err)
		}
		return nil
	})
	if errors.Is(err, driver.ErrBadConn) && s.hbq.raw != nil {
		s.hbq.raw.close()
		s.hbq.raw = nil
	}
	return err
}

// rawRollback rolls the batch back after cause; when the ROLLBACK fails
// too, the connection is given up (driver.ErrBadConn: database/sql opens
// another), since it may still be in the transaction.
func rawRollback(ctx context.Context, st *hbStmts, cause error) error {
	if err := rawExec(ctx, st.rollback); err != nil {
		return fmt.Errorf("%w (rollback: %v; the connection is dropped: %w)", cause, err, driver.ErrBadConn)
	}
	return cause
}

// statements returns the batch's statements on dc, prepared on first use
// (again when database/sql replaced the connection).
func (q *heartbeatQueue) statements(ctx context.Context, dc any) (*hbStmts, error) {
	if q.raw != nil && q.raw.dc == dc {
		return q.raw, nil
	}
	pc, ok := dc.(driver.ConnPrepareContext)
	if !ok {
		return nil, fmt.Errorf("the SQLite driver's connection %T cannot prepare statements", dc)
	}
	st := &hbStmts{dc: dc}
	for _, p := range []struct {
		to *driver.Stmt
		q  string
	}{{&st.begin, "BEGIN IMMEDIATE"}, {&st.commit, "COMMIT"}, {&st.rollback, "ROLLBACK"},
		{&st.read, qHeartbeatRead}, {&st.readByName, qHeartbeatReadByName}, {&st.readMany, qHeartbeatReadMany},
		{&st.write, qHeartbeatWrite}} {
		var err error
		if *p.to, err = pc.PrepareContext(ctx, p.q); err != nil {
			st.close()
			return nil, fmt.Errorf("prepare %q: %w", p.q, err)
		}
	}
	q.raw = st
	return st, nil
}

func (st *hbStmts) close() {
	for _, s := range []driver.Stmt{st.begin, st.commit, st.rollback, st.read, st.readByName, st.readMany, st.write} {
		if s != nil {
			s.Close()
		}
	}
}

// closeHeartbeatStmts finalizes the batch's statements (before the
// connection closes: SQLite keeps a connection with live statements).
func (s *SQLite) closeHeartbeatStmts(ctx context.Context) {
	if s.hbq.raw == nil {
		return
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return
	}
	defer conn.Close()
	_ = conn.Raw(func(dc any) error {
		if s.hbq.raw.dc == dc {
			s.hbq.raw.close()
		}
		s.hbq.raw = nil
		return nil
	})
}

func rawExec(ctx context.Context, st driver.Stmt, args ...any) error {
	_, err := st.(driver.StmtExecContext).ExecContext(ctx, named(args))
	return err
}

func named(args []any) []driver.NamedValue {
	nv := make([]driver.NamedValue, len(args))
	for i, a := range args {
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	return nv
}

// heartbeatRaw is heartbeatInTx on the driver connection, on node n as
// read in this transaction (nil: read it now). It returns the UUID of the
// node it wrote.
func heartbeatRaw(ctx context.Context, st *hbStmts, ident string, hb *store.Heartbeat, n *store.Node) (string, store.Agent, error) {
	var err error
	if n == nil {
		n, err = readHeartbeatNode(ctx, st.read, ident)
		if errors.Is(err, io.EOF) {
			n, err = readHeartbeatNode(ctx, st.readByName, ident)
		}
	}
	if errors.Is(err, io.EOF) {
		return "", store.Agent{}, store.ErrNotFound
	}
	if err != nil {
		return "", store.Agent{}, err
	}
	if hb.Check != nil {
		if err := hb.Check(n); err != nil {
			return "", store.Agent{}, checkError{err}
		}
	}
	return n.UUID, n.Agent, rawExec(ctx, st.write, heartbeatWriteArgs(n, hb)...)
}

// readBatchNodes reads the nodes of a batch of more than one heartbeat in
// one query, by UUID (the agents' way: an ident that is a name is read
// on its own, in its turn): a statement's set-up (its columns' names and
// types, the bindings, a run of the VM) was half a heartbeat's read.
func readBatchNodes(ctx context.Context, st *hbStmts, batch []*hbRequest) (map[string]*store.Node, error) {
	if len(batch) < 2 {
		return nil, nil
	}
	idents := make([]string, len(batch))
	for i, r := range batch {
		idents[i] = r.ident
	}
	list, err := json.Marshal(idents)
	if err != nil {
		return nil, err
	}
	rows, err := st.readMany.(driver.StmtQueryContext).QueryContext(ctx, named([]any{string(list)}))
	if err != nil {
		return nil, fmt.Errorf("read the batch's nodes: %w", err)
	}
	defer rows.Close()
	nodes := make(map[string]*store.Node, len(batch))
	var v [15]driver.Value
	for {
		err := rows.Next(v[:])
		if errors.Is(err, io.EOF) {
			return nodes, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read the batch's nodes: %w", err)
		}
		n, err := heartbeatNodeOf(&v)
		if err != nil {
			return nil, fmt.Errorf("read heartbeat fields of node %v: %w", v[0], err)
		}
		nodes[n.UUID] = n
	}
}

// readHeartbeatNode reads hbCols of the node by q; none is io.EOF.
func readHeartbeatNode(ctx context.Context, q driver.Stmt, ident string) (*store.Node, error) {
	rows, err := q.(driver.StmtQueryContext).QueryContext(ctx, named([]any{ident}))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var v [15]driver.Value
	if err := rows.Next(v[:]); err != nil {
		return nil, err
	}
	n, err := heartbeatNodeOf(&v)
	if err != nil {
		return nil, fmt.Errorf("read heartbeat fields of node %s: %w", ident, err)
	}
	return n, nil
}

// heartbeatNodeOf is the node of one row of hbCols.
func heartbeatNodeOf(v *[15]driver.Value) (*store.Node, error) {
	n := &store.Node{}
	a := &n.Agent
	var p, hb, wd, maint, reboots int64
	var d dvScan
	d.str(v[0], &n.UUID)
	if v[1] != nil {
		d.str(v[1], &n.Name)
	}
	d.str(v[2], &n.Driver)
	d.str(v[3], &n.ProvisionState)
	d.int(v[4], &maint)
	d.str(v[5], &n.Reservation)
	d.int(v[6], &p)
	d.str(v[7], &a.URL)
	d.str(v[8], &a.Token)
	d.int(v[9], &hb)
	d.str(v[10], &a.Version)
	d.str(v[11], &a.Dialect)
	d.int(v[12], &reboots)
	d.int(v[13], &wd)
	d.str(v[14], &a.VerifyCA)
	if d.err != nil {
		return nil, d.err
	}
	n.Maintenance, a.WatchdogReboots = maint != 0, int(reboots)
	n.ProvisionUpdatedAt, a.LastHeartbeat, a.WatchdogLastAction = fromNS(p), fromNS(hb), fromNS(wd)
	return n, nil
}

// dvScan converts driver values of the schema's types, keeping the first
// mismatch.
type dvScan struct{ err error }

func (d *dvScan) str(v driver.Value, to *string) {
	switch x := v.(type) {
	case string:
		*to = x
	case []byte:
		*to = string(x)
	default:
		d.fail(v, "text")
	}
}

func (d *dvScan) int(v driver.Value, to *int64) {
	if x, ok := v.(int64); ok {
		*to = x
		return
	}
	d.fail(v, "integer")
}

func (d *dvScan) fail(v driver.Value, want string) {
	if d.err == nil {
		d.err = fmt.Errorf("a column holds %T, want %s", v, want)
	}
}
