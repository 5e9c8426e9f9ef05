package sqlite

import (
	"context"
	"sync"

	"github.com/ironlab/ironlab/driver/store"
)

// gate admits one writer at a time, urgent ones (store.Urgent: API
// requests) before the others, each class in arrival order. database/sql
// hands its one writer connection to a waiter picked at random, so a
// deploy request waited behind every background write queued at the time
// (1000 nodes: sending the deploy requests took 10-19 s, 0.75 s at 250).
// After urgentRun urgent writers in a row one other goes, so a stream of
// requests (a heartbeat flood) cannot starve the background.
type gate struct {
	mu     sync.Mutex
	busy   bool
	urgent []chan struct{}
	other  []chan struct{}
	run    int // urgent writers admitted in a row while others waited
}

const urgentRun = 8

// enter waits for the gate; the returned func leaves it.
func (g *gate) enter(ctx context.Context) (func(), error) {
	g.mu.Lock()
	if !g.busy {
		g.busy = true
		g.mu.Unlock()
		return g.leave, nil
	}
	ch := make(chan struct{})
	q := &g.other
	if store.IsUrgent(ctx) {
		q = &g.urgent
	}
	*q = append(*q, ch)
	g.mu.Unlock()
	select {
	case <-ch:
		return g.leave, nil
	case <-ctx.Done():
		g.mu.Lock()
		for i, c := range *q {
			if c == ch {
				*q = append((*q)[:i], (*q)[i+1:]...)
				g.mu.Unlock()
				return nil, ctx.Err()
			}
		}
		g.mu.Unlock()
		// Admitted while giving up: pass the gate on.
		g.leave()
		return nil, ctx.Err()
	}
}

// leave hands the gate to the next waiter, urgent first.
func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	order := []*[]chan struct{}{&g.urgent, &g.other}
	if g.run >= urgentRun && len(g.other) > 0 {
		order[0], order[1] = order[1], order[0]
	}
	for _, q := range order {
		if len(*q) > 0 {
			if q == &g.urgent && len(g.other) > 0 {
				g.run++
			} else {
				g.run = 0
			}
			ch := (*q)[0]
			(*q)[0] = nil
			*q = (*q)[1:]
			close(ch)
			return
		}
	}
	g.busy = false
}
