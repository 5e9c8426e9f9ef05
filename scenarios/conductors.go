package scenarios

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ironlab/ironlab/simulator/pgserver"
)

// conductorSet is a lab of named conductors (lab.store: postgres): `ironlab
// driver` child processes c1..cN on one PostgreSQL of the lab's own, and in
// front of them one loopback address that the agents and the runner call,
// passing each request to the next conductor in turn, as a load balancer
// in front of Ironic's APIs does. A conductor the run killed or paused is
// out of that rotation until it is back (a load balancer's health check);
// the conductors themselves find out from its missing heartbeats.
type conductorSet struct {
	r     *runner
	cfg   DriverConfig // each conductor's, but for Host
	pg    *pgserver.Server
	front *http.Server
	url   string // the front's

	mu     sync.Mutex
	procs  map[string]*driverProcess
	order  []string        // start order
	down   map[string]bool // killed or paused
	next   int
	before map[string]int // nodes each serviced before the first conductor fault
	lost   []lostLookup
}

// lostLookup is an agent's lookup that a conductor got but may not have
// answered: it died or hung during the request. Such a conductor may have
// handed out the node's agent token in its answer; the next lookup then
// finds it handed out already (Ironic's "******"), and the agent, with no
// token, is refused at every heartbeat.
type lostLookup struct {
	conductor string
	nodeUUID  string
	addresses []string
	err       string
}

// noteLostLookup records a lookup that reached target and got no answer.
func (cs *conductorSet) noteLostLookup(req *http.Request, target string, err error) {
	q := req.URL.Query()
	l := lostLookup{nodeUUID: q.Get("node_uuid"), err: err.Error()}
	for _, a := range strings.Split(q.Get("addresses"), ",") {
		if a = strings.TrimSpace(a); a != "" {
			l.addresses = append(l.addresses, strings.ToLower(a))
		}
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	l.conductor = target
	for name, p := range cs.procs {
		if u, err := url.Parse(p.url); err == nil && u.Host == target {
			l.conductor = name
		}
	}
	cs.lost = append(cs.lost, l)
}

// lostLookupOf is a lost lookup of node uuid or of one of its MACs.
func (cs *conductorSet) lostLookupOf(uuid string, macs []string) (lostLookup, bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, l := range cs.lost {
		if uuid != "" && l.nodeUUID == uuid {
			return l, true
		}
		for _, m := range macs {
			if slices.Contains(l.addresses, strings.ToLower(m)) {
				return l, true
			}
		}
	}
	return lostLookup{}, false
}

// ConductorResult is one conductor's part in a run (result.json's
// conductors): the nodes it serviced before the first conductor fault
// and at the end (each node's conductor field), and whether the
// conductors table had it alive at the end.
type ConductorResult struct {
	Name        string `json:"name"`
	NodesBefore int    `json:"nodes_before"`
	NodesAfter  int    `json:"nodes_after"`
	Alive       bool   `json:"alive"`
}

// startConductors starts the lab's PostgreSQL (in stateDir/postgres), the
// conductors c1..cN and the front; it returns the front's URL.
func (r *runner) startConductors(ctx context.Context, stateDir string, cfg DriverConfig) (string, error) {
	if r.opts.DriverBinary == "" {
		return "", errors.New("lab.store postgres runs each conductor as a child process: give the ironlab binary (ironlab run does)")
	}
	// As root the server runs as the postgres user, which must reach its
	// folder: the state folder is ours (a temporary one is 0700).
	if err := os.Chmod(stateDir, 0o755); err != nil {
		return "", err
	}
	cs := &conductorSet{r: r, cfg: cfg, procs: map[string]*driverProcess{}, down: map[string]bool{}}
	r.conds = cs
	r.stopDriver = cs.stop
	start := time.Now()
	pg, err := pgserver.Start(ctx, filepath.Join(stateDir, "postgres"), 0)
	if err != nil {
		return "", fmt.Errorf("lab.store postgres: %w", err)
	}
	cs.pg = pg
	if cs.cfg.DB, err = pg.CreateDatabase(ctx, "ironlab"); err != nil {
		return "", err
	}
	r.printf("   PostgreSQL on 127.0.0.1:%d (data %s) in %.1fs\n", pg.Port, filepath.Join(pg.Dir, "data"), time.Since(start).Seconds())
	// The front listens first: the conductors tell PXE deploy ramdisks to
	// call it back ([conductor]api_url), not their own address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	cs.url = "http://" + ln.Addr().String()
	cs.cfg.APIURL = cs.url
	cs.front = &http.Server{Handler: http.HandlerFunc(cs.serveFront), ReadHeaderTimeout: 10 * time.Second}
	// The first conductor creates the schema; the others then start at once.
	names := make([]string, r.s.Lab.Conductors)
	for i := range names {
		names[i] = fmt.Sprintf("c%d", i+1)
	}
	if err := cs.join(ctx, names[0]); err != nil {
		ln.Close()
		return "", err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, n := range names[1:] {
		wg.Go(func() { errs[i+1] = cs.join(ctx, n) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		ln.Close()
		return "", err
	}
	go cs.front.Serve(ln)
	r.printf("   %d conductors on PostgreSQL (%s); agents and the runner call %s, which passes each request to the next live one\n",
		len(names), cs.list(), cs.url)
	return cs.url, nil
}

// join starts a conductor named name and waits for its API.
func (cs *conductorSet) join(ctx context.Context, name string) error {
	cs.mu.Lock()
	_, dup := cs.procs[name]
	cs.mu.Unlock()
	if dup {
		return fmt.Errorf("conductor %s runs already", name)
	}
	cfg := cs.cfg
	cfg.Host = name
	p, err := startDriverProcess(ctx, cs.r.opts.DriverBinary, cfg, cs.r.driverDied)
	if err != nil {
		return fmt.Errorf("conductor %s: %w", name, err)
	}
	cs.mu.Lock()
	cs.procs[name] = p
	cs.order = append(cs.order, name)
	cs.mu.Unlock()
	return nil
}

// list names the conductors with their processes.
func (cs *conductorSet) list() string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	s := ""
	for i, n := range cs.order {
		if i > 0 {
			s += ", "
		}
		p := cs.procs[n]
		s += fmt.Sprintf("%s %s pid %d", n, p.url, p.cmd.Process.Pid)
	}
	return s
}

// pick is the next conductor in the rotation that is up (any, if none is).
func (cs *conductorSet) pick() *url.URL {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var name string
	for range cs.order {
		name = cs.order[cs.next%len(cs.order)]
		cs.next++
		if !cs.down[name] {
			break
		}
	}
	u, _ := url.Parse(cs.procs[name].url)
	return u
}

// frontTransport carries the front's requests to the conductors.
var frontTransport = &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}

// serveFront passes a request to the next conductor that is up. When the
// conductor cannot be reached (refused: killed between the pick and the
// dial), or dies during a request that may be repeated (GET, HEAD, PUT,
// DELETE), the next one gets it, as a load balancer's retry to the next
// upstream; a POST or PATCH that may have reached a dying conductor
// answers 502, for the client to decide. A lookup (a GET, so repeated)
// that a conductor got and did not answer in full is noted: that
// conductor may have handed out the agent token (lostLookup).
func (cs *conductorSet) serveFront(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 64<<20))
	if err != nil {
		http.Error(w, "the lab's front: read the request: "+err.Error(), http.StatusBadRequest)
		return
	}
	cs.mu.Lock()
	tries := len(cs.order)
	cs.mu.Unlock()
	var lastErr error
	for range tries {
		target := cs.pick()
		out := req.Clone(req.Context())
		out.RequestURI = ""
		out.URL.Scheme, out.URL.Host, out.Host = target.Scheme, target.Host, target.Host
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		resp, err := frontTransport.RoundTrip(out)
		if err != nil {
			lastErr = fmt.Errorf("conductor at %s: %w", target.Host, err)
			if req.URL.Path == "/v1/lookup" && !errors.Is(err, syscall.ECONNREFUSED) {
				cs.noteLostLookup(req, target.Host, err)
			}
			if errors.Is(err, syscall.ECONNREFUSED) || req.Method == http.MethodGet || req.Method == http.MethodHead ||
				req.Method == http.MethodPut || req.Method == http.MethodDelete {
				continue
			}
			break
		}
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		if _, err := io.Copy(w, resp.Body); err != nil && req.URL.Path == "/v1/lookup" {
			cs.noteLostLookup(req, target.Host, err) // cut short: the agent cannot read the token
		}
		resp.Body.Close()
		return
	}
	http.Error(w, "the lab's front: no conductor answered: "+lastErr.Error(), http.StatusBadGateway)
}

func (cs *conductorSet) proc(name string) (*driverProcess, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	p, ok := cs.procs[name]
	if !ok {
		return nil, fmt.Errorf("no conductor %q runs (the lab has %s)", name, conductorList(cs.namesLocked()))
	}
	return p, nil
}

func (cs *conductorSet) namesLocked() map[string]bool {
	m := map[string]bool{}
	for n := range cs.procs {
		m[n] = true
	}
	return m
}

func (cs *conductorSet) setDown(name string, down bool) {
	cs.mu.Lock()
	cs.down[name] = down
	cs.mu.Unlock()
}

// stop ends every conductor (a paused one is let go on first), the front
// and PostgreSQL.
func (cs *conductorSet) stop() error {
	cs.mu.Lock()
	procs := make([]*driverProcess, 0, len(cs.procs))
	for _, p := range cs.procs {
		procs = append(procs, p)
	}
	cs.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop() })
	}
	wg.Wait()
	var errs []error
	if cs.front != nil {
		errs = append(errs, cs.front.Close())
	}
	errs = append(errs, cs.pg.Stop())
	return errors.Join(errs...)
}

// conductorFault fires a conductor fault: join a new conductor, pause one
// (SIGSTOP, then SIGCONT), or kill one (SIGKILL) and maybe start it again.
// Without a name it is the lab's one driver process.
func (r *runner) conductorFault(ctx context.Context, c *ConductorFault, why string) error {
	var p *driverProcess
	name := c.Name
	switch {
	case c.Join:
		r.printf("   !! conductor %s joins (%s)\n", name, why)
		if err := r.conds.join(ctx, name); err != nil {
			return err
		}
		r.printf("   !! conductor %s runs (%s)\n", name, r.conds.procs[name].url)
		return nil
	case name == "":
		if r.proc == nil {
			return fmt.Errorf("the conductor is not a child process of this run")
		}
		p, name = r.proc, "the conductor"
	default:
		var err error
		if p, err = r.conds.proc(name); err != nil {
			return err
		}
	}
	if c.pause > 0 {
		r.printf("   !! SIGSTOP %s (%s) for %s\n", name, why, c.pause)
		r.setDown(c.Name, true)
		if err := p.signal(syscall.SIGSTOP); err != nil {
			return fmt.Errorf("pause %s: %w", name, err)
		}
		// Let it go on even when the scenario ends meanwhile: cleanup
		// stops it, and a stopped process cannot stop.
		sleep(ctx, c.pause)
		if err := p.signal(syscall.SIGCONT); err != nil {
			return fmt.Errorf("resume %s: %w", name, err)
		}
		r.setDown(c.Name, false)
		r.printf("   !! SIGCONT %s after %s\n", name, c.pause)
		return ctx.Err()
	}
	if c.restart {
		r.printf("   !! SIGKILL %s (%s); restart in %s\n", name, why, c.restartAfter)
	} else {
		r.printf("   !! SIGKILL %s (%s); it stays dead\n", name, why)
	}
	r.setDown(c.Name, true)
	p.kill()
	if !c.restart {
		return nil
	}
	if err := sleep(ctx, c.restartAfter); err != nil {
		return err
	}
	if err := p.start(ctx); err != nil {
		return err
	}
	r.setDown(c.Name, false)
	r.printf("   !! %s restarted\n", name)
	return nil
}

func (r *runner) setDown(name string, down bool) {
	if r.conds != nil && name != "" {
		r.conds.setDown(name, down)
	}
}

// aliveViews asks every running conductor (not the front) whom it has
// alive (GET /v1/conductors).
func (cs *conductorSet) aliveViews(ctx context.Context) []map[string]bool {
	cs.mu.Lock()
	var urls []string
	for _, n := range cs.order {
		if p := cs.procs[n]; p.running() && !cs.down[n] {
			urls = append(urls, p.url)
		}
	}
	cs.mu.Unlock()
	var views []map[string]bool
	for _, u := range urls {
		var list struct {
			Conductors []struct {
				Hostname string `json:"hostname"`
				Alive    bool   `json:"alive"`
			} `json:"conductors"`
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/v1/conductors", nil)
		if err != nil {
			continue
		}
		req.Header.Set("X-OpenStack-Ironic-API-Version", "1.49")
		resp, err := frontTransport.RoundTrip(req)
		if err != nil {
			continue
		}
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil {
			continue
		}
		v := map[string]bool{}
		for _, c := range list.Conductors {
			v[c.Hostname] = c.Alive
		}
		views = append(views, v)
	}
	return views
}

// conductorOf is who services each node now (the nodes' conductor field),
// by node name.
func (r *runner) conductorOf(ctx context.Context) (map[string]string, error) {
	all, err := r.api.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, n := range all {
		if n.Conductor != nil {
			out[n.Name] = *n.Conductor
		}
	}
	return out, nil
}

// snapshotConductors records what each conductor services, once, before
// the first conductor fault.
func (r *runner) snapshotConductors(ctx context.Context) {
	if r.conds == nil || r.conds.before != nil {
		return
	}
	owners, err := r.conductorOf(ctx)
	if err != nil {
		r.printf("   !! could not read the nodes' conductors: %v\n", err)
		return
	}
	before := map[string]int{}
	for _, c := range owners {
		before[c]++
	}
	r.conds.before = before
}

// conductorResults are result.json's conductors: every conductor that
// ran. A conductor the run just let go on (SIGCONT as the scenario ended)
// or killed is still joining or leaving the others' rings: the figures
// are read once the running conductors agree on who is alive and every
// node has a live conductor, or after three conductor timeouts.
func (r *runner) conductorResults(ctx context.Context) []ConductorResult {
	if r.conds == nil || r.api == nil {
		return nil
	}
	var alive map[string]bool
	var after map[string]int
	poll(ctx, 100*time.Millisecond, 3*r.s.Lab.conductorTimeout, func(ctx context.Context) bool {
		alive, after = map[string]bool{}, map[string]int{}
		views := r.conds.aliveViews(ctx)
		if len(views) == 0 {
			return false
		}
		agree := true
		for i, v := range views {
			if i == 0 {
				alive = v
				continue
			}
			agree = agree && maps.Equal(v, alive)
		}
		owners, err := r.conductorOf(ctx)
		if err != nil {
			return false
		}
		for _, c := range owners {
			after[c]++
			agree = agree && alive[c]
		}
		return agree
	})
	r.conds.mu.Lock()
	names := append([]string(nil), r.conds.order...)
	r.conds.mu.Unlock()
	sort.Strings(names)
	out := make([]ConductorResult, 0, len(names))
	for _, n := range names {
		out = append(out, ConductorResult{Name: n, NodesBefore: r.conds.before[n], NodesAfter: after[n], Alive: alive[n]})
	}
	return out
}
