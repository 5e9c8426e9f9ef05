package scenarios

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ironlab/ironlab/scenarios/report"
	"github.com/ironlab/ironlab/simulator/lab"
	"github.com/ironlab/ironlab/simulator/lab/enroll"
)

// ReportData builds the report of one scenario from its result and the
// files the run wrote in dir (events.jsonl, console/<node>.log), so a
// report can be rendered again from a results folder.
func ReportData(res *Result, dir string) (*report.Data, error) {
	evs, err := readEvents(filepath.Join(dir, "events.jsonl"))
	if err != nil {
		return nil, err
	}
	return reportData(res, dir, evs), nil
}

// reportData is ReportData with the events already read.
func reportData(res *Result, dir string, evs []report.Event) *report.Data {
	d := &report.Data{
		Title: res.Scenario, Scenario: res.Scenario, File: res.File, Backend: res.Backend,
		Passed: res.Passed, Error: res.Error, DurationS: res.DurationS, Skipped: res.Skipped,
	}
	for _, c := range res.Checks {
		d.Checks = append(d.Checks, report.Check{Name: c.Name, Step: c.Step, Line: c.Line, Passed: c.Passed,
			DurationS: c.DurationS, Failures: c.Failures})
	}
	for _, n := range res.Nodes {
		console, _ := os.ReadFile(filepath.Join(dir, "console", n.Name+".log"))
		d.Nodes = append(d.Nodes, report.Node{Name: n.Name, UUID: n.UUID, Group: n.Group, Driver: n.Driver,
			FinalState: n.FinalState, PowerState: n.PowerState, Maintenance: n.Maintenance, LastError: n.LastError,
			DeployS: n.DeploySeconds, Console: string(console)})
	}
	for i := range d.Checks {
		d.Checks[i].Nodes = report.FailedNodes(d.Checks[i].Failures, d.Nodes)
	}
	d.Events = evs
	d.Figures = report.Figures{ImageBytesServed: res.ImageBytesServed, ConductorImageBytes: res.ConductorImageBytes,
		Deploy: report.DeployStats(d.Nodes)}
	for _, c := range res.Conductors {
		d.Figures.Conductors = append(d.Figures.Conductors, report.Conductor{Name: c.Name, NodesBefore: c.NodesBefore, NodesAfter: c.NodesAfter, Alive: c.Alive})
	}
	if c := res.ConductorCPU; c != nil {
		d.Figures.CPUSecondsPerDeploy, d.Figures.CPUDeploys = c.CPUSecondsPerDeploy, c.Deploys
	}
	return d
}

// parseEventTime reads an event's time: RFC 3339 (the built-in driver's),
// or Ironic's created_at, which has no zone: it is UTC.
func parseEventTime(ts string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		t, err = time.Parse("2006-01-02T15:04:05.999999", strings.TrimSuffix(ts, "Z"))
	}
	return t, err
}

// eventLine is what the report reads of an events.jsonl line: the
// built-in driver's event, or a real Ironic's node history (created_at,
// event_type, event), each with "node".
type eventLine struct {
	Node      string `json:"node"`
	Time      string `json:"time"`
	CreatedAt string `json:"created_at"`
	Kind      string `json:"kind"`
	EventType string `json:"event_type"`
	Event     string `json:"event"`
	From      string `json:"from_state"`
	To        string `json:"to_state"`
	Message   string `json:"message"`
}

// at is the event's time as written (time, else created_at).
func (m *eventLine) at() string {
	if m.Time != "" {
		return m.Time
	}
	return m.CreatedAt
}

// reportEvent is the line as the report shows it; false when its time
// does not parse.
func (m *eventLine) reportEvent() (report.Event, bool) {
	t, err := parseEventTime(m.at())
	if err != nil {
		return report.Event{}, false
	}
	kind := m.Kind
	if kind == "" {
		kind = m.EventType
	}
	return report.Event{Node: m.Node, Time: t, Kind: kind, Event: m.Event, From: m.From, To: m.To, Message: m.Message}, true
}

// readEvents reads events.jsonl: the built-in driver's events, or a real
// Ironic's node history (created_at, event_type, event), each with "node".
func readEvents(path string) ([]report.Event, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []report.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		var m eventLine
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		if ev, ok := m.reportEvent(); ok {
			out = append(out, ev)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// writeReport writes dir/report.html for the scenario, with the events
// writeEvents has just written to events.jsonl (none when the run built
// no lab): not read back from the file.
func writeReport(res *Result, dir string, evs []report.Event) error {
	return report.WriteFile(filepath.Join(dir, "report.html"), reportData(res, dir, evs))
}

// WriteRunReport writes <runDir>/report.html: every scenario of the run in
// one page, node names prefixed with their scenario.
func WriteRunReport(runDir, title string, results []*Result) error {
	var parts []*report.Data
	for _, res := range results {
		d, err := ReportData(res, filepath.Join(runDir, res.Scenario))
		if err != nil {
			return err
		}
		parts = append(parts, d)
	}
	return report.WriteFile(filepath.Join(runDir, "report.html"), report.Merge(title, parts))
}

// DashboardTarget describes a running lab to the live dashboard.
func DashboardTarget(title, driverURL string, l *lab.Lab) *report.Target {
	t := &report.Target{Title: title, DriverURL: driverURL, Console: func(name string) (string, error) {
		n, ok := l.Node(name)
		if !ok {
			return "", fmt.Errorf("no node %s in the lab", name)
		}
		return n.Machine.ConsoleLog()
	}}
	for _, n := range l.Nodes() {
		t.Nodes = append(t.Nodes, report.LabNode{Name: n.Name, UUID: n.UUID, Group: n.Group, Driver: n.Driver,
			Enroll: enroll.Node(n),
			Ports:  n.MACs})
	}
	for _, id := range l.ImageIDs() {
		info, _ := l.Images.Info(id)
		t.Images = append(t.Images, report.LabImage{ID: id, URL: l.ImageURL(id), SHA256: info.SHA256})
	}
	return t
}

// faultLog records the faults the runner injected, one event per node:
// the driver cannot know them, yet the timeline must show them.
type faultLog struct {
	mu  sync.Mutex
	evs []map[string]any
}

func (f *faultLog) mark(ft *Fault, nodes []*lab.Node) {
	if ft.Agent == nil && ft.Machine == nil && ft.BMC == nil && ft.Conductor == nil && len(ft.Nodes) == 0 {
		// An image fault alone hits whoever downloads the image, not the
		// nodes it happens to select.
		return
	}
	what := faultSummary(ft)
	t := time.Now().UTC().Format(time.RFC3339Nano)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range nodes {
		f.evs = append(f.evs, map[string]any{"node": n.Name, "time": t, "kind": "fault", "event": "fault " + what,
			"message": "injected by the scenario: " + what})
	}
}

func (f *faultLog) events() []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]map[string]any(nil), f.evs...)
}
