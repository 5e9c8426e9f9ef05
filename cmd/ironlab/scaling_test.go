package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// writeRun writes a bench.json of nodes nodes whose phases took cpu CPU
// seconds each (lab and driver halves) and wall seconds, and returns its
// path.
func writeRun(t *testing.T, dir, name string, nodes int, phases map[string][2]float64, edit func(*benchReport)) string {
	t.Helper()
	r := benchReport{Nodes: nodes, Driver: "agent_pyghmi", Passed: true,
		Settings: &benchSettings{Power: "native", BMC: "ipmi", ImageSize: "1MiB", Checksum: "sha256", HeartbeatTimeout: "20s",
			HeartbeatWindow: "5s", LoadWindow: "0s", LoadNodes: 100, LoadClients: 16, IPMIClients: 8}}
	for _, name := range benchPhases {
		if p, ok := phases[name]; ok {
			r.Phases = append(r.Phases, benchPhase{Name: name, LabCPUS: p[0] / 2, DriverCPUS: p[0] / 2, Seconds: p[1]})
		}
	}
	if edit != nil {
		edit(&r)
	}
	raw, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The judgement over several runs is each size's median CPU per node, not
// one run's: one slow run at either size moves the range, not the verdict;
// a phase whose median grows more than 1.2x is not linear; a phase one
// size never measured is left out; the heartbeat window (a fixed time at
// any N) is no provisioning phase.
func TestScalingJudgesTheMedians(t *testing.T) {
	dir := t.TempDir()
	// CPU seconds, wall seconds of enroll, manage, power_off, heartbeats.
	small := func(name string, enroll, manage, power float64) string {
		return writeRun(t, dir, name, 1000, map[string][2]float64{
			"enroll": {enroll, 1}, "manage": {manage, 2}, "power_off": {power, 1}, "heartbeats": {1, 5}}, nil)
	}
	big := func(name string, enroll, manage float64) string {
		return writeRun(t, dir, name, 10000, map[string][2]float64{
			"enroll": {enroll, 10}, "manage": {manage, 18}, "heartbeats": {10, 5}}, nil)
	}
	paths := []string{
		small("s1.json", 0.5, 1.0, 0.5), big("b1.json", 5.5, 13),
		small("s2.json", 0.4, 1.0, 0.5), big("b2.json", 7.0, 12), // one slow enroll at 10,000
		small("s3.json", 0.6, 1.0, 0.5), big("b3.json", 5.0, 14),
	}
	var runs []*benchReport
	for _, p := range paths {
		r, err := readBenchJSON(p)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, r)
	}
	s, err := judgeScaling(paths, runs)
	if err != nil {
		t.Fatal(err)
	}
	want := &scalingRuns{FromNodes: 1000, Nodes: 10000, Driver: "agent_pyghmi", Tolerance: 0.2,
		From: []string{paths[0], paths[2], paths[4]}, Runs: []string{paths[1], paths[3], paths[5]},
		Phases: []phaseScalingRuns{
			{Phase: "enroll", FromCPUMsPerNode: 0.5, FromCPURange: [2]float64{0.4, 0.6}, CPUMsPerNode: 0.55, CPURange: [2]float64{0.5, 0.7},
				CPURatio: 1.1, WallRatio: 1, Linear: true},
			{Phase: "manage", FromCPUMsPerNode: 1, FromCPURange: [2]float64{1, 1}, CPUMsPerNode: 1.3, CPURange: [2]float64{1.2, 1.4},
				CPURatio: 1.3, WallRatio: 0.9, Linear: false},
		}}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("scaling (-want +got):\n%s", diff)
	}
	md := s.markdown()
	for _, line := range []string{
		"3 runs of 10000 against 3 runs of 1000: not every phase is linear in N",
		"| enroll | 0.50 (0.40-0.60) | 0.55 (0.50-0.70) | 1.10x | 1.00x | yes |",
		"| manage | 1.00 (1.00-1.00) | 1.30 (1.20-1.40) | 1.30x | 0.90x | no |",
	} {
		if !strings.Contains(md, line) {
			t.Errorf("markdown lacks %q:\n%s", line, md)
		}
	}
	// An even count's median is the mean of the middle two.
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median of 1-4 = %v, want 2.5", m)
	}
}

// `ironlab scaling` prints the table and exits 0 when every phase is
// linear, 1 when one is not, and 2 for bad input, naming the file.
func TestScalingCommand(t *testing.T) {
	dir := t.TempDir()
	run := func(name string, nodes int, cpu float64, edit func(*benchReport)) string {
		return writeRun(t, dir, name, nodes, map[string][2]float64{"enroll": {cpu * float64(nodes) / 1000, 1}, "deploy": {float64(nodes) / 100, 9}}, edit)
	}
	s1, s2 := run("s1.json", 1000, 1, nil), run("s2.json", 1000, 1.2, nil)
	b1, b2 := run("b1.json", 10000, 1.1, nil), run("b2.json", 10000, 1.3, nil)
	out, code := ironlab(t, dir, "scaling", s1, b1, s2, b2)
	if code != 0 || !strings.Contains(out, "| enroll | 1.10 (1.00-1.20) | 1.20 (1.10-1.30) | 1.09x |") || !strings.Contains(out, "every phase is linear in N") {
		t.Errorf("linear runs: exit %d, want 0 with the table:\n%s", code, out)
	}
	b3 := run("b3.json", 10000, 2, nil)
	out, code = ironlab(t, dir, "scaling", "--json", s1, b3)
	var s scalingRuns
	if err := json.Unmarshal([]byte(out), &s); code != 1 || err != nil || s.Linear || len(s.Phases) != 2 || s.Phases[0].CPURatio != 2 {
		t.Errorf("a phase at 2x: exit %d (want 1), %v, %+v:\n%s", code, err, s, out)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{\n  \"nodes\": 1000,\n  \"phases\": [}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{s1}, "give the bench.json of runs at two node counts"},
		{[]string{s1, filepath.Join(dir, "none.json")}, "none.json: no such file"},
		{[]string{s1, bad}, "bad.json:3:"},
		{[]string{s1, s2}, "exactly two node counts; these are at 1000"},
		{[]string{s1, b1, run("m.json", 5000, 1, nil)}, "these are at 1000, 5000, 10000"},
		{[]string{s1, run("f.json", 10000, 1, func(r *benchReport) { r.Passed, r.Error = false, "deploy timed out" })}, "f.json is a run that failed (deploy timed out)"},
		{[]string{s1, run("fake.json", 10000, 1, func(r *benchReport) { r.Driver = "fake_agent" })}, "fake.json ran fake_agent nodes, " + s1 + " agent_pyghmi"},
		{[]string{s1, run("hb.json", 10000, 1, func(r *benchReport) { r.Settings.HeartbeatTimeout = "4s" })}, "hb.json ran with other flags than " + s1 + ": --heartbeat-timeout 4s (it had 20s)"},
		{[]string{s1, run("hbonly.json", 10000, 1, func(r *benchReport) { r.Phases = []benchPhase{{Name: "heartbeats", Seconds: 5, LabCPUS: 1}} })}, "no provisioning phase"},
	} {
		out, code := ironlab(t, dir, append([]string{"scaling"}, c.args...)...)
		if code != 2 || !strings.HasPrefix(out, "ironlab scaling: ") || !strings.Contains(out, c.want) {
			t.Errorf("scaling %v: exit %d, want 2 saying %q:\n%s", c.args, code, c.want, out)
		}
	}
}
