package scenarios

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/ironlab/ironlab/simulator/lab"
)

// ConductorCPU is the conductor's CPU time over the deploy phases of a
// scenario (from each deploy step to the end of the next wait for active),
// as the driver reports it over its API (GET /v1/lab/process: user+system
// time of the driver process, the conductor's own threads, not the lab's
// machines, BMCs, agents or image server, which run in the runner's
// process). Only measured when the driver runs as a child process
// (lab.driver_process): in process, it would count the lab too.
type ConductorCPU struct {
	// Drivers are the classes of the deployed nodes.
	Drivers []string `json:"drivers"`
	// Deploys counts the nodes deployed in the measured phases.
	Deploys int `json:"deploys"`
	// CPUSeconds is user+system time of the driver process in those phases.
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUSecondsPerDeploy is CPUSeconds / Deploys.
	CPUSecondsPerDeploy float64 `json:"cpu_seconds_per_deploy"`
	// WallSeconds is how long the measured phases took.
	WallSeconds float64 `json:"wall_seconds"`
}

// cpuPhase is a deploy phase being measured.
type cpuPhase struct {
	pid     int
	cpu     float64
	start   time.Time
	nodes   int
	drivers map[string]bool
}

// cpuDeployStart opens a deploy phase (unless one is open) for nodes.
func (r *runner) cpuDeployStart(ctx context.Context, nodes []*lab.Node) {
	if r.proc == nil {
		return
	}
	if r.cpuPhase == nil {
		pid, cpu, err := r.api.Process(ctx)
		if err != nil {
			r.log.Warn("conductor CPU time", "err", err)
			return
		}
		r.cpuPhase = &cpuPhase{pid: pid, cpu: cpu, start: time.Now(), drivers: map[string]bool{}}
	}
	r.cpuPhase.nodes += len(nodes)
	for _, n := range nodes {
		r.cpuPhase.drivers[n.Driver] = true
	}
}

// cpuDeployEnd closes the open deploy phase and adds it to the result. A
// phase across a conductor restart (another pid) is not counted.
func (r *runner) cpuDeployEnd(ctx context.Context) {
	p := r.cpuPhase
	r.cpuPhase = nil
	if p == nil || p.nodes == 0 || r.proc == nil {
		return
	}
	pid, cpu, err := r.api.Process(ctx)
	if err != nil {
		r.log.Warn("conductor CPU time", "err", err)
		return
	}
	if pid != p.pid {
		return
	}
	c := r.result.ConductorCPU
	if c == nil {
		c = &ConductorCPU{}
		r.result.ConductorCPU = c
	}
	for d := range p.drivers {
		if !containsString(c.Drivers, d) {
			c.Drivers = append(c.Drivers, d)
		}
	}
	sort.Strings(c.Drivers)
	c.Deploys += p.nodes
	c.CPUSeconds += cpu - p.cpu
	c.WallSeconds += time.Since(p.start).Seconds()
	c.CPUSecondsPerDeploy = c.CPUSeconds / float64(c.Deploys)
}

func containsString(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// printConductorCPU is the summary line of the conductor's CPU time per deploy.
func printConductorCPU(w io.Writer, res *Result) {
	c := res.ConductorCPU
	if c == nil {
		return
	}
	fmt.Fprintf(w, "  conductor CPU time: %.2fs for %d deploys (%s) in %.1fs: %.3fs per deploy\n",
		c.CPUSeconds, c.Deploys, strings.Join(c.Drivers, ", "), c.WallSeconds, c.CPUSecondsPerDeploy)
}
