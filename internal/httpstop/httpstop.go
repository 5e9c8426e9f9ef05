// Package httpstop stops an http.Server gracefully without waiting on
// connections that never sent a request.
//
// http.Server.Shutdown waits for every connection to go idle, and it
// counts a connection that has sent nothing yet as idle only after 5 s. An
// HTTP client whose request was cancelled while it dialed pools the new
// connection and sends nothing on it, so one such client made a graceful
// stop take 5 s, longer than the grace our servers give. Server hangs up on
// those connections once they have been silent a moment.
package httpstop

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// Quiet is how long a connection must have sent nothing before a Shutdown
// hangs up on it: a client that dials to send a request writes it at once.
const Quiet = 100 * time.Millisecond

// Server is an http.Server whose Shutdown does not wait on silent
// connections.
type Server struct {
	*http.Server

	mu    sync.Mutex
	fresh map[net.Conn]time.Time // connections that have sent nothing, since when
}

// New wraps srv, which must not be serving yet; it chains srv.ConnState.
func New(srv *http.Server) *Server {
	s := &Server{Server: srv, fresh: make(map[net.Conn]time.Time)}
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		s.mu.Lock()
		if st == http.StateNew {
			s.fresh[c] = time.Now()
		} else {
			delete(s.fresh, c)
		}
		s.mu.Unlock()
		if prev != nil {
			prev(c, st)
		}
	}
	return s
}

// Shutdown is http.Server.Shutdown, which also hangs up on the connections
// that have sent nothing for Quiet while it waits for the others.
func (s *Server) Shutdown(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Server.Shutdown(ctx) }()
	tick := time.NewTicker(Quiet / 4)
	defer tick.Stop()
	for {
		select {
		case err := <-errc:
			return err
		case now := <-tick.C:
			s.closeSilent(now)
		}
	}
}

func (s *Server) closeSilent(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, since := range s.fresh {
		if now.Sub(since) >= Quiet {
			c.Close()
			delete(s.fresh, c)
		}
	}
}
