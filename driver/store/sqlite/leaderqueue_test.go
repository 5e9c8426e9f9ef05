package sqlite

import (
	"fmt"
	"testing"
)

// A request that gives up while it waits is never taken nor made the
// leader, wherever it waits; requests a batch took and put back come
// first again, in their order, before the ones that waited behind them.
func TestLeaderQueueAbandonAndPutBack(t *testing.T) {
	var q writeQueue
	leader := &writeReq{ticket: newTicket(false)}
	q.join(leader)
	var rs []*writeReq
	for i := range 6 {
		r := &writeReq{ticket: newTicket(i == 4)}
		q.join(r)
		rs = append(rs, r)
	}
	// Give up the first (at the head) and the third (in the middle).
	for _, i := range []int{0, 2} {
		if !q.abandon(rs[i]) {
			t.Fatalf("request %d could not give up while it waits", i)
		}
	}
	if q.abandon(leader) {
		t.Fatal("the leader gave up")
	}
	if n := waiting(&q); n != 4 || !q.leading {
		t.Fatalf("%d waiting (leading %v), want 4 and the leader", n, q.leading)
	}
	// The urgent one (4) waits: the batch is the leader's and its.
	batch := q.take(leader, maxWriteBatch)
	if got := names(rs, batch[1:]); got != "[4]" {
		t.Fatalf("first batch took %s, want [4]", got)
	}
	// Put 4 back, as a batch that did not run it does.
	q.putBack(batch[1:])
	if u, n := waitingIn(&q.urgentQ), waiting(&q); u != 1 || n != 4 {
		t.Fatalf("after the put-back: %d urgent waiting, %d in all; want 1, 4", u, n)
	}
	// The next leader is the first waiting by arrival: 1 (0 gave up).
	next := handOver(t, &q)
	if next != rs[1] {
		t.Fatalf("next leader is request %s, want 1", names(rs, []*writeReq{next}))
	}
	batch = q.take(next, maxWriteBatch)
	if got := names(rs, batch); got != "[1 4]" {
		t.Fatalf("second batch %s, want [1 4] (urgent first)", got)
	}
	next = handOver(t, &q)
	batch = q.take(next, maxWriteBatch)
	if got := names(rs, batch); got != "[3 5]" {
		t.Fatalf("third batch %s, want [3 5] (2 gave up)", got)
	}
	if _, ok := q.handOver(); ok || waiting(&q) != 0 {
		t.Fatalf("a leader after the last batch (%d waiting)", waiting(&q))
	}
	// A put-back of background writes goes before those queued since.
	lead, a, b := &writeReq{ticket: newTicket(false)}, &writeReq{ticket: newTicket(false)}, &writeReq{ticket: newTicket(false)}
	if !q.join(lead) {
		t.Fatal("a request joining an idle queue does not lead")
	}
	q.join(a)
	q.join(b)
	if batch := q.take(lead, maxWriteBatch); len(batch) != 3 {
		t.Fatalf("batch of %d, want 3", len(batch))
	}
	late := &writeReq{ticket: newTicket(false)}
	q.join(late)
	q.putBack([]*writeReq{a, b})
	all := []*writeReq{a, b, late}
	var order []*writeReq
	for {
		r, ok := q.handOver()
		if !ok {
			break
		}
		order = append(order, r)
		q.take(r, 1)
	}
	if got := names(all, order); got != "[0 1 2]" {
		t.Fatalf("leaders after the put-back %s, want [0 1 2] (the two put back, then the late one)", got)
	}
}

// waiting counts the requests of q that wait (neither leading, in a
// batch nor given up).
func waiting[R queued](q *leaderQueue[R]) int {
	return waitingIn(&q.urgentQ) + waitingIn(&q.otherQ)
}

func waitingIn[R queued](f *fifo[R]) int {
	n := 0
	for _, r := range f.items[f.head:] {
		if !r.tk().taken {
			n++
		}
	}
	return n
}

func names(all, some []*writeReq) string {
	var out []int
	for _, r := range some {
		for i, a := range all {
			if a == r {
				out = append(out, i)
			}
		}
	}
	return fmt.Sprint(out)
}

// BenchmarkLeaderQueueLong is one request's way through a queue that
// holds 10,000 others (a fleet's tasks at once) or 100: join, taken in a
// batch of maxWriteBatch, the batch handed over. The queue keeps its
// length, and each operation is O(1): 0.26-0.29 us a request at 100 and
// 0.35-0.39 at 10,000 here; the queue that scanned itself whole per batch,
// in the same hour: 0.27-0.31 and 2.2-2.4 us.
func BenchmarkLeaderQueueLong(b *testing.B) {
	for _, waiting := range []int{100, 10000} {
		b.Run(fmt.Sprintf("waiting=%d", waiting), func(b *testing.B) {
			var q writeQueue
			first := &writeReq{ticket: newTicket(false)}
			q.join(first)
			for range waiting {
				q.join(&writeReq{ticket: newTicket(false)})
			}
			q.take(first, 1)
			leader, _ := q.handOver()
			b.ResetTimer()
			for n := 0; n < b.N; n += maxWriteBatch {
				for range maxWriteBatch {
					q.join(&writeReq{ticket: newTicket(false)})
				}
				q.take(leader, maxWriteBatch)
				leader, _ = q.handOver()
			}
		})
	}
}
