package scenarios

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/scenarios/labtest"
)

// runBuiltin plays a built-in scenario with the built-in driver, keeping
// the lab's state so the test can look at the disks itself.
func runBuiltin(t *testing.T, name string, edit func(*Scenario)) (*Result, string, string) {
	t.Helper()
	s, err := Load(name)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(s)
	}
	return runScenario(t, s)
}

func runScenario(t *testing.T, s *Scenario) (*Result, string, string) {
	t.Helper()
	return runScenarioIn(t, s, t.TempDir())
}

// runScenarioIn plays s with its lab's state under state.
func runScenarioIn(t *testing.T, s *Scenario, state string) (*Result, string, string) {
	t.Helper()
	name := s.Name
	results := t.TempDir()
	var out strings.Builder
	res, err := Run(context.Background(), s, Options{
		ResultsDir: results, StateDir: state, KeepState: true, ImageCache: filepath.Join(state, "images"),
		StartDriver: builtinDriver, FailOnMissingTools: labtest.CI(), DriverBinary: labtest.Binary(t), Out: &out,
	})
	if err != nil {
		t.Fatalf("run %s: %v\n%s", name, err, out.String())
	}
	if !res.Passed {
		t.Fatalf("scenario %s failed:\n%s%s", name, out.String(), driverTrouble(filepath.Join(state, s.Name)))
	}
	reportSkipped(t, res)
	return res, results, filepath.Join(state, s.Name)
}

// reportSkipped makes groups the runner left out (a tool this machine
// lacks) visible: the test expects less, and says so; under CI=true the
// runner fails instead, and so would this.
func reportSkipped(t *testing.T, res *Result) {
	t.Helper()
	for _, sk := range res.Skipped {
		labtest.Reduced(t, "scenario %s: skipped group %s", res.Scenario, sk)
	}
}

func TestDeployScenarioEndToEnd(t *testing.T) {
	res, results, state := runBuiltin(t, "deploy", nil)
	// 10 fake_agent, 2 agent_ipmitool, 2 agent_pyghmi; the ipmitool group is
	// skipped where ipmitool is not installed (reported by runScenario).
	if want := 14 - 2*len(res.Skipped); len(res.Nodes) != want {
		t.Fatalf("%d nodes in the result, want %d (skipped: %v)", len(res.Nodes), want, res.Skipped)
	}
	// Every node's disk holds the image, checked here independently of the
	// runner's own expectation.
	for _, n := range res.Nodes {
		if n.FinalState != "active" || n.LastError != "" {
			t.Errorf("%s: state %q, last_error %q", n.Name, n.FinalState, n.LastError)
		}
		f, err := os.Open(filepath.Join(state, "disks", n.Name+".raw"))
		if err != nil {
			t.Fatal(err)
		}
		h, err := images.Verify(f)
		f.Close()
		if err != nil || h.ID != "demo-os" {
			t.Errorf("%s: disk: %v (image %q)", n.Name, err, h.ID)
		}
	}
	// The result files a user or CI reads.
	var rj struct {
		Scenario string `json:"scenario"`
		Passed   bool   `json:"passed"`
		Nodes    []struct {
			Name       string `json:"name"`
			UUID       string `json:"uuid"`
			Driver     string `json:"driver"`
			FinalState string `json:"final_state"`
		} `json:"nodes"`
	}
	b, err := os.ReadFile(filepath.Join(results, "deploy", "result.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rj); err != nil || !rj.Passed || len(rj.Nodes) != len(res.Nodes) || rj.Nodes[0].Driver != "fake_agent" {
		t.Errorf("result.json: %v %+v", err, rj)
	}
	ev, err := os.ReadFile(filepath.Join(results, "deploy", "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"to_state":"active"`, `deploy.execute_deploy_step`, `"kind":"heartbeat"`, `"kind":"lookup"`} {
		if c := strings.Count(string(ev), want); c < len(res.Nodes) {
			t.Errorf("events.jsonl has %d lines with %s, want one per node at least", c, want)
		}
	}
	if err := WriteJUnit(filepath.Join(results, "junit.xml"), []*Result{res}); err != nil {
		t.Fatal(err)
	}
	var ju junitSuites
	jb, _ := os.ReadFile(filepath.Join(results, "junit.xml"))
	if err := xml.Unmarshal(jb, &ju); err != nil || ju.Tests != len(res.Checks) || ju.Failures != 0 {
		t.Errorf("junit.xml: %v tests=%d failures=%d, want %d tests", err, ju.Tests, ju.Failures, len(res.Checks))
	}
}

// Every built-in scenario of the fake backend passes: erase, faults, ...
// (deploy, qcow2, mixed and pxe-vs-agent are checked in more depth by their own
// tests; VM scenarios have their own tier).
func TestBuiltinScenariosPass(t *testing.T) {
	for _, file := range Builtin() {
		all, err := LoadAll(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range all {
			// These have tests of their own that look deeper.
			switch {
			case s.Name == "deploy", s.Name == "qcow2", file == "mixed", file == "pxe-vs-agent", file == "conductors", s.Lab.Backend != "fake":
				continue
			}
			t.Run(s.Name, func(t *testing.T) {
				res, _, _ := runScenario(t, s)
				if s.Only == "ironic" {
					// A real Ironic's (the interop tier plays it):
					// reported as not run, no lab built.
					if res.NotRun == "" || len(res.Nodes) != 0 {
						t.Fatalf("%s (only: ironic) against the built-in driver: not_run %q, %d nodes; want it not run", s.Name, res.NotRun, len(res.Nodes))
					}
					return
				}
				if len(res.Checks) == 0 {
					t.Fatalf("%s checked nothing", s.Name)
				}
			})
		}
	}
}

// The scenarios that run the driver as a child process (conductor faults)
// use the real binary, built once (labtest.Binary).
func TestMain(m *testing.M) { labtest.Main(m) }

// A scenario whose expectation cannot hold fails, and says which node and why.
func TestFailedExpectationIsReported(t *testing.T) {
	s, err := Parse("t.yaml", []byte(`name: wrong
lab:
  heartbeat_timeout: 4s
  automated_clean: false
  images: [{id: a, size: 1MiB}, {id: b, size: 1MiB}]
  groups: [{name: g, count: 2, driver: fake_agent, disk_size: 8MiB}]
steps:
  - enroll: {}
  - manage: {}
  - provide: {}
  - deploy: {image: a}
  - wait: {state: active, timeout: 60s}
  - expect: {disk_image: b, state: active}
`))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	res, err := Run(context.Background(), s, Options{StartDriver: builtinDriver, FailOnMissingTools: labtest.CI(), Out: &out, ImageCache: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Passed {
		t.Fatalf("a wrong disk expectation passed:\n%s", out.String())
	}
	var failed *Check
	for i := range res.Checks {
		if !res.Checks[i].Passed {
			failed = &res.Checks[i]
		}
	}
	if failed == nil || !strings.Contains(failed.Name, "disk holds image b") || len(failed.Failures) != 2 ||
		!strings.Contains(failed.Failures[0], "g-0: disk holds image a, not b") {
		t.Errorf("failed check %+v", failed)
	}
	PrintSummary(io.Discard, res)
}

// driverTrouble is the warnings and errors of the driver processes' logs
// in a scenario's state folder (driver.log, driver-<conductor>.log), for
// a failed run's message: the folder goes with the test.
func driverTrouble(dir string) string {
	logs, _ := filepath.Glob(filepath.Join(dir, "driver*.log"))
	var b strings.Builder
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		n := 0
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
				if n++; n > 60 {
					b.WriteString("    ...\n")
					break
				}
				b.WriteString("    " + filepath.Base(l) + ": " + line + "\n")
			}
		}
	}
	if b.Len() == 0 {
		return ""
	}
	return "driver warnings and errors:\n" + b.String()
}
