package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Scaling: --scale-from a smaller run's bench.json puts this run's CPU per
// node, phase by phase, beside that run's. A phase is linear in N when its
// cost per node stays the same as N grows; the bench judges it on the CPU
// seconds of both processes (lab + driver), which other load on the
// machine moves less than the wall clock, and which a small run's protocol
// waits (a heartbeat interval is the same at any N) do not inflate.

// scaleTolerance is how much more CPU per node a phase may take at the
// larger N and still count as linear: within an hour this VM's speed moved
// by about that much (the same binary, the same flags).
const scaleTolerance = 0.2

// linearRatio says whether a phase whose CPU per node grew by ratio from
// the smaller N to the larger is linear in N.
func linearRatio(ratio float64) bool { return ratio <= 1+scaleTolerance }

// scaledPhases are the provisioning phases, each work per node. The
// heartbeat window and the closed loops last a fixed time at any N, and
// the verify phases are the bench's own checks.
var scaledPhases = []string{"enroll", "manage", "provide", "power_off", "deploy", "undeploy"}

// benchSettings are the flags a run's figures depend on besides --nodes:
// two runs scale against each other only when they match.
type benchSettings struct {
	Power            string `json:"power"`
	BMC              string `json:"bmc"`
	ImageSize        string `json:"image_size"`
	Checksum         string `json:"checksum"`
	HeartbeatTimeout string `json:"heartbeat_timeout"`
	HeartbeatWindow  string `json:"heartbeat_window"`
	LoadWindow       string `json:"load_window"`
	LoadNodes        int    `json:"load_nodes"`
	LoadClients      int    `json:"load_clients"`
	IPMIClients      int    `json:"ipmi_clients"`
	Compare          bool   `json:"compare"`
}

// differences lists the settings in which b differs from s, as flags.
func (s benchSettings) differences(b benchSettings) []string {
	var d []string
	diff := func(flag string, mine, theirs any) {
		if mine != theirs {
			d = append(d, fmt.Sprintf("--%s %v (it had %v)", flag, mine, theirs))
		}
	}
	diff("power", s.Power, b.Power)
	diff("bmc", s.BMC, b.BMC)
	diff("image-size", s.ImageSize, b.ImageSize)
	diff("checksum", s.Checksum, b.Checksum)
	diff("heartbeat-timeout", s.HeartbeatTimeout, b.HeartbeatTimeout)
	diff("heartbeat-window", s.HeartbeatWindow, b.HeartbeatWindow)
	diff("load-window", s.LoadWindow, b.LoadWindow)
	diff("load-nodes", s.LoadNodes, b.LoadNodes)
	diff("load-clients", s.LoadClients, b.LoadClients)
	diff("ipmi-clients", s.IPMIClients, b.IPMIClients)
	diff("compare", s.Compare, b.Compare)
	return d
}

// benchScaling is bench.json's "scaling".
type benchScaling struct {
	// From is the smaller run's bench.json, FromNodes its --nodes.
	From      string  `json:"from"`
	FromNodes int     `json:"from_nodes"`
	Tolerance float64 `json:"tolerance"`
	// Linear: every phase's CPURatio is at most 1 + Tolerance.
	Linear bool           `json:"linear"`
	Phases []phaseScaling `json:"phases"`
}

// phaseScaling is one phase at both sizes.
type phaseScaling struct {
	Phase string `json:"phase"`
	// CPU milliseconds per node, lab + driver, at FromNodes and at Nodes.
	FromCPUMsPerNode float64 `json:"from_cpu_ms_per_node"`
	CPUMsPerNode     float64 `json:"cpu_ms_per_node"`
	// CPURatio is CPUMsPerNode / FromCPUMsPerNode: 1 is linear in N.
	CPURatio float64 `json:"cpu_ratio"`
	// WallRatio is the same for the phase's seconds per node.
	WallRatio float64 `json:"wall_ratio"`
	Linear    bool    `json:"linear"`
}

// readBenchJSON reads a bench.json that a scaling judgement can use: an
// ironlab bench run that passed and records its flags; its errors name
// the file (and the line of a JSON syntax error).
func readBenchJSON(path string) (*benchReport, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r benchReport
	if err := json.Unmarshal(raw, &r); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line := 1 + strings.Count(string(raw[:se.Offset]), "\n")
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case r.Nodes < 1 || len(r.Phases) == 0:
		return nil, fmt.Errorf("%s is not an ironlab bench.json (no nodes or phases)", path)
	case !r.Passed:
		return nil, fmt.Errorf("%s is a run that failed (%s): its figures are not a baseline", path, r.Error)
	case r.Settings == nil:
		return nil, fmt.Errorf("%s does not record its flags (a bench.json from before settings were written): run that bench again", path)
	}
	return &r, nil
}

// readScaleBase reads the bench.json --scale-from names and checks that
// this run can scale from it: fewer nodes, a run that passed, the same
// node class and settings.
func readScaleBase(path string, nodes int, driver string, set benchSettings) (*benchReport, error) {
	base, err := readBenchJSON(path)
	if err != nil {
		return nil, fmt.Errorf("--scale-from: %w", err)
	}
	switch {
	case base.Nodes >= nodes:
		return nil, fmt.Errorf("--scale-from: %s is a run of %d nodes; scale from a run of fewer than --nodes %d", path, base.Nodes, nodes)
	case base.Driver != driver:
		return nil, fmt.Errorf("--scale-from: %s ran %s nodes, this run %s: give the same --power and --bmc", path, base.Driver, driver)
	}
	if d := set.differences(*base.Settings); len(d) > 0 {
		return nil, fmt.Errorf("--scale-from: %s ran with other flags; this run has %s", path, strings.Join(d, ", "))
	}
	return base, nil
}

// phasePerNode is a run's phase's CPU milliseconds (lab + driver) and
// wall seconds per node; ok is false when the run has no such phase or
// it took no CPU.
func (r *benchReport) phasePerNode(name string) (cpuMs, wall float64, ok bool) {
	i := slices.IndexFunc(r.Phases, func(p benchPhase) bool { return p.Name == name })
	if i < 0 {
		return 0, 0, false
	}
	p := r.Phases[i]
	cpuMs, wall = (p.LabCPUS+p.DriverCPUS)*1000/float64(r.Nodes), p.Seconds/float64(r.Nodes)
	return cpuMs, wall, cpuMs > 0 && wall > 0
}

// scaling compares r's phases with base's.
func (r *benchReport) scaling(base *benchReport, from string) *benchScaling {
	s := &benchScaling{From: from, FromNodes: base.Nodes, Tolerance: scaleTolerance, Linear: true}
	for _, name := range scaledPhases {
		cpu, wall, ok := r.phasePerNode(name)
		fromCPU, fromWall, fromOK := base.phasePerNode(name)
		if !ok || !fromOK {
			continue
		}
		ps := phaseScaling{Phase: name, FromCPUMsPerNode: round3(fromCPU), CPUMsPerNode: round3(cpu),
			CPURatio: round3(cpu / fromCPU), WallRatio: round3(wall / fromWall)}
		ps.Linear = linearRatio(cpu / fromCPU)
		s.Linear = s.Linear && ps.Linear
		s.Phases = append(s.Phases, ps)
	}
	if len(s.Phases) == 0 {
		s.Linear = false
	}
	return s
}

// linearGoal is the goal "every phase linear in N".
func (r *benchReport) linearGoal() benchGoal {
	g := benchGoal{Goal: "every phase linear in N (CPU per node, lab + driver, at most 1.2x the smaller run's)"}
	s := r.Scaling
	if s == nil {
		g.Status = "not judged: needs --scale-from a smaller run's bench.json"
		return g
	}
	var parts []string
	for _, p := range s.Phases {
		parts = append(parts, fmt.Sprintf("%s %.2fx", p.Phase, p.CPURatio))
	}
	g.Measured = fmt.Sprintf("against %d nodes: %s", s.FromNodes, strings.Join(parts, ", "))
	switch {
	case len(s.Phases) == 0:
		g.Status = "not judged: no phase measured in both runs"
	case !r.Passed:
		g.Status = "not met"
	default:
		g.Status = judge(s.Linear)
	}
	return g
}

// markdownScaling is bench.md's table of the phases at both sizes.
func (r *benchReport) markdownScaling(b *strings.Builder) {
	s := r.Scaling
	if s == nil {
		return
	}
	fmt.Fprintf(b, "\nScaling from %d nodes (%s): CPU per node, lab + driver; a phase is linear when its ratio is at most %.1f. One pair of runs is as noisy as that: ironlab scaling judges several runs of each size by their medians.\n\n", s.FromNodes, s.From, 1+s.Tolerance)
	fmt.Fprintf(b, "| phase | CPU ms per node at %d | at %d | ratio | wall per node, ratio | linear |\n|---|---:|---:|---:|---:|---|\n", s.FromNodes, r.Nodes)
	for _, p := range s.Phases {
		verdict := "yes"
		if !p.Linear {
			verdict = "no"
		}
		fmt.Fprintf(b, "| %s | %.2f | %.2f | %.2fx | %.2fx | %s |\n", p.Phase, p.FromCPUMsPerNode, p.CPUMsPerNode, p.CPURatio, p.WallRatio, verdict)
	}
}
