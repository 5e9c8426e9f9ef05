package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ironlab/ironlab/driver/api"
	"github.com/ironlab/ironlab/driver/cluster"
	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/store"
)

// Headers of the forwarding between conductors.
const (
	// HeaderConductor names the conductor that handled a request.
	HeaderConductor = "X-Ironlab-Conductor"
	// HeaderForwardedBy marks a request another conductor forwarded: it is
	// handled where it arrives, never forwarded again.
	HeaderForwardedBy = "X-Ironlab-Forwarded-By"
)

// forwarder sends an action on a node to the node's owner on the hash
// ring, as Ironic's API sends it to the owner's RPC topic: provision and
// power changes, maintenance, vendor passthru, and the agent's heartbeat.
// Reads and lookups are answered from the shared store where they arrive.
// When the owner cannot be reached (dead, not yet dropped from the ring),
// the request is handled here: the node's reservation still serialises the
// work.
type forwarder struct {
	host  string
	cl    *cluster.Cluster
	reg   store.Registry
	cond  *conductor.Conductor
	local http.Handler
	// timeout is how long an owner that took a request has to answer
	// (the conductors' dead time; 60 s when unset).
	timeout time.Duration
	once    sync.Once
	rt      http.RoundTripper
}

// forwardedNode returns the node identity of an action that goes to the
// owner, or "".
func forwardedNode(r *http.Request) string {
	p := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case r.Method == http.MethodPost && strings.HasPrefix(p, "/v1/heartbeat/"):
		return strings.TrimPrefix(p, "/v1/heartbeat/")
	case strings.HasPrefix(p, "/v1/nodes/"):
		parts := strings.Split(strings.TrimPrefix(p, "/v1/nodes/"), "/")
		if len(parts) < 2 || r.Method == http.MethodGet {
			return ""
		}
		switch parts[1] {
		case "states", "maintenance", "vendor_passthru":
			return parts[0]
		}
	}
	return ""
}

func (f *forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(HeaderConductor, f.host)
	if r.Method == http.MethodGet && strings.TrimSuffix(r.URL.Path, "/") == "/v1/conductors" {
		f.conductors(w, r)
		return
	}
	ident := forwardedNode(r)
	if ident == "" || r.Header.Get(HeaderForwardedBy) != "" {
		f.local.ServeHTTP(w, r)
		return
	}
	n, err := f.cond.GetNode(r.Context(), ident)
	if err != nil {
		f.local.ServeHTTP(w, r) // the API answers the 404
		return
	}
	owner, ok := f.cl.Owner(n)
	if !ok || owner.Hostname == f.host || owner.URL == "" {
		f.local.ServeHTTP(w, r)
		return
	}
	target, err := url.Parse(owner.URL)
	if err != nil {
		f.local.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		http.Error(w, "read request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Del(HeaderConductor) // the owner's answer names the owner
	if !f.forward(w, r, owner.Hostname, target, body) {
		w.Header().Set(HeaderConductor, f.host)
		r.Body = io.NopCloser(bytes.NewReader(body))
		f.local.ServeHTTP(w, r)
	}
}

// forward sends the request to the owner at target and copies its answer.
// It reports false when the owner could not be reached (nothing was
// written then, and the caller handles the request here). An owner that
// took the request but does not answer within f.timeout (a hung process)
// gets a 504 in Ironic's error body: handling the request here as well
// could act on the node twice once the owner resumes, as an Ironic API
// answers an RPC that timed out with an error rather than redoing it.
func (f *forwarder) forward(w http.ResponseWriter, r *http.Request, owner string, target *url.URL, body []byte) bool {
	reached := true
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set(HeaderForwardedBy, f.host)
			pr.Out.Body = io.NopCloser(bytes.NewReader(body))
			pr.Out.ContentLength = int64(len(body))
		},
		Transport: f.transport(),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || errors.Is(err, errDial) {
				reached = false
				return
			}
			if r.Context().Err() != nil {
				return // the client went away
			}
			msg := fmt.Sprintf("conductor %s, which owns this node, took the request but did not answer within %s", owner, f.timeout)
			w.Header().Set(HeaderConductor, f.host)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusGatewayTimeout)
			json.NewEncoder(w).Encode(map[string]string{"error_message": api.ErrorMessage(http.StatusGatewayTimeout, msg)})
		},
	}
	proxy.ServeHTTP(w, r)
	return reached
}

// errDial marks a failed or timed-out connect: the owner was not reached.
var errDial = errors.New("connect to the owning conductor")

// transport is the forwarding's HTTP transport: a connect gives up after
// 2 s, an answer after f.timeout.
func (f *forwarder) transport() http.RoundTripper {
	f.once.Do(func() {
		d := &net.Dialer{Timeout: 2 * time.Second}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, fmt.Errorf("%w %s: %w", errDial, addr, err)
			}
			return c, nil
		}
		if f.timeout <= 0 {
			f.timeout = 60 * time.Second
		}
		t.ResponseHeaderTimeout = f.timeout
		f.rt = t
	})
	return f.rt
}

// conductors answers GET /v1/conductors as Ironic does (API 1.49): every
// registered conductor with its group, drivers and whether it is alive.
func (f *forwarder) conductors(w http.ResponseWriter, r *http.Request) {
	type row struct {
		Hostname       string    `json:"hostname"`
		ConductorGroup string    `json:"conductor_group"`
		Alive          bool      `json:"alive"`
		Drivers        []string  `json:"drivers"`
		UpdatedAt      time.Time `json:"updated_at"`
	}
	all, err := f.reg.ListConductors(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// Alive is this conductor's view: the members of its ring, which it
	// rebuilds at each of its heartbeats. A conductor that just joined is
	// alive here only once this one's ring has it, so a client that waits
	// for "alive" knows actions through this API reach the new owner.
	live := map[string]bool{}
	for _, m := range f.cl.Members() {
		live[m.Hostname] = true
	}
	out := []row{}
	for _, c := range all {
		out = append(out, row{Hostname: c.Hostname, ConductorGroup: c.Group, Alive: c.Online && live[c.Hostname],
			Drivers: c.Drivers, UpdatedAt: c.UpdatedAt})
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"conductors": out})
}
