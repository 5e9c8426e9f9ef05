package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/ironlab/ironlab/simulator/bmc/ipmiload"
)

// The closed loops of the bench: the same load is played against the
// built-in driver and, with --compare, against its peers (a real Ironic, a
// pyghmi BMC), so that the two figures mean the same thing.

// loadVersion is the API version of every load request (agent_version in
// heartbeats needs 1.36, the token 1.62; both Ironic 21.4 and ours serve it).
const loadVersion = "1.68"

// hbTarget is one node the heartbeat load beats for, with its agent token.
type hbTarget struct {
	UUID, Token, Callback string
}

// HeartbeatLoad is a closed-loop heartbeat run: Clients workers, each
// heartbeating its own share of Nodes nodes one after the other (a node is
// never heartbeated twice at once), for Seconds.
type HeartbeatLoad struct {
	Nodes    int     `json:"nodes"`
	Clients  int     `json:"clients"`
	Seconds  float64 `json:"seconds"`
	Requests int     `json:"requests"`
	// Accepted are the 202 answers; Busy the 503s (the target had no
	// worker free to take the heartbeat: real Ironic's
	// NoFreeConductorWorker when a closed loop outruns its conductor's
	// pool, an answer of the peer, not a fault of the client); Errors the
	// rest (FirstError says one).
	Accepted   int    `json:"accepted"`
	Busy       int    `json:"busy"`
	Errors     int    `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	// Persisted are the heartbeats the target recorded (ours: each 202 is
	// written before it is sent, checked on the nodes after the run; Ironic:
	// its conductor's "recorded" log lines in the window).
	Persisted      int     `json:"persisted"`
	HeartbeatsPerS float64 `json:"heartbeats_per_s"`
	P50Ms          float64 `json:"p50_ms"`
	P99Ms          float64 `json:"p99_ms"`
	// DriverCPUUs and ClientCPUUs are the CPU time (user and system) per
	// request of the loop in the window: the driver process's (ours only,
	// from GET /v1/lab/process) and the bench process's (the load client,
	// with the lab idling beside it). Both share the machine's cores, so
	// they set the rate, and they move less than it with the others' load.
	DriverCPUUs float64 `json:"driver_cpu_us_per_heartbeat,omitempty"`
	ClientCPUUs float64 `json:"client_cpu_us_per_heartbeat,omitempty"`
}

// loadClient is an HTTP client for the loops, with enough idle connections
// for every worker.
func loadClient(workers int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil,
		MaxIdleConns: workers * 2, MaxIdleConnsPerHost: workers * 2}}
}

// apiCall sends one JSON request at loadVersion and decodes a 2xx answer
// into out (if not nil).
func apiCall(ctx context.Context, hc *http.Client, method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("X-OpenStack-Ironic-API-Version", loadVersion)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, bytes.TrimSpace(raw))
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, url, err)
		}
	}
	return nil
}

// enrollLoadNodes creates n nodes from node(i) and looks each up by UUID,
// which hands out its agent token (the nodes are in enroll with fast track,
// where lookup and record-only heartbeats are allowed).
func enrollLoadNodes(ctx context.Context, hc *http.Client, base string, n int, node func(i int) map[string]any) ([]hbTarget, error) {
	targets := make([]hbTarget, 0, n)
	for i := range n {
		var created struct {
			UUID string `json:"uuid"`
		}
		if err := apiCall(ctx, hc, http.MethodPost, base+"/v1/nodes", node(i), &created); err != nil {
			return targets, fmt.Errorf("enroll heartbeat-load node %d: %w", i, err)
		}
		var found struct {
			Config struct {
				Token string `json:"agent_token"`
			} `json:"config"`
		}
		if err := apiCall(ctx, hc, http.MethodGet, base+"/v1/lookup?node_uuid="+created.UUID, nil, &found); err != nil {
			return targets, fmt.Errorf("look up heartbeat-load node %s: %w", created.UUID, err)
		}
		if found.Config.Token == "" || found.Config.Token == "******" {
			return targets, fmt.Errorf("look up heartbeat-load node %s: no agent token handed out", created.UUID)
		}
		targets = append(targets, hbTarget{UUID: created.UUID, Token: found.Config.Token,
			Callback: fmt.Sprintf("http://127.0.0.1:9/hbload-%d", i)})
	}
	return targets, nil
}

// deleteLoadNodes removes the load's nodes (best effort: they are in enroll).
func deleteLoadNodes(ctx context.Context, hc *http.Client, base string, targets []hbTarget) error {
	var errs []error
	for _, t := range targets {
		if err := apiCall(ctx, hc, http.MethodDelete, base+"/v1/nodes/"+t.UUID, nil, nil); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// heartbeatLoad plays the closed loop for window and fills in everything
// but Persisted (and so HeartbeatsPerS, which is Persisted per second).
// Each worker has a keep-alive connection of its own and the lean client
// of bench_hbclient.go; a heartbeat counts only on a 202, anything else is
// an error.
func heartbeatLoad(ctx context.Context, base string, targets []hbTarget, clients int, window time.Duration) HeartbeatLoad {
	clients = max(1, min(clients, len(targets)))
	res := HeartbeatLoad{Nodes: len(targets), Clients: clients}
	bodies := make([][]byte, len(targets))
	for i, t := range targets {
		bodies[i], _ = json.Marshal(map[string]string{"callback_url": t.Callback, "agent_token": t.Token, "agent_version": "9.4.0"})
	}
	addr, reqs, err := hbRequests(base, targets, bodies)
	if err != nil {
		res.Errors, res.FirstError = 1, err.Error()
		return res
	}
	var mu sync.Mutex
	var lat []time.Duration
	ctx, cancel := context.WithTimeout(ctx, window+30*time.Second)
	defer cancel()
	connDeadline, _ := ctx.Deadline()
	start := time.Now()
	deadline := start.Add(window)
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &hbConn{addr: addr, deadline: connDeadline}
			defer c.close()
			mine := make([]time.Duration, 0, 4096)
			accepted, busy, errs, first := 0, 0, 0, ""
			for k := w; time.Now().Before(deadline); k += clients {
				i := k % len(targets)
				t0 := time.Now()
				status, err := c.do(ctx, reqs[i])
				mine = append(mine, time.Since(t0))
				switch {
				case err != nil:
					errs++
					if first == "" {
						first = fmt.Sprintf("heartbeat of %s: %v", targets[i].UUID, err)
					}
				case status == http.StatusAccepted:
					accepted++
				case status == http.StatusServiceUnavailable:
					busy++
				default:
					errs++
					if first == "" {
						first = fmt.Sprintf("heartbeat of %s: HTTP %d", targets[i].UUID, status)
					}
				}
				if ctx.Err() != nil {
					break
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			res.Accepted += accepted
			res.Busy += busy
			res.Errors += errs
			if res.FirstError == "" {
				res.FirstError = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Seconds = round3(time.Since(start).Seconds())
	res.Requests = len(lat)
	res.P50Ms, res.P99Ms = percentiles(lat)
	return res
}

// percentiles returns the p50 and p99 of d in milliseconds (d is sorted).
func percentiles(d []time.Duration) (p50, p99 float64) {
	if len(d) == 0 {
		return 0, 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return round3(ms(d[(len(d)-1)*50/100])), round3(ms(d[(len(d)-1)*99/100]))
}

// IPMILoad is the closed IPMI loops against one BMC, with the lean lanplus
// client (simulator/bmc/ipmiload: cipher suite 3, every answer checked),
// Clients sessions in flight for Seconds: first whole sessions (Open
// Session, RAKP 1-4, Close Session), then Get Chassis Status in Clients open
// sessions. The sessions share two client sockets, or, with PortPerSession,
// each has a socket (a client port) of its own, as separate ipmitool runs
// do: pyghmi's BMC needs that, and the client then spends a third more CPU
// per session (socket, bind, connect, close).
type IPMILoad struct {
	Clients        int     `json:"clients"`
	PortPerSession bool    `json:"port_per_session"`
	Seconds        float64 `json:"seconds"`
	Sessions       int     `json:"sessions"`
	SessionsPerS   float64 `json:"sessions_per_s"`
	Requests       int     `json:"requests"`
	RequestsPerS   float64 `json:"requests_per_s"`
	Errors         int     `json:"errors"`
	FirstError     string  `json:"first_error,omitempty"`
}

// ipmiLoad plays both loops against addr, each for window.
func ipmiLoad(ctx context.Context, addr netip.AddrPort, user, pass string, clients int, window time.Duration, portPerSession bool) IPMILoad {
	res := IPMILoad{Clients: clients, PortPerSession: portPerSession, Seconds: window.Seconds()}
	ctx, cancel := context.WithTimeout(ctx, 2*window+30*time.Second)
	defer cancel()
	o := ipmiload.LoadOptions{Options: ipmiload.Options{Username: user, Password: pass, Suite: ipmiload.Suite3},
		InFlight: clients, Sockets: 2, SocketPerSession: portPerSession, Window: window}
	add := func(r ipmiload.Result, err error) {
		res.Errors += r.Errors
		if res.FirstError == "" {
			res.FirstError = r.FirstError
		}
		if err != nil { // the load itself failed: one more error, whatever came before
			res.Errors++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
		}
	}
	if portPerSession {
		// pyghmi's BMC never answers a client port it has seen before:
		// the sessions loop ends early rather than come round to one (the
		// requests loop needs a few more fresh ports).
		o.Ops = ipmiload.FreshPorts * 2 / 3
	}
	r, err := ipmiload.RunSessions(ctx, addr, o)
	add(r, err)
	res.Sessions, res.SessionsPerS = r.Ops, round3(r.PerS)
	o.Ops = 0
	r, err = ipmiload.RunRequests(ctx, addr, o)
	add(r, err)
	res.Requests, res.RequestsPerS = r.Ops, round3(r.PerS)
	return res
}

// ipmiTarget is the lab BMC the IPMI load ran against.
type ipmiTarget struct {
	addr       netip.AddrPort
	user, pass string
}
