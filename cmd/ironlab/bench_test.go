package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `ironlab bench` on the real path (native IPMI, one BMC per node, the
// driver as a child process) writes bench.json with every figure a reader
// compares, each of them measured, and bench.md with the same phases.
func TestBenchWritesMeasuredFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("a 20-node lab (~20 s)")
	}
	dir := t.TempDir()
	const n = 20
	out, code := ironlab(t, dir, "bench", "--nodes", "20", "--power", "native",
		"--heartbeat-window", "4s", "--timeout", "2m", "--results", filepath.Join(dir, "res"))
	if code != 0 {
		t.Fatalf("ironlab bench exited %d:\n%s", code, out)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "res", "*", "bench.json"))
	if len(files) != 1 {
		t.Fatalf("bench.json files: %v, want one\n%s", files, out)
	}
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var b struct {
		Nodes  int  `json:"nodes"`
		Passed bool `json:"passed"`
		Phases []struct {
			Name      string  `json:"name"`
			Seconds   float64 `json:"seconds"`
			NodesPerS float64 `json:"nodes_per_s"`
		} `json:"phases"`
		DeployWallS      *float64 `json:"deploy_wall_s"`
		HeartbeatsPerS   *float64 `json:"heartbeats_per_s"`
		APIP50           *float64 `json:"api_p50_ms"`
		APIP99           *float64 `json:"api_p99_ms"`
		IPMIRequestsPerS *float64 `json:"ipmi_requests_per_s"`
		IPMISessionsPerS *float64 `json:"ipmi_sessions_per_s"`
		RSSPerNode       *float64 `json:"rss_per_node_kib"`
		PeakRSS          *float64 `json:"peak_rss_mib"`
		CPUPerDeploy     *float64 `json:"conductor_cpu_s_per_deploy"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatalf("bench.json: %v\n%s", err, raw)
	}
	for name, v := range map[string]*float64{"deploy_wall_s": b.DeployWallS, "heartbeats_per_s": b.HeartbeatsPerS,
		"api_p50_ms": b.APIP50, "api_p99_ms": b.APIP99, "ipmi_requests_per_s": b.IPMIRequestsPerS,
		"ipmi_sessions_per_s": b.IPMISessionsPerS, "rss_per_node_kib": b.RSSPerNode, "peak_rss_mib": b.PeakRSS,
		"conductor_cpu_s_per_deploy": b.CPUPerDeploy} {
		if v == nil {
			t.Errorf("bench.json has no %s:\n%s", name, raw)
		} else if *v <= 0 && name != "rss_per_node_kib" {
			t.Errorf("bench.json %s = %v, want > 0", name, *v)
		}
	}
	if t.Failed() {
		return
	}
	if b.Nodes != n || !b.Passed {
		t.Errorf("nodes = %d, passed = %v; want %d, true", b.Nodes, b.Passed, n)
	}
	want := []string{"enroll", "manage", "provide", "heartbeats", "power_off", "deploy", "undeploy"}
	if len(b.Phases) != len(want) {
		t.Fatalf("phases = %+v, want %v", b.Phases, want)
	}
	for i, p := range b.Phases {
		if p.Name != want[i] || p.Seconds <= 0 || p.NodesPerS <= 0 {
			t.Errorf("phase %d = %+v, want %s with seconds and nodes/s > 0", i, p, want[i])
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
	if *b.DeployWallS > deployPhase {
		t.Errorf("deploy_wall_s %v longer than the deploy phase %v", *b.DeployWallS, deployPhase)
	}
	md, err := os.ReadFile(filepath.Join(filepath.Dir(files[0]), "bench.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append(want, "| deploy wall", "p99", "IPMI requests / s") {
		if !strings.Contains(string(md), s) {
			t.Errorf("bench.md lacks %q:\n%s", s, md)
		}
	}
	report := filepath.Join(filepath.Dir(files[0]), "bench", "report.html")
	if _, err := os.Stat(report); err != nil || !strings.Contains(out, "open "+report) {
		t.Errorf("no report.html, or the output does not say where it is (%v):\n%s", err, out)
	}
}

// Bad flags are refused before anything starts.
func TestBenchRefusesBadFlags(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--power", "smoke"}, {"--power", "fake"}, {"--bmc", "redfish", "--power", "ipmitool"}, {"--bmc", "serial"},
		{"--nodes", "0"}, {"--heartbeat-window", "0s"},
	} {
		out, code := ironlab(t, dir, append([]string{"bench"}, args...)...)
		if code != 2 || !strings.Contains(out, "ironlab bench:") {
			t.Errorf("bench %v: exit %d, want 2 with an ironlab bench: error:\n%s", args, code, out)
		}
	}
}
