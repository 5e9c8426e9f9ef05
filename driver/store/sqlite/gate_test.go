package sqlite

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/store"
)

// waitQueued waits until n writers wait at g.
func waitQueued(t *testing.T, g *gate, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g.mu.Lock()
		q := len(g.urgent) + len(g.other)
		g.mu.Unlock()
		if q == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writers queued, want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A writer of an API request (store.Urgent) goes before background writers
// that queued earlier; each class keeps its arrival order.
func TestGateUrgentFirst(t *testing.T) {
	var g gate
	ctx := context.Background()
	leave, err := g.enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 4)
	start := func(name string, ctx context.Context, queued int) {
		go func() {
			l, err := g.enter(ctx)
			if err != nil {
				order <- "error " + err.Error()
				return
			}
			order <- name
			l()
		}()
		waitQueued(t, &g, queued)
	}
	start("background 1", ctx, 1)
	start("background 2", ctx, 2)
	start("request 1", store.Urgent(ctx), 3)
	start("request 2", store.Urgent(ctx), 4)
	leave()
	want := []string{"request 1", "request 2", "background 1", "background 2"}
	for i, w := range want {
		select {
		case got := <-order:
			if got != w {
				t.Fatalf("writer %d through the gate: %q, want %q", i, got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("writer %d (%s) never got through", i, w)
		}
	}
	// The gate is free again.
	l, err := g.enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l()
}

// A stream of urgent writers lets one background writer through after
// urgentRun of them.
func TestGateNoStarvation(t *testing.T) {
	var g gate
	ctx := context.Background()
	leave, err := g.enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	order := make(chan string, urgentRun+2)
	start := func(name string, ctx context.Context, queued int) {
		go func() {
			l, err := g.enter(ctx)
			if err != nil {
				order <- "error " + err.Error()
				return
			}
			order <- name
			l()
		}()
		waitQueued(t, &g, queued)
	}
	start("background", ctx, 1)
	for i := 0; i <= urgentRun; i++ {
		start("request", store.Urgent(ctx), i+2)
	}
	leave()
	for i := 0; i < urgentRun+2; i++ {
		want := "request"
		if i == urgentRun {
			want = "background"
		}
		select {
		case got := <-order:
			if got != want {
				t.Fatalf("writer %d through the gate: %q, want %q", i, got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("writer %d (%s) never got through", i, want)
		}
	}
}

// A writer whose context ends while it waits gives up with the context's
// error and does not block the writers behind it.
func TestGateCancelled(t *testing.T) {
	var g gate
	leave, err := g.enter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		_, err := g.enter(ctx)
		gaveUp <- err
	}()
	waitQueued(t, &g, 1)
	cancel()
	select {
	case err := <-gaveUp:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled writer: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled writer still waits")
	}
	next := make(chan struct{})
	go func() {
		l, err := g.enter(context.Background())
		if err == nil {
			l()
		}
		close(next)
	}()
	waitQueued(t, &g, 1)
	leave()
	select {
	case <-next:
	case <-time.After(5 * time.Second):
		t.Fatal("the writer after a cancelled one never got through")
	}
}
