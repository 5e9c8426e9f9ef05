package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
)

func init() {
	register("scaling", "judge each bench phase's linearity in N from repeated runs at two sizes", scalingCmd)
}

// One pair of bench runs (bench --scale-from) says as much about the
// machine's speed between the two runs as about the lab: on a 2-core VM the
// same run's CPU per node moves by about scaleTolerance from one run to
// the next. ironlab scaling judges the same goal from several runs at each
// size, as benchstat does: the median of each size's CPU per node, the
// ratio of the medians, and each size's range beside it.

// scalingRuns is the judgement over several runs (the JSON of --json).
type scalingRuns struct {
	// FromNodes is the smaller node count, Nodes the larger; From and
	// Runs are their runs' bench.json files.
	FromNodes int      `json:"from_nodes"`
	Nodes     int      `json:"nodes"`
	From      []string `json:"from"`
	Runs      []string `json:"runs"`
	Driver    string   `json:"driver"`
	Tolerance float64  `json:"tolerance"`
	// Linear: every phase's CPURatio is at most 1 + Tolerance.
	Linear bool               `json:"linear"`
	Phases []phaseScalingRuns `json:"phases"`
}

// phaseScalingRuns is one phase at both sizes, over their runs.
type phaseScalingRuns struct {
	Phase string `json:"phase"`
	// Medians of the runs' CPU milliseconds per node (lab + driver), and
	// each size's lowest and highest.
	FromCPUMsPerNode float64    `json:"from_cpu_ms_per_node"`
	FromCPURange     [2]float64 `json:"from_cpu_ms_per_node_range"`
	CPUMsPerNode     float64    `json:"cpu_ms_per_node"`
	CPURange         [2]float64 `json:"cpu_ms_per_node_range"`
	// CPURatio is CPUMsPerNode / FromCPUMsPerNode (1 is linear in N);
	// WallRatio the same for the medians of seconds per node.
	CPURatio  float64 `json:"cpu_ratio"`
	WallRatio float64 `json:"wall_ratio"`
	Linear    bool    `json:"linear"`
}

func scalingCmd(args []string) int {
	fs := flag.NewFlagSet("scaling", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the judgement as JSON instead of a markdown table")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: ironlab scaling [flags] BENCH.json...

Judges the goal "every phase linear in N" from several ironlab bench runs
at two node counts. One pair of runs (bench --scale-from) says as much
about the machine's speed between them as about the lab: on a small VM the
same run's CPU per node moves by about the goal's tolerance from one run to
the next. Give the bench.json of several runs of each size, all with the
same other flags, best run in turn (1000, 10000, 1000, 10000, ...). For each
provisioning phase it takes the median of the runs' CPU per node (lab +
driver) at each size and judges the phase linear when the larger size's
median is at most %.1fx the smaller's; each size's range is shown beside
it. Reads the files only: it runs nothing.

Prints a markdown table, or JSON with --json. Exit status: 0 when every
phase is linear, 1 when one is not, 2 for bad input (which file, and why).

Flags:
`, 1+scaleTolerance)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() < 2 {
		fmt.Fprintln(os.Stderr, "ironlab scaling: give the bench.json of runs at two node counts (see --help)")
		return 2
	}
	var runs []*benchReport
	for _, path := range fs.Args() {
		r, err := readBenchJSON(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ironlab scaling: %v\n", err)
			return 2
		}
		runs = append(runs, r)
	}
	s, err := judgeScaling(fs.Args(), runs)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ironlab scaling: %v\n", err)
		return 2
	}
	if *asJSON {
		out, _ := json.MarshalIndent(s, "", "  ")
		fmt.Println(string(out))
	} else {
		fmt.Print(s.markdown())
	}
	if !s.Linear {
		return 1
	}
	return 0
}

// judgeScaling judges runs (read from paths, in the same order): they must
// share their node class and flags and come in exactly two node counts.
func judgeScaling(paths []string, runs []*benchReport) (*scalingRuns, error) {
	first := runs[0]
	sizes := map[int]bool{}
	for i, r := range runs {
		if r.Driver != first.Driver {
			return nil, fmt.Errorf("%s ran %s nodes, %s %s: give runs of the same --power and --bmc", paths[i], r.Driver, paths[0], first.Driver)
		}
		if d := r.Settings.differences(*first.Settings); len(d) > 0 {
			return nil, fmt.Errorf("%s ran with other flags than %s: %s", paths[i], paths[0], strings.Join(d, ", "))
		}
		sizes[r.Nodes] = true
	}
	ns := slices.Sorted(maps.Keys(sizes))
	if len(ns) != 2 {
		var counts []string
		for _, n := range ns {
			counts = append(counts, fmt.Sprint(n))
		}
		return nil, fmt.Errorf("give runs at exactly two node counts; these are at %s", strings.Join(counts, ", "))
	}
	s := &scalingRuns{FromNodes: ns[0], Nodes: ns[1], Driver: first.Driver, Tolerance: scaleTolerance, Linear: true}
	for i, r := range runs {
		if r.Nodes == s.FromNodes {
			s.From = append(s.From, paths[i])
		} else {
			s.Runs = append(s.Runs, paths[i])
		}
	}
	for _, name := range scaledPhases {
		var fromCPU, fromWall, cpu, wall []float64
		for _, r := range runs {
			c, w, ok := r.phasePerNode(name)
			switch {
			case !ok:
			case r.Nodes == s.FromNodes:
				fromCPU, fromWall = append(fromCPU, c), append(fromWall, w)
			default:
				cpu, wall = append(cpu, c), append(wall, w)
			}
		}
		if len(fromCPU) == 0 || len(cpu) == 0 {
			continue
		}
		from, at := median(fromCPU), median(cpu)
		p := phaseScalingRuns{Phase: name,
			FromCPUMsPerNode: round3(from), FromCPURange: span(fromCPU),
			CPUMsPerNode: round3(at), CPURange: span(cpu),
			CPURatio: round3(at / from), WallRatio: round3(median(wall) / median(fromWall)),
			Linear: linearRatio(at / from)}
		s.Linear = s.Linear && p.Linear
		s.Phases = append(s.Phases, p)
	}
	if len(s.Phases) == 0 {
		return nil, fmt.Errorf("no provisioning phase (%s) was measured at both sizes", strings.Join(scaledPhases, ", "))
	}
	return s, nil
}

// span is v's lowest and highest (v not empty), rounded as the medians.
func span(v []float64) [2]float64 {
	return [2]float64{round3(slices.Min(v)), round3(slices.Max(v))}
}

// median of v (not empty): the middle value, or the mean of the two.
func median(v []float64) float64 {
	v = slices.Sorted(slices.Values(v))
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func (s *scalingRuns) markdown() string {
	var b strings.Builder
	verdict := "every phase is linear in N"
	if !s.Linear {
		verdict = "not every phase is linear in N"
	}
	fmt.Fprintf(&b, "# ironlab scaling: %s nodes, %d runs of %d against %d runs of %d: %s\n\n",
		s.Driver, len(s.Runs), s.Nodes, len(s.From), s.FromNodes, verdict)
	fmt.Fprintf(&b, "CPU per node, lab + driver, the median of each size's runs (lowest-highest); a phase is linear when its ratio is at most %.1f.\n\n", 1+s.Tolerance)
	fmt.Fprintf(&b, "| phase | CPU ms per node at %d | at %d | ratio | wall per node, ratio | linear |\n|---|---:|---:|---:|---:|---|\n", s.FromNodes, s.Nodes)
	for _, p := range s.Phases {
		yes := "yes"
		if !p.Linear {
			yes = "no"
		}
		fmt.Fprintf(&b, "| %s | %.2f (%.2f-%.2f) | %.2f (%.2f-%.2f) | %.2fx | %.2fx | %s |\n", p.Phase,
			p.FromCPUMsPerNode, p.FromCPURange[0], p.FromCPURange[1], p.CPUMsPerNode, p.CPURange[0], p.CPURange[1], p.CPURatio, p.WallRatio, yes)
	}
	fmt.Fprintf(&b, "\nRuns at %d: %s\nRuns at %d: %s\n", s.FromNodes, strings.Join(s.From, ", "), s.Nodes, strings.Join(s.Runs, ", "))
	return b.String()
}
