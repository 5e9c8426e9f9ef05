package fakeagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/ironlab/ironlab/internal/httpstop"
)

// ServeWhile serves hs on ln while run runs, then shuts it down. A
// server that stops on its own (its listener failed) ends run too, and
// ServeWhile returns that error with run's: an agent whose API is gone does
// not keep heartbeating as if it could be reached.
func ServeWhile(ctx context.Context, hs *http.Server, ln net.Listener, run func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := httpstop.New(hs) // a silent connection does not hold the stop
	served := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		} else {
			err = fmt.Errorf("serve on %s: %w", ln.Addr(), err)
			cancel()
		}
		served <- err
	}()
	runErr := run(ctx)
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer scancel()
	_ = srv.Shutdown(sctx) // Serve returns; its error is the one that matters
	return errors.Join(<-served, runErr)
}
