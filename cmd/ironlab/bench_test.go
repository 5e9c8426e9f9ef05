package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/scenarios"
	"github.com/ironlab/ironlab/scenarios/labtest"
)

// `ironlab bench` on the real path (native IPMI, one BMC per node, the
// driver as a child process) writes bench.json with every figure a reader
// compares, each of them measured, and bench.md with the same phases.
func TestBenchWritesMeasuredFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("a 20-node lab (~20 s)")
	}
	const n = 20
	out, res, raw := runBench(t, "--nodes", "20", "--power", "native",
		"--heartbeat-window", "4s", "--timeout", "2m")
	var b struct {
		Nodes  int    `json:"nodes"`
		Passed bool   `json:"passed"`
		Image  string `json:"image"`
		Phases []struct {
			Name       string  `json:"name"`
			Seconds    float64 `json:"seconds"`
			NodesPerS  float64 `json:"nodes_per_s"`
			LabCPUS    float64 `json:"lab_cpu_s"`
			DriverCPUS float64 `json:"driver_cpu_s"`
			Lookups    uint64  `json:"lookups"`
			Heartbeats uint64  `json:"heartbeats"`
			Sessions   uint64  `json:"ipmi_sessions"`
		} `json:"phases"`
		DeployWallS      *float64 `json:"deploy_wall_s"`
		DeployRequestsS  *float64 `json:"deploy_requests_s"`
		HeartbeatsPerS   *float64 `json:"heartbeats_per_s"`
		APIP50           *float64 `json:"api_p50_ms"`
		APIP99           *float64 `json:"api_p99_ms"`
		IPMIRequestsPerS *float64 `json:"ipmi_requests_per_s"`
		IPMISessionsPerS *float64 `json:"ipmi_sessions_per_s"`
		RSSPerNode       *float64 `json:"rss_per_node_kib"`
		RSSPerIdleNode   *float64 `json:"rss_per_idle_node_kib"`
		PeakRSS          *float64 `json:"peak_rss_mib"`
		CPUPerDeploy     *float64 `json:"conductor_cpu_s_per_deploy"`
		EnrollToActive   *float64 `json:"enroll_to_active_s"`
		HeartbeatLoad    *struct {
			Nodes, Accepted, Persisted, Errors int
			PerS                               float64 `json:"heartbeats_per_s"`
			P50                                float64 `json:"p50_ms"`
			P99                                float64 `json:"p99_ms"`
			DriverCPU                          float64 `json:"driver_cpu_us_per_heartbeat"`
			ClientCPU                          float64 `json:"client_cpu_us_per_heartbeat"`
		} `json:"heartbeat_load"`
		IPMILoad *struct {
			Sessions, Requests, Errors int
		} `json:"ipmi_load"`
		Goals []struct{ Goal, Measured, Status string } `json:"goals"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatalf("bench.json: %v\n%s", err, raw)
	}
	for name, v := range map[string]*float64{"deploy_wall_s": b.DeployWallS, "deploy_requests_s": b.DeployRequestsS, "heartbeats_per_s": b.HeartbeatsPerS,
		"api_p50_ms": b.APIP50, "api_p99_ms": b.APIP99, "ipmi_requests_per_s": b.IPMIRequestsPerS,
		"ipmi_sessions_per_s": b.IPMISessionsPerS, "rss_per_node_kib": b.RSSPerNode, "rss_per_idle_node_kib": b.RSSPerIdleNode, "peak_rss_mib": b.PeakRSS,
		"conductor_cpu_s_per_deploy": b.CPUPerDeploy, "enroll_to_active_s": b.EnrollToActive} {
		if v == nil {
			t.Errorf("bench.json has no %s:\n%s", name, raw)
		} else if *v <= 0 && !strings.HasPrefix(name, "rss_per_") {
			t.Errorf("bench.json %s = %v, want > 0", name, *v)
		}
	}
	if b.Image != "1MiB, sha256" {
		t.Errorf("bench.json image %q, want the default 1MiB, sha256", b.Image)
	}
	if t.Failed() {
		return
	}
	// The closed loops ran, and every heartbeat the driver accepted was
	// found recorded.
	if l := b.HeartbeatLoad; l == nil || l.Nodes != 100 || l.Accepted == 0 || l.Persisted != l.Accepted || l.Errors != 0 || l.PerS <= 0 || l.P50 > l.P99 ||
		l.DriverCPU <= 0 || l.ClientCPU <= 0 {
		t.Errorf("heartbeat_load = %+v, want 100 nodes, every accepted heartbeat persisted, no errors, the CPU per heartbeat of both processes", l)
	}
	if l := b.IPMILoad; l == nil || l.Sessions == 0 || l.Requests == 0 || l.Errors != 0 {
		t.Errorf("ipmi_load = %+v, want sessions and requests, no errors", l)
	}
	if len(b.Goals) != 6 {
		t.Errorf("goals = %+v, want 6", b.Goals)
	}
	for _, g := range b.Goals {
		if g.Status != "met" && g.Status != "not met" && !strings.HasPrefix(g.Status, "not judged: ") {
			t.Errorf("goal %q has status %q", g.Goal, g.Status)
		}
	}
	if b.Nodes != n || !b.Passed {
		t.Errorf("nodes = %d, passed = %v; want %d, true", b.Nodes, b.Passed, n)
	}
	want := []string{"enroll", "manage", "provide", "heartbeats", "heartbeat_load", "ipmi_load", "power_off", "deploy", "deploy_verify", "undeploy", "undeploy_verify"}
	if len(b.Phases) != len(want) {
		t.Fatalf("phases = %+v, want %v", b.Phases, want)
	}
	for i, p := range b.Phases {
		if p.Name != want[i] || p.Seconds <= 0 || p.NodesPerS <= 0 {
			t.Errorf("phase %d = %+v, want %s with seconds and nodes/s > 0", i, p, want[i])
		}
		if p.LabCPUS < 0 || p.DriverCPUS < 0 {
			t.Errorf("phase %s: lab_cpu_s %v, driver_cpu_s %v, want >= 0", p.Name, p.LabCPUS, p.DriverCPUS)
		}
		// Both processes work in the deploy: power on over IPMI, the
		// agents' image writes, the driver's steps.
		if p.Name == "deploy" && (p.LabCPUS <= 0 || p.DriverCPUS <= 0) {
			t.Errorf("deploy phase: lab_cpu_s %v, driver_cpu_s %v, want both > 0", p.LabCPUS, p.DriverCPUS)
		}
		// Provide boots every node's agent (a lookup each) and cleans on
		// its heartbeats; the deploy (fast track) goes on heartbeats too.
		if p.Name == "provide" && (p.Lookups < uint64(n) || p.Heartbeats < uint64(n)) {
			t.Errorf("provide phase: %d lookups, %d heartbeats; want at least one of each per node (%d)", p.Lookups, p.Heartbeats, n)
		}
		// power_off begins once the sessions the driver kept from
		// provide are closed: every node's power off opens its own, at
		// any N, and the wait is no part of the phase.
		if p.Name == "power_off" && (p.Sessions < uint64(n) || p.Seconds > 10) {
			t.Errorf("power_off phase: %d IPMI sessions opened in %.1f s; want one per node (%d), the wait for kept sessions outside it", p.Sessions, p.Seconds, n)
		}
		if p.Name == "deploy" && p.Heartbeats < uint64(n) {
			t.Errorf("deploy phase: %d heartbeats; want at least one per node (%d)", p.Heartbeats, n)
		}
	}
	if *b.APIP50 > *b.APIP99 {
		t.Errorf("api_p50_ms %v > api_p99_ms %v", *b.APIP50, *b.APIP99)
	}
	// The deploy is part of the measured path, not all of it.
	var deployPhase float64
	for _, p := range b.Phases {
		if p.Name == "deploy" {
			deployPhase = p.Seconds
		}
	}
	if *b.DeployWallS > deployPhase || *b.DeployRequestsS > *b.DeployWallS {
		t.Errorf("deploy_requests_s %v, deploy_wall_s %v, deploy phase %v: want each within the next", *b.DeployRequestsS, *b.DeployWallS, deployPhase)
	}
	md, err := os.ReadFile(filepath.Join(res, "bench.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append(want, "| deploy wall", "p99", "IPMI requests / s", "| heartbeats persisted / s", "| CPU per heartbeat, driver process", "| goal", "| lab CPU s | driver CPU s |") {
		if !strings.Contains(string(md), s) {
			t.Errorf("bench.md lacks %q:\n%s", s, md)
		}
	}
	report := filepath.Join(res, "bench", "report.html")
	if strings.Contains(out, "sessions still open after") {
		t.Errorf("the driver's kept sessions did not close before power off:\n%s", out)
	}
	if !strings.Contains(out, "bench: power off: 20/20 nodes off") {
		t.Errorf("the power off's wait shows no progress to 20/20 nodes off:\n%s", out)
	}
	if _, err := os.Stat(report); err != nil || !strings.Contains(out, "open "+report) {
		t.Errorf("no report.html, or the output does not say where it is (%v):\n%s", err, out)
	}
}

// `ironlab bench --power fake` measures fake_agent nodes (no BMC, no IPMI):
// every node deploys its image byte for byte and comes back available, no
// IPMI is counted or loaded, and bench.json says the nodes were not cleaned
// and why.
func TestBenchFakePower(t *testing.T) {
	if testing.Short() {
		t.Skip("a 10-node lab (~15 s)")
	}
	profiles := t.TempDir()
	out, res, raw := runBench(t, "--nodes", "10", "--power", "fake", "--load-window", "0",
		"--heartbeat-window", "2s", "--timeout", "2m", "--checksum", "sha512", "--cpuprofile", profiles)
	var b struct {
		Nodes    int    `json:"nodes"`
		Driver   string `json:"driver"`
		Image    string `json:"image"`
		Passed   bool   `json:"passed"`
		Cleaning string `json:"cleaning"`
		Phases   []struct {
			Name         string  `json:"name"`
			Seconds      float64 `json:"seconds"`
			IPMIRequests uint64  `json:"ipmi_requests"`
			Heartbeats   uint64  `json:"heartbeats"`
		} `json:"phases"`
		IPMIRequests uint64                          `json:"ipmi_requests"`
		DeployWallS  float64                         `json:"deploy_wall_s"`
		Goals        []struct{ Goal, Status string } `json:"goals"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatalf("bench.json: %v\n%s", err, raw)
	}
	if b.Nodes != 10 || b.Driver != "fake_agent" || !b.Passed {
		t.Errorf("bench.json: %d %s nodes, passed %v: want 10 fake_agent nodes, passed", b.Nodes, b.Driver, b.Passed)
	}
	if b.Image != "1MiB, sha512" {
		t.Errorf("bench.json image %q, want 1MiB, sha512 (--checksum sha512)", b.Image)
	}
	if !strings.HasPrefix(b.Cleaning, "none (FakePower") {
		t.Errorf("cleaning %q: want none, with FakePower's reason", b.Cleaning)
	}
	var names []string
	for _, p := range b.Phases {
		names = append(names, p.Name)
		if p.IPMIRequests != 0 {
			t.Errorf("phase %s counts %d IPMI requests: fake_agent nodes have no BMC", p.Name, p.IPMIRequests)
		}
		if p.Name == "deploy" && p.Heartbeats == 0 {
			t.Error("the deploy phase counts no heartbeats: the agents deployed without one?")
		}
	}
	if want := "enroll manage provide heartbeats power_off deploy deploy_verify undeploy undeploy_verify"; strings.Join(names, " ") != want {
		t.Errorf("phases %v, want %s", names, want)
	}
	if b.IPMIRequests != 0 || b.DeployWallS <= 0 {
		t.Errorf("ipmi_requests %d (want 0), deploy_wall_s %v (want > 0)", b.IPMIRequests, b.DeployWallS)
	}
	for _, g := range b.Goals {
		if strings.Contains(g.Goal, "IPMI") && g.Status != "not judged: the goal is for IPMI nodes" && g.Status != "not judged: fake_agent nodes have no BMC" {
			t.Errorf("goal %q: %q, want not judged for fake_agent", g.Goal, g.Status)
		}
	}
	// --cpuprofile: each phase is a piece of both processes' profiles,
	// lasting the phase (and the switch, up to ~0.1 s in each process).
	if strings.Contains(out, "CPU profile") && strings.Contains(out, "warning") {
		t.Errorf("bench warned of its CPU profiles:\n%s", out)
	}
	var driverSamples int
	for _, p := range b.Phases {
		for _, proc := range []string{"lab", "driver"} {
			path := filepath.Join(profiles, proc+"."+p.Name+".cpu")
			prof, _ := readProfile(t, path)
			if d := time.Duration(prof.DurationNanos).Seconds(); d < p.Seconds-0.05 || d > p.Seconds+1 {
				t.Errorf("%s lasts %.2f s; phase %s lasted %.2f s", filepath.Base(path), d, p.Name, p.Seconds)
			}
			if proc == "driver" {
				driverSamples += len(prof.Sample)
			}
		}
	}
	if driverSamples == 0 {
		t.Error("the driver's phase profiles hold no samples")
	}
	last := b.Phases[len(b.Phases)-1].Name
	for _, f := range []string{"lab.cpu", "driver.cpu", "lab.after-" + last + ".cpu", "driver.after-" + last + ".cpu", "driver.cpu.block", "lab.cpu.mutex"} {
		if _, err := os.Stat(filepath.Join(profiles, f)); err != nil {
			t.Errorf("--cpuprofile: %v", err)
		}
	}

	md, err := os.ReadFile(filepath.Join(res, "bench.md"))
	if err != nil || !strings.Contains(string(md), "Cleaning: none (FakePower") {
		t.Errorf("bench.md does not say the nodes were not cleaned (%v):\n%s", err, md)
	}

	// The same bench at 12 nodes, scaled from the 10-node run: each
	// provisioning phase's CPU per node at both sizes, from the phases of
	// both bench.json files, and the linearity goal judged from them.
	from := filepath.Join(res, "bench.json")
	_, res12, raw12 := runBench(t, "--nodes", "12", "--power", "fake", "--load-window", "0",
		"--heartbeat-window", "2s", "--timeout", "2m", "--checksum", "sha512", "--scale-from", from)
	var big benchReport
	var small benchReport
	if err := json.Unmarshal(raw12, &big); err != nil {
		t.Fatalf("bench.json: %v\n%s", err, raw12)
	}
	if err := json.Unmarshal(raw, &small); err != nil {
		t.Fatal(err)
	}
	cpuPerNode := func(r benchReport, phase string) float64 {
		for _, p := range r.Phases {
			if p.Name == phase {
				return (p.LabCPUS + p.DriverCPUS) * 1000 / float64(r.Nodes)
			}
		}
		return -1
	}
	// A phase that took less than a clock tick of CPU (10 ms) in either
	// run (fake_agent's provide cleans nothing; at 12 nodes undeploy can
	// fit in one tick) has no per-node figure to compare, and is left out.
	var phases []string
	for _, name := range scaledPhases {
		if cpuPerNode(small, name) > 0 && cpuPerNode(big, name) > 0 {
			phases = append(phases, name)
		}
	}
	sc := big.Scaling
	var got []string
	if sc != nil {
		for _, p := range sc.Phases {
			got = append(got, p.Phase)
		}
	}
	if sc == nil || sc.From != from || sc.FromNodes != 10 || len(phases) == 0 || !slices.Equal(got, phases) {
		t.Fatalf("scaling = %+v, want the phases %v (those with CPU in both runs) from %s (10 nodes)", sc, phases, from)
	}
	linear := true
	for i, p := range sc.Phases {
		want, wantFrom := cpuPerNode(big, p.Phase), cpuPerNode(small, p.Phase)
		if p.Phase != phases[i] || math.Abs(p.CPUMsPerNode-want) > 0.01 || math.Abs(p.FromCPUMsPerNode-wantFrom) > 0.01 ||
			math.Abs(p.CPURatio-p.CPUMsPerNode/p.FromCPUMsPerNode) > 0.01 || p.Linear != (p.CPURatio <= 1.2) {
			t.Errorf("scaling of %s = %+v; the phases say %.3f ms per node at 12 nodes, %.3f at 10", p.Phase, p, want, wantFrom)
		}
		linear = linear && p.Linear
	}
	if sc.Linear != linear || big.Goals[1].Status != judge(linear) || !strings.HasPrefix(big.Goals[1].Measured, "against 10 nodes: "+phases[0]+" ") {
		t.Errorf("scaling linear %v, goal %+v; the phases say %v", sc.Linear, big.Goals[1], linear)
	}
	md12, err := os.ReadFile(filepath.Join(res12, "bench.md"))
	if err != nil || !strings.Contains(string(md12), "Scaling from 10 nodes") || !strings.Contains(string(md12), "| CPU ms per node at 10 | at 12 |") {
		t.Errorf("bench.md has no scaling table (%v):\n%s", err, md12)
	}
}

// The linearity of each phase is its CPU per node against the smaller
// run's: a phase within 1.2x is linear, one above is not, and a phase the
// smaller run lacks is left out.
func TestBenchScalingJudgesEachPhase(t *testing.T) {
	phase := func(name string, s, lab, drv float64) benchPhase {
		return benchPhase{Name: name, Seconds: s, LabCPUS: lab, DriverCPUS: drv}
	}
	base := &benchReport{Nodes: 1000, Passed: true, Phases: []benchPhase{
		phase("enroll", 1, 0.4, 0.6), phase("manage", 1.5, 0.5, 1.5), phase("deploy", 10, 6, 8), phase("heartbeats", 5, 1, 2)}}
	r := &benchReport{Nodes: 10000, Passed: true, Phases: []benchPhase{
		phase("enroll", 10, 4, 7), phase("manage", 15, 8, 22), phase("provide", 70, 40, 80), phase("deploy", 90, 60, 80), phase("heartbeats", 5, 3, 5)}}
	s := r.scaling(base, "small/bench.json")
	want := []phaseScaling{
		{Phase: "enroll", FromCPUMsPerNode: 1, CPUMsPerNode: 1.1, CPURatio: 1.1, WallRatio: 1, Linear: true},
		{Phase: "manage", FromCPUMsPerNode: 2, CPUMsPerNode: 3, CPURatio: 1.5, WallRatio: 1, Linear: false},
		{Phase: "deploy", FromCPUMsPerNode: 14, CPUMsPerNode: 14, CPURatio: 1, WallRatio: 0.9, Linear: true},
	}
	if diff := cmp.Diff(want, s.Phases); diff != "" || s.Linear || s.FromNodes != 1000 {
		t.Errorf("scaling (-want +got):\n%s\nlinear %v, from %d nodes", diff, s.Linear, s.FromNodes)
	}
	r.Scaling = s
	if g := r.linearGoal(); g.Status != "not met" || g.Measured != "against 1000 nodes: enroll 1.10x, manage 1.50x, deploy 1.00x" {
		t.Errorf("goal %+v", g)
	}
	r.Phases[1] = phase("manage", 15, 6, 16) // 2.2 ms per node: 1.1x
	if r.Scaling = r.scaling(base, "small/bench.json"); !r.Scaling.Linear || r.linearGoal().Status != "met" {
		t.Errorf("every phase within 1.2x: %+v, goal %+v", r.Scaling, r.linearGoal())
	}
	r.Scaling = nil
	if g := r.linearGoal(); !strings.HasPrefix(g.Status, "not judged: needs --scale-from") {
		t.Errorf("without --scale-from: %+v", g)
	}
}

// runBench runs `ironlab bench args...` with its own results folder, fails
// the test unless it exits 0 with one bench.json, and returns its output,
// the run's results folder and bench.json.
// With no loops and a short window, provide's IPMI sessions are still
// kept by the driver when power_off comes: the bench waits for them to
// close, outside the phase, so that every node's power off opens its own
// session, as at 10,000 nodes, where the kept ones lapse in the phase.
func TestBenchPowerOffStartsCold(t *testing.T) {
	if testing.Short() {
		t.Skip("a 10-node lab (~35 s)")
	}
	const n = 10
	out, _, raw := runBench(t, "--nodes", "10", "--power", "native", "--load-window", "0",
		"--heartbeat-window", "1s", "--timeout", "2m")
	var b benchReport
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatalf("bench.json: %v\n%s", err, raw)
	}
	// The wait says the count only while it is above zero.
	if !strings.Contains(out, "bench: before power off: ") || !strings.Contains(out, "bench: all BMC sessions closed") {
		t.Errorf("no wait for the sessions kept from provide before power off:\n%s", out)
	}
	i := slices.IndexFunc(b.Phases, func(p benchPhase) bool { return p.Name == "power_off" })
	if i < 0 {
		t.Fatalf("no power_off phase in %+v", b.Phases)
	}
	// The driver keeps a session at least 6 s after its last call: a phase
	// that held the wait would last longer than that.
	if p := b.Phases[i]; p.IPMISessions < n || p.Seconds >= 6 {
		t.Errorf("power_off: %d sessions opened in %.1f s; want one per node (%d), the wait outside the phase", p.IPMISessions, p.Seconds, n)
	}
}

func runBench(t *testing.T, args ...string) (out, res string, raw []byte) {
	t.Helper()
	dir := t.TempDir()
	out, code := ironlab(t, dir, append(append([]string{"bench"}, args...), "--results", filepath.Join(dir, "res"))...)
	if code != 0 {
		t.Fatalf("ironlab bench %s exited %d:\n%s", strings.Join(args, " "), code, out)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "res", "*", "bench.json"))
	if len(files) != 1 {
		t.Fatalf("bench.json files: %v, want one\n%s", files, out)
	}
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	return out, filepath.Dir(files[0]), raw
}

// Bad flags are refused before anything starts.
func TestBenchRefusesBadFlags(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--power", "smoke"}, {"--bmc", "redfish", "--power", "fake"}, {"--bmc", "redfish", "--power", "ipmitool"}, {"--bmc", "serial"},
		{"--nodes", "0"}, {"--heartbeat-window", "0s"}, {"--checksum", "sha1"}, {"--checksum", "md5"},
	} {
		out, code := ironlab(t, dir, append([]string{"bench"}, args...)...)
		if code != 2 || !strings.Contains(out, "ironlab bench:") {
			t.Errorf("bench %v: exit %d, want 2 with an ironlab bench: error:\n%s", args, code, out)
		}
	}
	// --scale-from is checked before anything starts too: a run it cannot
	// scale from is refused, saying why.
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	settings := `"settings": {"power": "native", "bmc": "ipmi", "image_size": "1MiB", "checksum": "sha256", "heartbeat_timeout": "4s",
		"heartbeat_window": "10s", "load_window": "5s", "load_nodes": 100, "load_clients": 16, "ipmi_clients": 8, "compare": false}`
	good := `{"nodes": 1000, "driver": "agent_pyghmi", "passed": true, "phases": [{"name": "enroll", "seconds": 1}], ` + settings + `}`
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--scale-from", filepath.Join(dir, "none.json")}, "none.json: no such file"},
		{[]string{"--scale-from", write("bad.json", "{\n  \"nodes\": 1000,\n  \"phases\": [}\n")}, "bad.json:3:"},
		{[]string{"--scale-from", write("other.json", `{"nodes": 3}`)}, "not an ironlab bench.json"},
		{[]string{"--scale-from", write("big.json", good), "--nodes", "1000"}, "a run of 1000 nodes; scale from a run of fewer than --nodes 1000"},
		{[]string{"--scale-from", write("failed.json", strings.Replace(good, `"passed": true`, `"passed": false, "error": "deploy timed out"`, 1)), "--nodes", "2000"}, "a run that failed (deploy timed out)"},
		{[]string{"--scale-from", write("fake.json", strings.Replace(good, "agent_pyghmi", "fake_agent", 1)), "--nodes", "2000"}, "ran fake_agent nodes, this run agent_pyghmi"},
		{[]string{"--scale-from", write("old.json", strings.Replace(good, ", "+settings, "", 1)), "--nodes", "2000"}, "does not record its flags"},
		{[]string{"--scale-from", write("good.json", good), "--nodes", "2000", "--heartbeat-timeout", "20s", "--load-window", "0"}, "--heartbeat-timeout 20s (it had 4s), --load-window 0s (it had 5s)"},
	} {
		out, code := ironlab(t, dir, append([]string{"bench"}, c.args...)...)
		if code != 2 || !strings.Contains(out, "ironlab bench: --scale-from: ") || !strings.Contains(out, c.want) {
			t.Errorf("bench %v: exit %d, want 2 saying %q:\n%s", c.args, code, c.want, out)
		}
	}
}

// `ironlab bench --compare` plays the same closed loops against a real
// Ironic 21.4 (scripts/ironic.sh) and pyghmi's BMC in the same run and
// writes, for each, the version, how it was measured, the figures and the
// ratio, in bench.json and bench.md.
func TestBenchCompareMeasuresThePeers(t *testing.T) {
	if testing.Short() {
		t.Skip("a lab, a real Ironic and a pyghmi BMC (~1 min)")
	}
	labtest.Require(t, "ironic-api")
	labtest.Require(t, "ironic-conductor")
	labtest.Require(t, "ironic-dbsync")
	py := labtest.Require(t, "/usr/bin/python3")
	labtest.RequireFunc(t, "python3-pyghmi", "apt-get install python3-pyghmi", func() error {
		return exec.Command(py, "-c", "import pyghmi.ipmi.bmc").Run()
	})
	script, err := filepath.Abs("../../scripts/ironic.sh")
	if err != nil {
		t.Fatal(err)
	}
	_, res, raw := runBench(t, "--nodes", "4", "--heartbeat-window", "1s", "--load-window", "3s",
		"--load-nodes", "20", "--load-clients", "8", "--compare", "--ironic-script", script,
		"--timeout", "2m")
	var b struct {
		Compare *struct {
			Ironic map[string]any `json:"ironic"`
			Pyghmi map[string]any `json:"pyghmi"`
		} `json:"compare"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatalf("bench.json: %v\n%s", err, raw)
	}
	if b.Compare == nil || b.Compare.Ironic == nil || b.Compare.Pyghmi == nil {
		t.Fatalf("bench.json has no compare.ironic and compare.pyghmi:\n%s", raw)
	}
	check := func(peer string, m map[string]any, version string, positive ...string) {
		if m["skipped"] == true {
			t.Errorf("compare.%s skipped: %v", peer, m["why"])
			return
		}
		if v, _ := m["version"].(string); !strings.Contains(v, version) {
			t.Errorf("compare.%s.version = %q, want %q in it", peer, v, version)
		}
		if how, _ := m["measured"].(string); len(how) < 40 {
			t.Errorf("compare.%s.measured = %q, want how it was measured", peer, how)
		}
		for _, k := range positive {
			if v, _ := m[k].(float64); v <= 0 {
				t.Errorf("compare.%s.%s = %v, want > 0", peer, k, m[k])
			}
		}
	}
	check("ironic", b.Compare.Ironic, "21.4", "heartbeats_per_s", "p50_ms", "p99_ms", "accepted", "persisted", "ratio")
	// The lean heartbeat client read every answer of Ironic's own HTTP
	// server (eventlet's, not Go's) as a 202. Its 503s (no free conductor
	// worker, when the loop outruns the pool) are Ironic's answers, apart.
	if e, _ := b.Compare.Ironic["errors"].(float64); e != 0 {
		t.Errorf("compare.ironic.errors = %v: %v", e, b.Compare.Ironic["first_error"])
	}
	if _, ok := b.Compare.Ironic["busy"].(float64); !ok {
		t.Errorf("compare.ironic.busy missing: %v", b.Compare.Ironic)
	}
	check("pyghmi", b.Compare.Pyghmi, "1.5", "sessions_per_s", "requests_per_s", "ratio", "sessions_ratio")
	// pyghmi's BMC (Python, one thread) now and then drops an answer on a
	// loaded machine: about 1 in 15,000 sessions here. A lost answer is the
	// peer's, recorded in bench.json; more than 1 in 1000 is the client's.
	pyOps := 0.0
	for _, k := range []string{"sessions", "requests"} {
		v, _ := b.Compare.Pyghmi[k].(float64)
		pyOps += v
	}
	if e, _ := b.Compare.Pyghmi["errors"].(float64); e > pyOps/1000 {
		t.Errorf("compare.pyghmi.errors = %v of %v operations: %v", e, pyOps, b.Compare.Pyghmi["first_error"])
	}
	// The ratio is against our BMC on the very same loops.
	if ours, _ := b.Compare.Pyghmi["ours_same_client"].(map[string]any); ours == nil {
		t.Errorf("compare.pyghmi has no ours_same_client:\n%s", raw)
	} else {
		o, _ := ours["requests_per_s"].(float64)
		p, _ := b.Compare.Pyghmi["requests_per_s"].(float64)
		r, _ := b.Compare.Pyghmi["ratio"].(float64)
		if same, _ := ours["port_per_session"].(bool); !same || p <= 0 || math.Abs(r-o/p) > 0.01*r {
			t.Errorf("compare.pyghmi.ratio = %v, ours on the same loops %v (port per session %v), pyghmi %v", r, o, ours["port_per_session"], p)
		}
	}
	md, err := os.ReadFile(filepath.Join(res, "bench.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Peers (--compare)", "- Ironic: ironic-api 1:21.4", "- pyghmi: python3-pyghmi", "| peer | ratio |"} {
		if !strings.Contains(string(md), s) {
			t.Errorf("bench.md lacks %q:\n%s", s, md)
		}
	}
}

// A peer that cannot run is reported as skipped, with why and the install
// command, and no figure.
func TestBenchCompareSaysWhyAPeerIsMissing(t *testing.T) {
	dir := t.TempDir()
	p := compareIronic(context.Background(), filepath.Join(dir, "no-ironic.sh"), dir, benchLoadOpts{nodes: 1, clients: 1, ipmiClients: 1, window: time.Second})
	if !p.Skipped || !strings.Contains(p.Why, "no-ironic.sh not found") || p.Install != ironicInstall || p.HeartbeatLoad != nil {
		t.Fatalf("Ironic with no script = %+v, want skipped, why, install, no figures", p)
	}
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "heartbeats_per_s") || !strings.Contains(string(raw), `"skipped":true`) {
		t.Errorf("bench.json's skipped Ironic = %s", raw)
	}
	r := &benchReport{Compare: &benchCompare{Ironic: p, Pyghmi: &pyghmiPeer{peerSkip: peerSkip{Skipped: true, Why: "no pyghmi", Install: "apt-get install python3-pyghmi"}}},
		HeartbeatLoad: &HeartbeatLoad{Nodes: 1, Clients: 1, HeartbeatsPerS: 10}}
	md := r.markdown()
	for _, s := range []string{"- Ironic: skipped: " + p.Why + " (install: `" + ironicInstall + "`)", "- pyghmi: skipped: no pyghmi (install: `apt-get install python3-pyghmi`)", "| 10.0 | skipped |"} {
		if !strings.Contains(md, s) {
			t.Errorf("bench.md lacks %q:\n%s", s, md)
		}
	}
}

// A failed check at 10,000 nodes prints ten failures and a count, not
// 10,000 of them.
func TestFirstFailures(t *testing.T) {
	var many []string
	for i := range 25 {
		many = append(many, fmt.Sprintf("n-%d: in \"deploying\", not \"active\"", i))
	}
	got := firstFailures(&scenarios.Check{Failures: many}, "results/r/bench/result.json")
	if !strings.HasPrefix(got, many[0]+"; "+many[1]+"; ") || !strings.HasSuffix(got, many[9]+"; ... and 15 more (all in results/r/bench/result.json)") {
		t.Errorf("firstFailures of 25: %s", got)
	}
	if strings.Contains(got, many[10]) {
		t.Errorf("firstFailures of 25 prints the 11th: %s", got)
	}
	if got := firstFailures(&scenarios.Check{Failures: many[:2]}, "x"); got != many[0]+"; "+many[1] {
		t.Errorf("firstFailures of 2: %s", got)
	}
}
