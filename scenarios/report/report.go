// Package report renders what a lab run did for a browser: a
// self-contained report.html of a finished run (scenario or bench), and the
// live dashboard `ironlab up` and `ironlab run --ui` serve. Both are built
// from data, never from the runner's internals: a Data value for the
// report, the driver's HTTP API for the dashboard.
package report

import (
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// Data is everything one report shows.
type Data struct {
	// Title heads the page, e.g. "deploy" or "bench 1000 nodes".
	Title     string
	Scenario  string
	File      string
	Backend   string
	Passed    bool
	Error     string
	DurationS float64
	// Start is time zero of the timeline (zero: the first event's time).
	Start   time.Time
	Checks  []Check
	Nodes   []Node
	Events  []Event
	Skipped []string
	Figures Figures
}

// Check is one expectation's outcome. Nodes are the nodes it failed on;
// FailedNodes fills them in from Failures when left empty.
type Check struct {
	Name      string
	Step      int
	Line      int
	Passed    bool
	DurationS float64
	Failures  []string
	Nodes     []string
}

// Node is one node's outcome.
type Node struct {
	Name        string
	UUID        string
	Group       string
	Driver      string
	FinalState  string
	PowerState  string
	Maintenance bool
	LastError   string
	DeployS     float64
	// Console is the node's serial console log (the report keeps its tail).
	Console string
}

// Event is one entry of a node's history: the driver's events plus the
// faults the runner injected (Kind "fault").
type Event struct {
	Node    string
	Time    time.Time
	Kind    string // provision, power, lookup, heartbeat, agent_command, maintenance, error, fault, pxe
	Event   string
	From    string
	To      string
	Message string
}

// Figures are what the run measured.
type Figures struct {
	ImageBytesServed int64
	// ConductorImageBytes are image bytes through the conductor per class.
	ConductorImageBytes map[string]int64
	// CPUSecondsPerDeploy is the driver process's CPU time per deploy (0:
	// not measured); CPUDeploys the deploys it was measured over.
	CPUSecondsPerDeploy float64
	CPUDeploys          int
	// Deploy summarises the nodes' deploy times (request to active).
	Deploy Stats
	// Conductors are a run's named conductors (result.json's conductors).
	Conductors []Conductor
}

// Conductor is one conductor's part in a run: the nodes it serviced
// before the first conductor fault and at the end, and whether it was
// alive at the end.
type Conductor struct {
	Name                    string
	NodesBefore, NodesAfter int
	Alive                   bool
}

// Stats are min/median/max of a set of durations in seconds.
type Stats struct {
	N                int
	Min, Median, Max float64
}

// DeployStats summarises the nodes' deploy times; nodes without one are
// left out.
func DeployStats(nodes []Node) Stats {
	var v []float64
	for _, n := range nodes {
		if n.DeployS > 0 {
			v = append(v, n.DeployS)
		}
	}
	if len(v) == 0 {
		return Stats{}
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return Stats{N: len(v), Min: v[0], Median: med, Max: v[len(v)-1]}
}

// FailedNodes picks the node names out of a check's failure lines, which
// start with "<node>: ".
func FailedNodes(failures []string, nodes []Node) []string {
	known := map[string]bool{}
	for _, n := range nodes {
		known[n.Name] = true
	}
	var out []string
	seen := map[string]bool{}
	for _, f := range failures {
		name, _, ok := strings.Cut(f, ": ")
		if ok && known[name] && !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out
}

// consoleTail is how much of each console log the report keeps, and
// consoleBudget how much of all of them, so a 5000-node report stays small
// enough to open; the full logs sit next to it in console/.
const (
	consoleTail   = 32 << 10
	consoleBudget = 8 << 20
)

// page is what the template sees; the browser builds the timeline, the
// summary chart and the node pages from JSON.
type page struct {
	D        *Data
	Passed   int
	Failed   int
	Groups   []groupRow
	Table    bool // one row per node (small runs) or per group and state
	CSS      template.CSS
	JS       template.JS
	JSON     template.JS
	Conducts []kv
}

type groupRow struct {
	Group, Driver, State string
	Nodes                int
}

type kv struct {
	K string
	V int64
}

// jsonData is the compact form the page's script reads: events as arrays
// indexing nodes and kinds, times in milliseconds from Start.
type jsonData struct {
	Nodes  []jsonNode `json:"nodes"`
	Kinds  []string   `json:"kinds"`
	Events [][]any    `json:"events"` // [node, ms, kind, event, from, to, message]
	EndMS  int64      `json:"end_ms"`
	Checks []jsonChk  `json:"checks"`
}

type jsonNode struct {
	Name        string  `json:"name"`
	UUID        string  `json:"uuid"`
	Group       string  `json:"group"`
	Driver      string  `json:"driver"`
	State       string  `json:"state"`
	Power       string  `json:"power"`
	Maintenance bool    `json:"maintenance,omitempty"`
	LastError   string  `json:"last_error,omitempty"`
	DeployS     float64 `json:"deploy_s,omitempty"`
	Console     string  `json:"console,omitempty"`
}

type jsonChk struct {
	Name  string   `json:"name"`
	Nodes []string `json:"nodes,omitempty"`
}

var funcs = template.FuncMap{
	"sub": func(a, b int) int { return a - b },
	"mib": func(n int64) string {
		if n < 1<<20 {
			return fmt.Sprintf("%d bytes", n)
		}
		return fmt.Sprintf("%.1f MiB (%d bytes)", float64(n)/(1<<20), n)
	},
}

// Write renders the report of d to w.
func Write(w io.Writer, d *Data) error {
	tmpl, err := template.New("report.html").Funcs(funcs).ParseFS(assets, "assets/report.html")
	if err != nil {
		return fmt.Errorf("parse the report template: %w", err)
	}
	css, err := assets.ReadFile("assets/style.css")
	if err != nil {
		return err
	}
	var js []byte
	for _, f := range []string{"assets/common.js", "assets/report.js"} {
		b, err := assets.ReadFile(f)
		if err != nil {
			return err
		}
		js = append(append(js, b...), '\n')
	}
	p := page{D: d, CSS: template.CSS(css), JS: template.JS(js), Table: len(d.Nodes) <= 200}
	for i := range d.Checks {
		c := &d.Checks[i]
		if c.Passed {
			p.Passed++
		} else {
			p.Failed++
		}
		if len(c.Nodes) == 0 {
			c.Nodes = FailedNodes(c.Failures, d.Nodes)
		}
	}
	counts := map[groupRow]int{}
	for _, n := range d.Nodes {
		counts[groupRow{Group: n.Group, Driver: n.Driver, State: n.FinalState}]++
	}
	for k, n := range counts {
		k.Nodes = n
		p.Groups = append(p.Groups, k)
	}
	sort.Slice(p.Groups, func(i, j int) bool {
		a, b := p.Groups[i], p.Groups[j]
		return a.Group+"\x00"+a.Driver+"\x00"+a.State < b.Group+"\x00"+b.Driver+"\x00"+b.State
	})
	for k, v := range d.Figures.ConductorImageBytes {
		p.Conducts = append(p.Conducts, kv{k, v})
	}
	sort.Slice(p.Conducts, func(i, j int) bool { return p.Conducts[i].K < p.Conducts[j].K })

	b, err := json.Marshal(compact(d))
	if err != nil {
		return fmt.Errorf("encode the report data: %w", err)
	}
	// json.Marshal escapes <, > and &, so the data cannot end its <script>.
	p.JSON = template.JS(b)
	if err := tmpl.Execute(w, p); err != nil {
		return fmt.Errorf("render the report: %w", err)
	}
	return nil
}

// WriteFile renders the report of d to path.
func WriteFile(path string, d *Data) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := Write(f, d); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}

func compact(d *Data) jsonData {
	out := jsonData{Kinds: []string{}, Events: [][]any{}}
	idx := map[string]int{}
	tail := consoleTail
	if len(d.Nodes) > 0 {
		tail = min(consoleTail, consoleBudget/len(d.Nodes))
	}
	for i, n := range d.Nodes {
		idx[n.Name] = i
		c := n.Console
		if len(c) > tail {
			c = "[... " + fmt.Sprint(len(c)-tail) + " bytes left out: see console/" + n.Name + ".log]\n" + c[len(c)-tail:]
		}
		out.Nodes = append(out.Nodes, jsonNode{Name: n.Name, UUID: n.UUID, Group: n.Group, Driver: n.Driver,
			State: n.FinalState, Power: n.PowerState, Maintenance: n.Maintenance, LastError: n.LastError,
			DeployS: n.DeployS, Console: c})
	}
	kinds := map[string]int{}
	evs := slices.Clone(d.Events)
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
	start := d.Start
	if start.IsZero() && len(evs) > 0 {
		start = evs[0].Time
	}
	for _, e := range evs {
		ni, ok := idx[e.Node]
		if !ok {
			continue
		}
		k, ok := kinds[e.Kind]
		if !ok {
			k = len(out.Kinds)
			kinds[e.Kind] = k
			out.Kinds = append(out.Kinds, e.Kind)
		}
		ms := max(0, e.Time.Sub(start).Milliseconds())
		out.EndMS = max(out.EndMS, ms)
		out.Events = append(out.Events, []any{ni, ms, k, e.Event, e.From, e.To, e.Message})
	}
	out.EndMS = max(out.EndMS, int64(d.DurationS*1000))
	for _, c := range d.Checks {
		out.Checks = append(out.Checks, jsonChk{Name: c.Name, Nodes: c.Nodes})
	}
	return out
}

// Merge puts several scenarios' reports into one: nodes, groups and checks
// are prefixed with their scenario ("deploy/fa-1"); a single part is
// returned as it is.
func Merge(title string, parts []*Data) *Data {
	if len(parts) == 1 {
		d := *parts[0]
		return &d
	}
	out := &Data{Title: title, Passed: len(parts) > 0, Figures: Figures{ConductorImageBytes: map[string]int64{}}}
	var backends []string
	cpu := 0.0
	for _, p := range parts {
		pre := p.Scenario + "/"
		out.Passed = out.Passed && p.Passed
		out.DurationS += p.DurationS
		if p.Error != "" {
			out.Error = strings.TrimPrefix(out.Error+"; ", "; ") + p.Scenario + ": " + p.Error
		}
		if !slices.Contains(backends, p.Backend) {
			backends = append(backends, p.Backend)
		}
		for _, s := range p.Skipped {
			out.Skipped = append(out.Skipped, pre+s)
		}
		for _, c := range p.Checks {
			c.Name = p.Scenario + ": " + c.Name
			nodes := make([]string, len(c.Nodes))
			for i, n := range c.Nodes {
				nodes[i] = pre + n
			}
			c.Nodes = nodes
			out.Checks = append(out.Checks, c)
		}
		for _, n := range p.Nodes {
			n.Name, n.Group = pre+n.Name, pre+n.Group
			out.Nodes = append(out.Nodes, n)
		}
		for _, e := range p.Events {
			e.Node = pre + e.Node
			out.Events = append(out.Events, e)
		}
		out.Figures.ImageBytesServed += p.Figures.ImageBytesServed
		for k, v := range p.Figures.ConductorImageBytes {
			out.Figures.ConductorImageBytes[k] += v
		}
		cpu += p.Figures.CPUSecondsPerDeploy * float64(p.Figures.CPUDeploys)
		out.Figures.CPUDeploys += p.Figures.CPUDeploys
		for _, c := range p.Figures.Conductors {
			c.Name = pre + c.Name
			out.Figures.Conductors = append(out.Figures.Conductors, c)
		}
	}
	if out.Figures.CPUDeploys > 0 {
		out.Figures.CPUSecondsPerDeploy = cpu / float64(out.Figures.CPUDeploys)
	}
	out.Backend = strings.Join(backends, "+")
	out.Figures.Deploy = DeployStats(out.Nodes)
	return out
}
