package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"sync"

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

// writeReq is one write waiting for its batch: turn is closed when it is to
// write the queue, done when its batch committed or failed (err is set).
type writeReq struct {
	ctx    context.Context
	f      func(ctx context.Context, tx *sql.Tx) error
	urgent bool
	turn   chan struct{}
	done   chan struct{}
	taken  bool // in a batch or leading: no longer abandoned (under mu)
	err    error
}

// writeQueue holds the writes that wait for the writer. One of them at a
// time (the leader) writes a batch, itself first; it then hands the queue
// to the first write still waiting.
type writeQueue struct {
	mu      sync.Mutex
	queue   []*writeReq
	leading bool
	urgent  int // urgent writes in queue (so a batch need not scan for none)
}

func (q *writeQueue) join(r *writeReq) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queue = append(q.queue, r)
	if r.urgent {
		q.urgent++
	}
	if q.leading {
		return false
	}
	q.leading = true
	r.taken = true
	return true
}

// dropTaken removes the taken writes from the queue (under mu).
func (q *writeQueue) dropTaken() {
	rest := q.queue[:0]
	for _, r := range q.queue {
		if !r.taken {
			rest = append(rest, r)
		} else if r.urgent {
			q.urgent--
		}
	}
	clear(q.queue[len(rest):])
	q.queue = rest
}

// abandon takes r out of the queue unless a batch took it already or it
// was made the leader (then it leads all the same).
func (q *writeQueue) abandon(r *writeReq) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if r.taken {
		return false
	}
	for i, x := range q.queue {
		if x == r {
			q.queue = append(q.queue[:i], q.queue[i+1:]...)
			if r.urgent {
				q.urgent--
			}
			return true
		}
	}
	return false
}

// take removes the leader and up to maxWriteBatch-1 other queued writes
// from the queue, in arrival order; the leader's own write comes first.
// While urgent writes (API requests) wait, the batch is theirs alone (with
// the leader's): a request's write then waits for no background one.
func (q *writeQueue) take(leader *writeReq) []*writeReq {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := []*writeReq{leader}
	leader.taken = true
	urgentOnly := q.urgent > 0 && !(leader.urgent && q.urgent == 1)
	for _, r := range q.queue {
		if len(batch) == maxWriteBatch {
			break
		}
		if !r.taken && (r.urgent || !urgentOnly) {
			r.taken = true
			batch = append(batch, r)
		}
	}
	q.dropTaken()
	return batch
}

// takeUrgent removes up to max queued urgent writes (in arrival order),
// for the batch that is running.
func (q *writeQueue) takeUrgent(max int) []*writeReq {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.urgent == 0 {
		return nil
	}
	var out []*writeReq
	for _, r := range q.queue {
		if len(out) == max {
			break
		}
		if r.urgent && !r.taken {
			r.taken = true
			out = append(out, r)
		}
	}
	if len(out) > 0 {
		q.dropTaken()
	}
	return out
}

// putBack returns writes a batch took but did not run to the head of the
// queue, in their order.
func (q *writeQueue) putBack(rs []*writeReq) {
	if len(rs) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range rs {
		r.taken = false
		if r.urgent {
			q.urgent++
		}
	}
	q.queue = append(append(make([]*writeReq, 0, len(rs)+len(q.queue)), rs...), q.queue...)
}

// handOver makes the first queued write the leader, or ends leading.
func (q *writeQueue) handOver() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queue) == 0 {
		q.leading = false
		return
	}
	next := q.queue[0]
	next.taken = true
	close(next.turn)
}

// inTx runs f in a transaction with the other writes queued meanwhile, as
// its own savepoint: an error of f rolls back f's statements only. f runs
// without ctx's cancellation once it started (an interrupted statement
// would roll back the whole batch, other callers' writes too), so it runs
// to the end; ctx ending before that gives up the write (ctx.Err()).
func (s *SQLite) inTx(ctx context.Context, f func(ctx context.Context, tx *sql.Tx) error) error {
	r := &writeReq{ctx: ctx, f: f, urgent: store.IsUrgent(ctx), turn: make(chan struct{}), done: make(chan struct{})}
	if s.wq.join(r) {
		s.writeQueued(r)
		return r.err
	}
	select {
	case <-r.done:
		return r.err
	case <-r.turn:
	case <-ctx.Done():
		if s.wq.abandon(r) {
			return ctx.Err()
		}
		// Taken into a batch, or made the leader meanwhile.
		select {
		case <-r.done:
			return r.err
		case <-r.turn:
		}
	}
	s.writeQueued(r)
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
	batch := s.wq.take(leader)
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
	for _, r := range batch {
		close(r.done)
	}
	// Last: the goroutine made ready last runs next on this P (runnext);
	// handed over first, the next leader was pushed back behind every
	// write of the batch woken after it, a wait of its own under load.
	s.wq.handOver()
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
