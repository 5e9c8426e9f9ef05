package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/ironlab/ironlab/driver/store"
)

// The writes that wait for the writer are committed together (a group
// commit, as the heartbeats are): each write is its own savepoint in one
// transaction, and each returns only after that transaction committed. At
// 10,000 nodes thousands of tasks queued at the gate, each write paying a
// BEGIN and a COMMIT (22 of its 51 CPU-seconds) and a goroutine hand-off
// under a loaded scheduler; a batch pays them once.

// maxWriteBatch bounds one transaction's writes, and with it how long an
// API request's write waits for the batch before its own: at 128 (tens of
// ms at 10,000 nodes under load) the runner's deploy requests, two writes
// each, took 0.4 s apiece; 32 keeps nearly all of the commits saved.
const maxWriteBatch = 32

// writeReq is one write waiting for its batch in writeQueue (err is set
// when it is done).
type writeReq struct {
	ticket
	ctx context.Context
	f   func(ctx context.Context, tx *sql.Tx) error
	err error
}

// writeQueue holds the writes that wait for the writer; urgent ones (API
// requests, store.Urgent) go before the others.
type writeQueue = leaderQueue[*writeReq]

// inTx runs f in a transaction with the other writes queued meanwhile, as
// its own savepoint: an error of f rolls back f's statements only. f runs
// without ctx's cancellation once it started (an interrupted statement
// would roll back the whole batch, other callers' writes too), so it runs
// to the end; ctx ending before that gives up the write (ctx.Err()).
func (s *SQLite) inTx(ctx context.Context, f func(ctx context.Context, tx *sql.Tx) error) error {
	r := &writeReq{ticket: newTicket(store.IsUrgent(ctx)), ctx: ctx, f: f}
	lead, err := s.wq.await(ctx, r)
	if err != nil {
		return err
	}
	if lead {
		s.writeQueued(r)
	}
	return r.err
}

// Savepoint statements of a batch (prepared at Open).
const (
	qSavepoint  = `SAVEPOINT w`
	qRollbackTo = `ROLLBACK TO w`
	qReleaseSP  = `RELEASE w`
)

// writeQueued writes a batch led by leader, hands the queue on and tells
// every write of the batch how it went.
func (s *SQLite) writeQueued(leader *writeReq) {
	// As the heartbeats' leader does: without the yield the batches of
	// BenchmarkTaskWritesContended averaged 9 writes, 32 (the most) with
	// it, and BenchmarkSmallWritesContended's 2.8, 12.1 with it.
	s.wq.letJoin()
	batch := s.wq.take(leader, maxWriteBatch)
	gctx := context.WithoutCancel(leader.ctx)
	for _, r := range batch {
		if r.urgent {
			gctx = store.Urgent(gctx)
			break
		}
	}
	if leave, err := s.gate.enter(gctx); err != nil {
		for _, r := range batch {
			r.err = err
		}
	} else {
		batch = s.runBatch(gctx, batch)
		leave()
	}
	s.wq.finish(batch)
}

// maxUrgentJoins bounds the urgent writes a running batch takes in.
const maxUrgentJoins = maxWriteBatch

// runBatch runs batch's writes in one transaction, and the urgent writes
// (API requests) that queue while it runs, up to maxUrgentJoins: those run
// next and the batch commits after them, its background writes not run
// yet going back to the queue; a request's write waits for one write and a
// commit, not for a batch before its own. It returns the writes it ran
// (or failed). A write alone needs no
// savepoint: its error rolls back the transaction. When a savepoint cannot
// be rolled back, or the commit fails, nothing of the batch was kept and
// every write gets that error.
func (s *SQLite) runBatch(ctx context.Context, batch []*writeReq) []*writeReq {
	fail := func(err error) {
		for _, r := range batch {
			if r.err == nil {
				r.err = err
			}
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		fail(err)
		return batch
	}
	if len(batch) == 1 {
		r := batch[0]
		if r.err = r.f(context.WithoutCancel(r.ctx), tx); r.err != nil {
			tx.Rollback()
			return batch
		}
		if err := tx.Commit(); err != nil {
			r.err = err
		}
		return batch
	}
	joined := 0
	for i := 0; i < len(batch); i++ {
		r := batch[i]
		if _, err := s.stmt(ctx, tx, qSavepoint).ExecContext(ctx); err != nil {
			tx.Rollback()
			fail(fmt.Errorf("batch savepoint: %w", err))
			return batch
		}
		if r.err = r.f(context.WithoutCancel(r.ctx), tx); r.err != nil {
			if _, err := s.stmt(ctx, tx, qRollbackTo).ExecContext(ctx); err != nil {
				tx.Rollback()
				fail(fmt.Errorf("batch rollback to savepoint (after %v): %w", r.err, err))
				return batch
			}
		}
		if _, err := s.stmt(ctx, tx, qReleaseSP).ExecContext(ctx); err != nil {
			tx.Rollback()
			fail(fmt.Errorf("batch release savepoint: %w", err))
			return batch
		}
		if joined < maxUrgentJoins {
			if more := s.wq.takeUrgent(maxUrgentJoins - joined); len(more) > 0 {
				// The urgent ones go next, and the commit right after
				// them: the background writes not run yet wait for the
				// next batch, at the head of the queue.
				joined += len(more)
				s.wq.putBack(batch[i+1:])
				batch = append(batch[:i+1:i+1], more...)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		fail(err)
	}
	return batch
}
