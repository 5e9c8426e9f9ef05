package scenarios

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/scenarios/report"
)

// NodeResult is one node's outcome.
type NodeResult struct {
	Name        string `json:"name"`
	UUID        string `json:"uuid"`
	Group       string `json:"group"`
	Driver      string `json:"driver"`
	FinalState  string `json:"final_state"`
	PowerState  string `json:"power_state"`
	Maintenance bool   `json:"maintenance"`
	LastError   string `json:"last_error"`
	// DeploySeconds is the last deploy's time from request to active;
	// FastTrack says it used the running agent (no power cycle).
	DeploySeconds float64 `json:"deploy_s,omitempty"`
	FastTrack     bool    `json:"fast_track,omitempty"`
}

// Check is one expectation's outcome: a JUnit test case.
type Check struct {
	Name      string   `json:"name"`
	Step      int      `json:"step"`
	Line      int      `json:"line"`
	Passed    bool     `json:"passed"`
	Failures  []string `json:"failures,omitempty"`
	DurationS float64  `json:"duration_s"`
}

// FirstFailures is what a summary prints of a failed check: its first n
// failures and how many more there are (at 10,000 nodes the whole list is
// no message).
func (c *Check) FirstFailures(n int) (shown []string, more int) {
	if len(c.Failures) <= n {
		return c.Failures, 0
	}
	return c.Failures[:n], len(c.Failures) - n
}

// Result is a scenario's outcome, written as result.json.
type Result struct {
	Scenario  string  `json:"scenario"`
	File      string  `json:"file"`
	Passed    bool    `json:"passed"`
	DurationS float64 `json:"duration_s"`
	Backend   string  `json:"backend"`
	// Accel is the accelerator of the libvirt backend's VMs and why, e.g.
	// "tcg (KVM probe boot failed: ...)".
	Accel     string       `json:"accel,omitempty"`
	DriverURL string       `json:"driver_url"`
	Error     string       `json:"error,omitempty"`
	Checks    []Check      `json:"checks"`
	Nodes     []NodeResult `json:"nodes"`
	// Skipped lists the groups left out because this machine lacks a tool
	// their driver needs (an error instead with Options.FailOnMissingTools).
	Skipped []string `json:"skipped,omitempty"`
	// NotRun says why the scenario was not played: it is only for another
	// target (its `only:` field), e.g. the spec's watchdog, which a real
	// Ironic does not have. Such a result passes with no checks.
	NotRun string `json:"not_run,omitempty"`
	// FastTrack compares deploys with a running agent against cold ones.
	FastTrack *FastTrackReport `json:"fast_track,omitempty"`
	// ImageBytesServed counts the image server's bytes: what the agents
	// (or the conductor, for PXE) downloaded.
	ImageBytesServed int64 `json:"image_bytes_served"`
	// ConductorImageBytes are the image bytes that passed through the
	// conductor per driver class (PXE: it streams images itself; agent: 0).
	ConductorImageBytes map[string]int64 `json:"conductor_image_bytes,omitempty"`
	// ConductorCPU is the driver process's CPU time per deploy (only when
	// the driver runs as a child process).
	ConductorCPU *ConductorCPU `json:"conductor_cpu,omitempty"`
	// Conductors lists a lab's named conductors (lab.store: postgres).
	Conductors []ConductorResult `json:"conductors,omitempty"`
}

// writeResults writes <results>/<scenario>/{result.json,events.jsonl,console/,report.html}.
func (r *runner) writeResults(ctx context.Context) error {
	if r.opts.ResultsDir == "" {
		return nil
	}
	dir := filepath.Join(r.opts.ResultsDir, r.s.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var evs []report.Event // the report's, as events.jsonl has them
	if r.lab != nil && r.api != nil {
		all, _ := r.api.Nodes(ctx)
		byName := map[string]ironic.Node{}
		for _, n := range all {
			byName[n.Name] = n
		}
		for _, n := range r.lab.Nodes() {
			an := byName[n.Name]
			r.result.Nodes = append(r.result.Nodes, NodeResult{
				Name: n.Name, UUID: n.UUID, Group: n.Group, Driver: n.Driver,
				FinalState: an.ProvisionState, PowerState: an.Power(), Maintenance: an.Maintenance,
				LastError: an.Error(),
			})
		}
		var err error
		if evs, err = r.writeEvents(ctx, filepath.Join(dir, "events.jsonl")); err != nil {
			return err
		}
		r.stage("consoles", func() error { return r.lab.SaveConsoleLogs(filepath.Join(dir, "console")) })
		r.result.Conductors = r.conductorResults(ctx)
		r.result.ImageBytesServed = r.lab.Images.BytesServed()
	}
	b, err := json.MarshalIndent(r.result, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "result.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return r.stage("report.html", func() error { return writeReport(r.result, dir, evs) })
}

// stage runs one stage of the results, saying how long it has taken
// every progressEvery while it goes (timed).
func (r *runner) stage(what string, f func() error) error {
	return r.timed("results: "+what, f)
}

// timed runs f, printing "   <what>  <seconds>" every progressEvery while
// it goes (slowProgress): nothing when it is done sooner.
func (r *runner) timed(what string, f func() error) error {
	start := time.Now()
	stop := r.slowProgress(func() string {
		return fmt.Sprintf("   %s  %.1fs\n", what, time.Since(start).Seconds())
	})
	defer stop()
	return f()
}

// FastTrackReport compares deploys that used a running agent (the spec's
// long-running model) with cold ones.
type FastTrackReport struct {
	WarmNodes    int     `json:"warm_nodes"`
	WarmAvgS     float64 `json:"warm_avg_s"`
	ColdNodes    int     `json:"cold_nodes"`
	ColdAvgS     float64 `json:"cold_avg_s"`
	SavedPerNode float64 `json:"saved_per_node_s"`
}

func fastTrackReport(nodes []NodeResult) *FastTrackReport {
	var rep FastTrackReport
	for _, n := range nodes {
		if n.DeploySeconds == 0 {
			continue
		}
		if n.FastTrack {
			rep.WarmNodes++
			rep.WarmAvgS += n.DeploySeconds
		} else {
			rep.ColdNodes++
			rep.ColdAvgS += n.DeploySeconds
		}
	}
	if rep.WarmNodes == 0 {
		return nil
	}
	rep.WarmAvgS /= float64(rep.WarmNodes)
	if rep.ColdNodes > 0 {
		rep.ColdAvgS /= float64(rep.ColdNodes)
		rep.SavedPerNode = rep.ColdAvgS - rep.WarmAvgS
	}
	return &rep
}

// JUnit XML, the subset CI systems read.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Errors   int         `xml:"errors,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
	Error     *junitFailure `xml:"error,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes one test suite per scenario and one test case per
// expectation; a run that broke off is an error case.
func WriteJUnit(path string, results []*Result) error {
	var out junitSuites
	for _, res := range results {
		s := junitSuite{Name: res.Scenario, Time: fmt.Sprintf("%.3f", res.DurationS)}
		for _, c := range res.Checks {
			jc := junitCase{Name: c.Name, Classname: "ironlab." + res.Scenario, Time: fmt.Sprintf("%.3f", c.DurationS)}
			if !c.Passed {
				jc.Failure = &junitFailure{Message: fmt.Sprintf("%d nodes failed", len(c.Failures)), Text: strings.Join(c.Failures, "\n")}
				s.Failures++
			}
			s.Cases = append(s.Cases, jc)
		}
		if res.Error != "" {
			s.Cases = append(s.Cases, junitCase{Name: "run", Classname: "ironlab." + res.Scenario,
				Error: &junitFailure{Message: "the scenario did not run to its end", Text: res.Error}})
			s.Errors++
		}
		s.Tests = len(s.Cases)
		out.Tests += s.Tests
		out.Failures += s.Failures + s.Errors
		out.Suites = append(out.Suites, s)
	}
	b, err := xml.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append([]byte(xml.Header), append(b, '\n')...), 0o644)
}

// PrintSummary writes the summary table: per node for small labs, per
// group and state for large ones.
func PrintSummary(w io.Writer, res *Result) {
	status := "PASSED"
	if !res.Passed {
		status = "FAILED"
	}
	if res.NotRun != "" {
		fmt.Fprintf(w, "\n%s NOT RUN: %s\n", res.Scenario, res.NotRun)
		return
	}
	passed := 0
	for _, c := range res.Checks {
		if c.Passed {
			passed++
		}
	}
	fmt.Fprintf(w, "\n%s %s: %d/%d checks passed in %.1fs, %d MiB of images served\n",
		res.Scenario, status, passed, len(res.Checks), res.DurationS, res.ImageBytesServed>>20)
	printConductorBytes(w, res)
	printConductorCPU(w, res)
	if res.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", res.Error)
	}
	if ft := res.FastTrack; ft != nil {
		fmt.Fprintf(w, "  deploy to active: %d nodes with a running agent (fast track) %.1fs on average", ft.WarmNodes, ft.WarmAvgS)
		if ft.ColdNodes > 0 {
			fmt.Fprintf(w, ", %d cold %.1fs: %.1fs saved per node", ft.ColdNodes, ft.ColdAvgS, ft.SavedPerNode)
		}
		fmt.Fprintln(w)
	}
	for _, sk := range res.Skipped {
		fmt.Fprintf(w, "  skipped group %s\n", sk)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(res.Nodes) <= 24 {
		fmt.Fprintln(tw, "  NODE\tDRIVER\tSTATE\tPOWER\tLAST ERROR")
		for _, n := range res.Nodes {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", n.Name, n.Driver, n.FinalState, n.PowerState, clip(n.LastError, 60))
		}
	} else {
		type key struct{ group, driver, state string }
		counts := map[key]int{}
		for _, n := range res.Nodes {
			counts[key{n.Group, n.Driver, n.FinalState}]++
		}
		var keys []key
		for k := range counts {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j])
		})
		fmt.Fprintln(tw, "  GROUP\tDRIVER\tSTATE\tNODES")
		for _, k := range keys {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\n", k.group, k.driver, k.state, counts[k])
		}
	}
	tw.Flush()
}

func clip(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}
