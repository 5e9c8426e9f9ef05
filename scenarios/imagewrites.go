package scenarios

import (
	"context"
	"log/slog"
	"sync"
)

// imageWrites counts, per node, the images the node's own side wrote to
// its disk: the agent's "image written" (write_image, prepare_image) and
// the PXE deploy ramdisk's "disk written" of a stream from offset 0. They
// log those through the lab's logger, which the runner wraps with
// imageWriteCounter: it sees every record of the machines, whatever the
// logger lets through, so the count is the machines' and not the
// conductor's account of what it sent.
type imageWrites struct {
	mu sync.Mutex
	n  map[string]int
}

func (w *imageWrites) count(node string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n[node]
}

type imageWriteCounter struct {
	inner slog.Handler
	node  string
	w     *imageWrites
}

func countImageWrites(inner slog.Handler, w *imageWrites) slog.Handler {
	return &imageWriteCounter{inner: inner, w: w}
}

func (h *imageWriteCounter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.inner.Enabled(ctx, l)
}

func (h *imageWriteCounter) Handle(ctx context.Context, rec slog.Record) error {
	if h.node != "" && rec.Level == slog.LevelInfo && h.isImageWrite(rec) {
		h.w.mu.Lock()
		h.w.n[h.node]++
		h.w.mu.Unlock()
	}
	if !h.inner.Enabled(ctx, rec.Level) {
		return nil
	}
	return h.inner.Handle(ctx, rec)
}

func (h *imageWriteCounter) isImageWrite(rec slog.Record) bool {
	switch rec.Message {
	case "image written":
		return true
	case "disk written":
		fromStart := false
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "offset" {
				fromStart = a.Value.Resolve().String() == "0"
				return false
			}
			return true
		})
		return fromStart
	}
	return false
}

func (h *imageWriteCounter) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(as)
	for _, a := range as {
		if a.Key == "node" {
			c.node = a.Value.Resolve().String()
		}
	}
	return &c
}

func (h *imageWriteCounter) WithGroup(name string) slog.Handler {
	c := *h
	c.inner = h.inner.WithGroup(name)
	return &c
}
