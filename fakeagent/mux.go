package fakeagent

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
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

	serveErr error        // ListenMux's server failed
	cert     *Certificate // set by Listener: agents may then use https
}

// NewMux makes a Mux whose agents advertise baseURL + "/" + node UUID;
// baseURL is where the Mux is served, e.g. http://127.0.0.1:9999.
func NewMux(baseURL string) *Mux {
	return &Mux{base: strings.TrimRight(baseURL, "/"), m: map[string]*Agent{}}
}

// Listener makes the Mux's auto-TLS certificate (one for every agent it
// serves, for the host of its base URL) and wraps ln so that it serves both
// https and plain http: each agent picks one as a standalone IPA would
// (https from driver API 1.68 on, unless auto-TLS is disabled). Serve the
// Mux's handler on the returned listener.
func (m *Mux) Listener(ln net.Listener) (net.Listener, error) {
	u, err := url.Parse(m.base)
	if err != nil {
		return nil, fmt.Errorf("agent mux: base URL %q: %w", m.base, err)
	}
	cert, err := GenerateCertificate(u.Hostname())
	if err != nil {
		return nil, fmt.Errorf("agent mux: %w", err)
	}
	m.mu.Lock()
	m.cert = cert
	m.mu.Unlock()
	return newSniffListener(ln, cert.serverConfig()), nil
}

func (m *Mux) certificatePEM() string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.cert == nil {
		return ""
	}
	return m.cert.PEM
}

// TLSURL is the https agent_url of the agent for node uuid.
func (m *Mux) TLSURL(uuid string) string {
	return "https://" + strings.TrimPrefix(m.base, "http://") + "/" + uuid
}

// ListenMux listens on addr (e.g. 127.0.0.1:0) and serves a new Mux there,
// https and http on one port (see Listener), until ctx ends.
func ListenMux(ctx context.Context, addr string) (*Mux, error) {
	raw, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	m := NewMux("http://" + raw.Addr().String())
	ln, err := m.Listener(raw)
	if err != nil {
		raw.Close()
		return nil, err
	}
	// A client that refuses the certificate is its own business (the
	// wrong_verify_ca fault makes conductors do that): no log line each.
	srv := &http.Server{Handler: m, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
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
