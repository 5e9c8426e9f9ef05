package sqlite

import (
	"context"
	"runtime"
	"slices"
	"sync"
)

// A leaderQueue holds the requests that wait for the one SQLite writer, to
// be committed together (a group commit): the first request to queue
// becomes the leader, takes a batch (itself first), commits it in one
// transaction and tells each request of the batch how it went; it then
// hands the queue to the first request still waiting, which leads the
// next batch. The heartbeats (hbq) and the other writes (wq) each have
// one; what a batch is and how it runs is theirs.

// ticket is a request's place in a leaderQueue: turn is closed when it is
// to lead (it is the first queued then), done when its batch committed or
// failed. Requests embed it.
type ticket struct {
	turn   chan struct{}
	done   chan struct{}
	urgent bool // an API request's (store.Urgent): goes before the others
	taken  bool // in a batch or leading: no longer abandoned (under mu)
}

func newTicket(urgent bool) ticket {
	return ticket{turn: make(chan struct{}), done: make(chan struct{}), urgent: urgent}
}

func (t *ticket) tk() *ticket { return t }

// queued is a request that embeds a ticket.
type queued interface{ tk() *ticket }

type leaderQueue[R queued] struct {
	mu      sync.Mutex
	queue   []R
	leading bool
	urgent  int // urgent requests in queue (so a batch need not scan for none)
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
	q.queue = append(q.queue, r)
	t := r.tk()
	if t.urgent {
		q.urgent++
	}
	if q.leading {
		return false
	}
	q.leading = true
	t.taken = true
	return true
}

// abandon takes r out of the queue unless a batch took it already or it
// was made the leader (then it leads all the same).
func (q *leaderQueue[R]) abandon(r R) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	t := r.tk()
	if t.taken {
		return false
	}
	for i, x := range q.queue {
		if x.tk() == t {
			q.queue = slices.Delete(q.queue, i, i+1)
			if t.urgent {
				q.urgent--
			}
			return true
		}
	}
	return false
}

// letJoin is the leader's yield before it takes its batch: the requests
// that are runnable now (a few microseconds from queueing, or woken by
// the last batch) queue first and join the batch. Without it, on 2 busy
// cores the leader took the queue before any of them ran: heartbeat
// batches averaged 1.2-1.9, 7.7-12.5 with it.
func (q *leaderQueue[R]) letJoin() { runtime.Gosched() }

// take removes the leader and up to max-1 other queued requests from the
// queue, in arrival order; the leader comes first. While urgent requests
// wait, the batch is theirs alone (with the leader's): an urgent request
// then waits for no other one.
func (q *leaderQueue[R]) take(leader R, max int) []R {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.batches++
	batch := []R{leader}
	lt := leader.tk()
	lt.taken = true
	urgentOnly := q.urgent > 0 && !(lt.urgent && q.urgent == 1)
	for _, r := range q.queue {
		if len(batch) == max {
			break
		}
		if t := r.tk(); !t.taken && (t.urgent || !urgentOnly) {
			t.taken = true
			batch = append(batch, r)
		}
	}
	q.requests += int64(len(batch))
	q.dropTaken()
	return batch
}

// takeUrgent removes up to max queued urgent requests (in arrival order),
// for the batch that is running.
func (q *leaderQueue[R]) takeUrgent(max int) []R {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.urgent == 0 {
		return nil
	}
	var out []R
	for _, r := range q.queue {
		if len(out) == max {
			break
		}
		if t := r.tk(); t.urgent && !t.taken {
			t.taken = true
			out = append(out, r)
		}
	}
	if len(out) > 0 {
		q.requests += int64(len(out))
		q.dropTaken()
	}
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
	for _, r := range rs {
		t := r.tk()
		t.taken = false
		if t.urgent {
			q.urgent++
		}
	}
	q.requests -= int64(len(rs))
	q.queue = append(append(make([]R, 0, len(rs)+len(q.queue)), rs...), q.queue...)
}

// dropTaken removes the taken requests from the queue (under mu).
func (q *leaderQueue[R]) dropTaken() {
	rest := q.queue[:0]
	for _, r := range q.queue {
		if t := r.tk(); !t.taken {
			rest = append(rest, r)
		} else if t.urgent {
			q.urgent--
		}
	}
	clear(q.queue[len(rest):])
	q.queue = rest
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

// handOver makes the first queued request the leader, or ends leading.
func (q *leaderQueue[R]) handOver() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queue) == 0 {
		q.leading = false
		return
	}
	t := q.queue[0].tk()
	t.taken = true
	close(t.turn)
}
