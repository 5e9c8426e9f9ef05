package sqlite

import (
	"context"
	"runtime"
	"sync"
)

// A leaderQueue holds the requests that wait for the one SQLite writer, to
// be committed together (a group commit): the first request to queue
// becomes the leader, takes a batch (itself first), commits it in one
// transaction and tells each request of the batch how it went; it then
// hands the queue to the first request still waiting, which leads the
// next batch. The heartbeats (hbq) and the other writes (wq) each have
// one; what a batch is and how it runs is theirs.
//
// Every operation on it is O(1) (amortized) however long the queue: urgent
// and other requests wait in a FIFO each, and a request that gives up is
// skipped when it reaches the head. It used to be one slice that each
// batch scanned whole to drop what it took: at 10,000 nodes thousands of
// tasks' writes queue at once (a power off, a deploy), and the scans were
// 6 % of the driver's CPU, more per write the more nodes.

// ticket is a request's place in a leaderQueue: turn is closed when it is
// to lead (it is the first queued then), done when its batch committed or
// failed. Requests embed it.
type ticket struct {
	turn   chan struct{}
	done   chan struct{}
	urgent bool   // an API request's (store.Urgent): goes before the others
	taken  bool   // leading, in a batch or given up: no longer waiting (under mu)
	seq    uint64 // arrival order (under mu)
}

func newTicket(urgent bool) ticket {
	return ticket{turn: make(chan struct{}), done: make(chan struct{}), urgent: urgent}
}

func (t *ticket) tk() *ticket { return t }

// queued is a request that embeds a ticket.
type queued interface{ tk() *ticket }

type leaderQueue[R queued] struct {
	mu      sync.Mutex
	urgentQ fifo[R] // waiting urgent requests, in arrival order
	otherQ  fifo[R] // waiting other requests, in arrival order
	leading bool
	seq     uint64
	// batches counts the batches taken, requests the requests they took
	// (benchmarks report requests per transaction with them).
	batches, requests int64
}

// await queues r and waits for its turn to lead (then lead is true: the
// caller runs a batch, r in it) or for its batch to be done. A ctx that
// ends while r waits in the queue takes r out of it, unwritten, and
// returns ctx.Err(); once r is in a batch or leads, it waits for that.
func (q *leaderQueue[R]) await(ctx context.Context, r R) (lead bool, err error) {
	if q.join(r) {
		return true, nil
	}
	t := r.tk()
	select {
	case <-t.done:
		return false, nil
	case <-t.turn:
		return true, nil
	case <-ctx.Done():
		if q.abandon(r) {
			return false, ctx.Err()
		}
		// Taken into a batch, or made the leader meanwhile.
		select {
		case <-t.done:
			return false, nil
		case <-t.turn:
			return true, nil
		}
	}
}

// join queues r and reports whether it leads.
func (q *leaderQueue[R]) join(r R) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	t := r.tk()
	q.seq++
	t.seq = q.seq
	if q.leading {
		q.fifoOf(t).push(r)
		return false
	}
	q.leading = true
	t.taken = true
	return true
}

func (q *leaderQueue[R]) fifoOf(t *ticket) *fifo[R] {
	if t.urgent {
		return &q.urgentQ
	}
	return &q.otherQ
}

// abandon takes r out of the queue unless a batch took it already or it
// was made the leader (then it leads all the same). It stays in its FIFO,
// marked, until it reaches the head.
func (q *leaderQueue[R]) abandon(r R) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	t := r.tk()
	if t.taken {
		return false
	}
	t.taken = true
	return true
}

// letJoin is the leader's yield before it takes its batch: the requests
// that are runnable now (a few microseconds from queueing, or woken by
// the last batch) queue first and join the batch. Without it, on 2 busy
// cores the leader took the queue before any of them ran: heartbeat
// batches averaged 1.2-1.9, 7.7-12.5 with it.
func (q *leaderQueue[R]) letJoin() { runtime.Gosched() }

// take starts the batch of leader (which leads: join or handOver said so)
// with up to max-1 waiting requests, in arrival order; the leader comes
// first. While urgent requests wait, the batch is theirs alone (with the
// leader's): an urgent request then waits for no other one.
func (q *leaderQueue[R]) take(leader R, max int) []R {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.batches++
	batch := []R{leader}
	from := &q.otherQ
	if _, ok := q.urgentQ.front(); ok {
		from = &q.urgentQ
	}
	batch = q.takeFrom(from, batch, max)
	q.requests += int64(len(batch))
	return batch
}

// takeFrom appends waiting requests of f to batch, up to max in all.
func (q *leaderQueue[R]) takeFrom(f *fifo[R], batch []R, max int) []R {
	for len(batch) < max {
		r, ok := f.pop()
		if !ok {
			break
		}
		batch = append(batch, r)
	}
	return batch
}

// takeUrgent removes up to max waiting urgent requests (in arrival order),
// for the batch that is running.
func (q *leaderQueue[R]) takeUrgent(max int) []R {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.takeFrom(&q.urgentQ, nil, max)
	q.requests += int64(len(out))
	return out
}

// putBack returns requests a batch took but did not run to the head of the
// queue, in their order.
func (q *leaderQueue[R]) putBack(rs []R) {
	if len(rs) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	var urgent, other []R
	for _, r := range rs {
		t := r.tk()
		t.taken = false
		if t.urgent {
			urgent = append(urgent, r)
		} else {
			other = append(other, r)
		}
	}
	q.urgentQ.pushFront(urgent)
	q.otherQ.pushFront(other)
	q.requests -= int64(len(rs))
}

// finish tells every request of batch that it is done (its results set
// before), then hands the queue on. The hand-over is last: the goroutine
// made ready last runs next on this P (runnext); handed over first, the
// next leader was pushed back behind every request of the batch woken
// after it, a wait of its own under load.
func (q *leaderQueue[R]) finish(batch []R) {
	for _, r := range batch {
		close(r.tk().done)
	}
	q.handOver()
}

// handOver makes the first waiting request (urgent or not, by arrival) the
// leader and returns it, or ends leading.
func (q *leaderQueue[R]) handOver() (next R, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	u, uok := q.urgentQ.front()
	o, ook := q.otherQ.front()
	switch {
	case uok && (!ook || u.tk().seq < o.tk().seq):
		next, _ = q.urgentQ.pop()
	case ook:
		next, _ = q.otherQ.pop()
	default:
		q.leading = false
		return next, false
	}
	close(next.tk().turn)
	return next, true
}

// fifo is one class of waiting requests in arrival order. A request
// leaves it at the head: taken (pop), or given up (marked taken by
// abandon, dropped when it reaches the head).
type fifo[R queued] struct {
	items []R
	head  int
}

func (f *fifo[R]) push(r R) {
	if f.head > 0 && len(f.items) == cap(f.items) && f.head >= len(f.items)/2 {
		n := copy(f.items, f.items[f.head:])
		clear(f.items[n:])
		f.items, f.head = f.items[:n], 0
	}
	f.items = append(f.items, r)
}

// front drops the given-up requests at the head and returns the first
// waiting one.
func (f *fifo[R]) front() (r R, ok bool) {
	var zero R
	for f.head < len(f.items) {
		if r = f.items[f.head]; !r.tk().taken {
			return r, true
		}
		f.items[f.head] = zero
		f.head++
	}
	f.items, f.head = f.items[:0], 0
	return zero, false
}

// pop takes the first waiting request (marks it taken).
func (f *fifo[R]) pop() (R, bool) {
	r, ok := f.front()
	if ok {
		var zero R
		f.items[f.head] = zero
		f.head++
		r.tk().taken = true
	}
	return r, ok
}

// pushFront puts rs (not taken) back before the waiting requests, in their
// order.
func (f *fifo[R]) pushFront(rs []R) {
	if len(rs) == 0 {
		return
	}
	if f.head >= len(rs) {
		f.head -= len(rs)
		copy(f.items[f.head:], rs)
		return
	}
	items := make([]R, 0, len(rs)+len(f.items)-f.head)
	items = append(append(items, rs...), f.items[f.head:]...)
	f.items, f.head = items, 0
}
