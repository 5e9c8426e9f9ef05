package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ironlab/ironlab/internal/httpstop"
	"github.com/ironlab/ironlab/scenarios/ironic"
)

// Target is the lab a dashboard shows: its driver API and what only the
// lab knows (nodes not enrolled yet, images, serial consoles).
type Target struct {
	Title     string
	DriverURL string
	Nodes     []LabNode
	Images    []LabImage
	// Console returns a node's serial console log (nil: none).
	Console func(node string) (string, error)
}

// LabNode is a node of the lab, enrolled on the driver or not.
type LabNode struct {
	Name   string `json:"name"`
	UUID   string `json:"uuid"`
	Group  string `json:"group"`
	Driver string `json:"driver"`
	// Enroll is the body of POST /v1/nodes for the page's enroll button,
	// Ports the MACs it then creates ports for.
	Enroll map[string]any `json:"-"`
	Ports  []string       `json:"-"`
}

// LabImage is an image the lab serves, for the dashboard's deploy button.
type LabImage struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
}

// NodeView is a node as the dashboard's page sees it.
type NodeView struct {
	Name        string `json:"name"`
	UUID        string `json:"uuid"`
	Group       string `json:"group,omitempty"`
	Driver      string `json:"driver"`
	Enrolled    bool   `json:"enrolled"`
	State       string `json:"state"`
	Target      string `json:"target,omitempty"`
	Power       string `json:"power,omitempty"`
	Maintenance bool   `json:"maintenance,omitempty"`
	LastError   string `json:"last_error,omitempty"`
	// Enroll and Ports let the page enroll a node the driver lacks.
	Enroll map[string]any `json:"enroll,omitempty"`
	Ports  []string       `json:"ports,omitempty"`
}

// Dashboard serves the live page of a running lab. It polls the driver's
// node list and pushes every change to the pages as server-sent events;
// the page's buttons call the driver's API through the dashboard (one
// origin, so no CORS), like any other client.
type Dashboard struct {
	log      *slog.Logger
	interval time.Duration
	client   *http.Client

	mu     sync.Mutex
	target *Target
	nodes  map[string]NodeView // by name
	subs   map[chan sseMsg]struct{}
	err    string
	wake   chan struct{}
}

type sseMsg struct {
	event string
	data  []byte
}

// NewDashboard makes a dashboard polling its target every interval (0:
// half a second).
func NewDashboard(log *slog.Logger, interval time.Duration) *Dashboard {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	return &Dashboard{log: log, interval: interval, nodes: map[string]NodeView{}, subs: map[chan sseMsg]struct{}{},
		wake:   make(chan struct{}, 1),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}}
}

// SetTarget points the dashboard at a lab (`ironlab run --ui` moves it
// from scenario to scenario); the pages get a fresh snapshot.
func (d *Dashboard) SetTarget(t *Target) {
	d.mu.Lock()
	d.target = t
	d.nodes = map[string]NodeView{}
	for _, n := range t.Nodes {
		d.nodes[n.Name] = notEnrolled(n)
	}
	d.broadcastLocked(sseMsg{"snapshot", d.snapshotLocked()})
	d.mu.Unlock()
	d.poke()
}

func (d *Dashboard) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Listen serves the dashboard on addr (a loopback address; "" takes a free
// port on 127.0.0.1) until ctx ends and returns its URL.
func (d *Dashboard) Listen(ctx context.Context, addr string) (string, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("dashboard address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", fmt.Errorf("dashboard address %q: only loopback addresses (127.0.0.1, ::1)", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("dashboard: %w", err)
	}
	srv := httpstop.New(&http.Server{Handler: d, ReadHeaderTimeout: 10 * time.Second})
	go d.Run(ctx)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		d.closeSubs()
		srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("dashboard stopped", "err", err)
		}
	}()
	return "http://" + ln.Addr().String() + "/", nil
}

// Run polls the target until ctx ends.
func (d *Dashboard) Run(ctx context.Context) {
	t := time.NewTicker(d.interval)
	defer t.Stop()
	// A poll cancelled while it dialed leaves a connection in the pool that
	// never sent a request: hang up on the driver when done.
	defer d.client.CloseIdleConnections()
	for {
		d.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.wake:
		}
	}
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func (d *Dashboard) poll(ctx context.Context) {
	d.mu.Lock()
	t := d.target
	d.mu.Unlock()
	if t == nil {
		return
	}
	nodes, err := ironic.Dial(t.DriverURL, "latest", d.client).Nodes(ctx)
	if err != nil {
		err = fmt.Errorf("list nodes on %s: %w", t.DriverURL, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.target != t {
		return // moved on while we asked
	}
	if e := errString(err); e != d.err {
		d.err = e
		b, _ := json.Marshal(map[string]string{"error": e})
		d.broadcastLocked(sseMsg{"status", b})
	}
	if err != nil {
		return
	}
	labByUUID := map[string]LabNode{}
	for _, n := range t.Nodes {
		labByUUID[n.UUID] = n
	}
	seen := map[string]bool{}
	for _, an := range nodes {
		name := an.Name
		if name == "" {
			name = an.UUID
		}
		if ln, ok := labByUUID[an.UUID]; ok && name == an.UUID {
			name = ln.Name
		}
		v := NodeView{Name: name, UUID: an.UUID, Driver: an.Driver, Enrolled: true, State: an.ProvisionState,
			Target: str(an.TargetProvisionState), Power: str(an.PowerState), Maintenance: an.Maintenance, LastError: str(an.LastError)}
		if old, ok := d.nodes[name]; ok {
			v.Group = old.Group
		}
		seen[name] = true
		d.updateLocked(v)
	}
	// Nodes deleted on the driver are the lab's again, not enrolled.
	for _, n := range t.Nodes {
		if !seen[n.Name] {
			d.updateLocked(notEnrolled(n))
			seen[n.Name] = true
		}
	}
	for name, v := range d.nodes {
		if !seen[name] {
			delete(d.nodes, name)
			v.State, v.Enrolled = "deleted", false
			b, _ := json.Marshal(v)
			d.broadcastLocked(sseMsg{"gone", b})
		}
	}
}

func notEnrolled(n LabNode) NodeView {
	return NodeView{Name: n.Name, UUID: n.UUID, Group: n.Group, Driver: n.Driver, State: "not enrolled",
		Enroll: n.Enroll, Ports: n.Ports}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (d *Dashboard) updateLocked(v NodeView) {
	b, _ := json.Marshal(v)
	if old, ok := d.nodes[v.Name]; ok {
		if ob, _ := json.Marshal(old); string(ob) == string(b) {
			return
		}
	}
	d.nodes[v.Name] = v
	d.broadcastLocked(sseMsg{"node", b})
}

func (d *Dashboard) snapshotLocked() []byte {
	s := struct {
		Title  string     `json:"title"`
		Driver string     `json:"driver_url"`
		Nodes  []NodeView `json:"nodes"`
		Images []LabImage `json:"images"`
		Error  string     `json:"error,omitempty"`
	}{Nodes: []NodeView{}, Images: []LabImage{}, Error: d.err}
	if d.target != nil {
		s.Title, s.Driver = d.target.Title, d.target.DriverURL
		s.Images = append(s.Images, d.target.Images...)
	}
	for _, v := range d.nodes {
		s.Nodes = append(s.Nodes, v)
	}
	slices.SortFunc(s.Nodes, func(a, b NodeView) int { return naturalCmp(a.Name, b.Name) })
	b, _ := json.Marshal(s)
	return b
}

// naturalCmp orders "n-2" before "n-10".
func naturalCmp(a, b string) int {
	for a != "" && b != "" {
		da, db := digits(a), digits(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if len(na) != len(nb) {
				return len(na) - len(nb)
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func digits(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

func (d *Dashboard) broadcastLocked(m sseMsg) {
	for ch := range d.subs {
		select {
		case ch <- m:
		default:
			// A page that does not keep up gets a fresh snapshot instead.
			close(ch)
			delete(d.subs, ch)
		}
	}
}

func (d *Dashboard) closeSubs() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for ch := range d.subs {
		close(ch)
		delete(d.subs, ch)
	}
}

// ServeHTTP serves the page, its event stream, consoles and the driver
// API (proxied).
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == "/" || p == "/index.html":
		d.page(w, r)
	case p == "/events":
		d.events(w, r)
	case strings.HasPrefix(p, "/console/"):
		d.console(w, r, strings.TrimPrefix(p, "/console/"))
	case p == "/v1" || strings.HasPrefix(p, "/v1/"):
		d.proxy(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (d *Dashboard) page(w http.ResponseWriter, r *http.Request) {
	tmpl, err := template.New("dashboard.html").ParseFS(assets, "assets/dashboard.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	css, _ := assets.ReadFile("assets/style.css")
	var js []byte
	for _, f := range []string{"assets/common.js", "assets/dashboard.js"} {
		b, _ := assets.ReadFile(f)
		js = append(append(js, b...), '\n')
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := tmpl.Execute(w, map[string]any{"CSS": template.CSS(css), "JS": template.JS(js)}); err != nil {
		d.log.Warn("dashboard page", "err", err)
	}
}

func (d *Dashboard) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch := make(chan sseMsg, 4096)
	d.mu.Lock()
	snap := d.snapshotLocked()
	d.subs[ch] = struct{}{}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		if _, ok := d.subs[ch]; ok {
			delete(d.subs, ch)
			close(ch)
		}
		d.mu.Unlock()
	}()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	write := func(m sseMsg) error {
		_, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", m.event, m.data)
		fl.Flush()
		return err
	}
	if write(sseMsg{"snapshot", snap}) != nil {
		return
	}
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keep.C:
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
		case m, ok := <-ch:
			if !ok {
				// Dropped for being slow, or shutting down: the page reconnects.
				return
			}
			if write(m) != nil {
				return
			}
		}
	}
}

// consoleTailDash is how much of a console the page shows.
const consoleTailDash = 16 << 10

func (d *Dashboard) console(w http.ResponseWriter, r *http.Request, name string) {
	d.mu.Lock()
	t := d.target
	d.mu.Unlock()
	if t == nil || t.Console == nil {
		http.Error(w, "no console for "+name, http.StatusNotFound)
		return
	}
	if !slices.ContainsFunc(t.Nodes, func(n LabNode) bool { return n.Name == name }) {
		http.Error(w, "no lab node "+name, http.StatusNotFound)
		return
	}
	s, err := t.Console(name)
	if err != nil {
		http.Error(w, fmt.Sprintf("console of %s: %v", name, err), http.StatusNotFound)
		return
	}
	if len(s) > consoleTailDash {
		s = s[len(s)-consoleTailDash:]
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	io.WriteString(w, s)
}

func (d *Dashboard) proxy(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	t := d.target
	d.mu.Unlock()
	if t == nil {
		http.Error(w, "no lab yet", http.StatusServiceUnavailable)
		return
	}
	u, err := url.Parse(t.DriverURL)
	if err != nil {
		http.Error(w, "driver URL: "+err.Error(), http.StatusBadGateway)
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = u.Host
		},
		Transport: d.client.Transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "driver API "+t.DriverURL+": "+err.Error(), http.StatusBadGateway)
		},
	}
	// A change made through the page shows at once, not at the next poll.
	if r.Method != http.MethodGet {
		defer d.poke()
	}
	rp.ServeHTTP(w, r)
}
