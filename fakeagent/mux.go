package fakeagent

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Mux serves many agents on one listener, each under /<node-uuid>, the way
// metal3's fake-ipa does: an agent advertises http://127.0.0.1:<port>/<uuid>
// and Ironic calls /<uuid>/v1/commands/. Agents register after a successful
// lookup and unregister when they stop.
type Mux struct {
	base string
	mu   sync.RWMutex
	m    map[string]*Agent

	serveErr error // ListenMux's server failed
}

// NewMux makes a Mux whose agents advertise baseURL + "/" + node UUID;
// baseURL is where the Mux is served, e.g. http://127.0.0.1:9999.
func NewMux(baseURL string) *Mux {
	return &Mux{base: strings.TrimRight(baseURL, "/"), m: map[string]*Agent{}}
}

// ListenMux listens on addr (e.g. 127.0.0.1:0) and serves a new Mux there
// until ctx ends.
func ListenMux(ctx context.Context, addr string) (*Mux, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	m := NewMux("http://" + ln.Addr().String())
	srv := &http.Server{Handler: m, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		err := ServeWhile(ctx, srv, ln, func(ctx context.Context) error {
			<-ctx.Done()
			return nil
		})
		m.mu.Lock()
		m.serveErr = err
		m.mu.Unlock()
	}()
	return m, nil
}

// Err is why a ListenMux server stopped before its context ended (its
// listener failed), or nil.
func (m *Mux) Err() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.serveErr
}

// URL is the agent_url of the agent for node uuid.
func (m *Mux) URL(uuid string) string { return m.base + "/" + uuid }

// Agent returns the agent registered for node uuid.
func (m *Mux) Agent(uuid string) (*Agent, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	a, ok := m.m[uuid]
	return a, ok
}

// Len is the number of registered agents.
func (m *Mux) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.m)
}

func (m *Mux) register(uuid string, a *Agent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a.muxUUID != "" && a.muxUUID != uuid && m.m[a.muxUUID] == a {
		delete(m.m, a.muxUUID) // a re-lookup found another node
	}
	a.muxUUID = uuid
	m.m[uuid] = a
}

func (m *Mux) unregister(a *Agent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m[a.muxUUID] == a {
		delete(m.m, a.muxUUID)
	}
	a.muxUUID = ""
}

// ServeHTTP routes /<uuid>/... to that node's agent.
func (m *Mux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, "/")
	uuid, sub, _ := strings.Cut(rest, "/")
	m.mu.RLock()
	a, ok := m.m[uuid]
	m.mu.RUnlock()
	if !ok {
		writeFault(w, 404, "404 Not Found: no agent is running for node "+uuid)
		return
	}
	a.serve(w, r, "/"+uuid, "/"+sub)
}
