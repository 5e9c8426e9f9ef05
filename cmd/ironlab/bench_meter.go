package main

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ironlab/ironlab/driver/power/native"
	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/internal/memrelease"
	"github.com/ironlab/ironlab/scenarios"
	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/bmc"
	"github.com/ironlab/ironlab/simulator/lab"
)

// benchMeter measures a bench run from the runner's hooks: phase times
// (StepHook), the runner's API latency (its HTTP client), the lab's BMC
// counters, heartbeats the driver recorded and both processes' memory.
type benchMeter struct {
	n       int
	class   string
	steps   []benchStep
	timeout time.Duration
	// image is the deployed image's size and the checksum every agent
	// verifies ("1MiB, sha256").
	image string
	// settings are the run's flags; scaleBase, when set, the smaller run
	// (--scale-from scaleFrom) the report scales from.
	settings  benchSettings
	scaleBase *benchReport
	scaleFrom string

	mu      sync.Mutex
	latency []time.Duration
	// errStatus counts the runner's answers that were not 2xx, by method
	// and status ("PUT 409": the node was locked, the runner retries).
	errStatus map[string]int

	lab    *lab.Lab
	api    *ironic.Client // the meter's own client, not timed
	drvPid int

	selfBefore, selfAfter, drvStart, drvAfter procStatus
	// At the end of manage: every node enrolled, manageable, powered off,
	// no agent running (idle).
	selfIdle, drvIdle procStatus

	phaseStart, phaseEnd map[string]time.Time
	// markStart, markEnd are the counters at each phase's ends.
	markStart, markEnd map[string]phaseMark
	stepStart, stepEnd []time.Time

	url  string // the driver's API
	load benchLoadOpts
	// The closed loops, played after the steady-state window.
	hbLoad   *HeartbeatLoad
	ipmiLoad *IPMILoad
	// ipmiTarget is the BMC of ipmiLoad; compare loads it again as pyghmi's.
	ipmiTarget *ipmiTarget
	// compare, when set, plays the loops against the peers right after
	// ours, while the lab still runs (the same machine load for both).
	compare *compareOpts
	cmp     *benchCompare

	// prof, when set (--cpuprofile), is this process's CPU profile:
	// each phase is a piece of it and of the driver's (profilePiece).
	prof       *cpuProfiler
	profWarned bool

	hbCancel context.CancelFunc
	hbDone   chan hbCount
	hb       hbCount
	warnings []string
}

// hbCount is what the heartbeat poller saw.
type hbCount struct {
	beats       int
	first, last time.Time
}

// benchLoadOpts sizes the closed loops (the same for the peers).
type benchLoadOpts struct {
	nodes, clients, ipmiClients int
	window                      time.Duration
}

func newBenchMeter(n int, class string, steps []benchStep, timeout time.Duration, load benchLoadOpts) *benchMeter {
	return &benchMeter{n: n, class: class, steps: steps, timeout: timeout, load: load,
		phaseStart: map[string]time.Time{}, phaseEnd: map[string]time.Time{},
		markStart: map[string]phaseMark{}, markEnd: map[string]phaseMark{},
		stepStart: make([]time.Time, len(steps)), stepEnd: make([]time.Time, len(steps))}
}

func (m *benchMeter) warn(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	fmt.Println("   bench: " + msg)
	m.mu.Lock()
	m.warnings = append(m.warnings, msg)
	m.mu.Unlock()
}

// timedTransport records the latency of every request of the runner.
type timedTransport struct {
	base http.RoundTripper
	m    *benchMeter
}

func (t timedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	d := time.Since(start)
	t.m.mu.Lock()
	t.m.latency = append(t.m.latency, d)
	if err == nil && resp.StatusCode/100 != 2 {
		if t.m.errStatus == nil {
			t.m.errStatus = map[string]int{}
		}
		t.m.errStatus[fmt.Sprintf("%s %d", req.Method, resp.StatusCode)]++
	}
	t.m.mu.Unlock()
	return resp, err
}

// client is the runner's HTTP client: its requests are the ones timed.
func (m *benchMeter) client() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: timedTransport{
		base: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64}, m: m}}
}

// started runs once the lab and the driver run, before the first step.
func (m *benchMeter) started(url string, l *lab.Lab) {
	m.lab = l
	m.url = url
	api, err := benchAPI(context.Background(), url)
	if err != nil {
		m.warn("no meter API client: %v", err)
		return
	}
	m.api = api
	pid, _, err := api.Process(context.Background())
	if err != nil {
		m.warn("driver process unknown (GET /v1/lab/process: %v): its memory is not measured", err)
		return
	}
	m.drvPid = pid
	m.drvStart = readProcStatus(pid)
}

// sessionsClosedWait bounds waitSessionsClosed: the driver keeps a
// session at most native.DefaultMaxSessionLinger after a call, then
// closes it clear of its keep-alives (up to 7 s more by default).
const sessionsClosedWait = native.DefaultMaxSessionLinger + 15*time.Second

// waitSessionsClosed waits, before power_off, until no BMC of the lab
// holds a session. The driver keeps a session open for a while after a
// call (native.Config.SessionLinger: 6 s, longer for a BMC whose calls
// come further apart), so whether a node's power off finds the session of
// its provide still open depends on N's timing: at 1000 nodes it did
// (power_off opened no session), at 10,000 it did not (a session per
// node: the phase lasts 10 s, and they lapsed in it), and power_off's CPU
// per node was 1.26x at 10,000 for that alone. Once the sessions are closed, power_off at any N is a
// session per node: a cold power off, as a conductor's first call to a
// node is. The wait is no phase's; it says how many are open while it
// lasts.
func (m *benchMeter) waitSessionsClosed() {
	if m.lab == nil {
		return
	}
	start, last, said := time.Now(), -1, time.Time{}
	for {
		n := 0
		m.eachBMC(func(b *bmc.BMC) { n += b.OpenSessions() })
		if n == 0 {
			if last > 0 {
				fmt.Printf("   bench: all BMC sessions closed  %.1fs\n", time.Since(start).Seconds())
			}
			return
		}
		// A line when the count changed, at most one every 2 s.
		if n != last && time.Since(said) >= 2*time.Second {
			fmt.Printf("   bench: before power off: %d BMC sessions still open (the driver keeps them after a call)  %.1fs\n", n, time.Since(start).Seconds())
			last, said = n, time.Now()
		}
		if time.Since(start) > sessionsClosedWait {
			m.warn("power off: %d BMC sessions still open after %s; power_off may reuse some of them", n, sessionsClosedWait)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// eachBMC calls fn with each BMC of the lab's nodes.
func (m *benchMeter) eachBMC(fn func(*bmc.BMC)) {
	if m.lab == nil {
		return
	}
	for _, n := range m.lab.Nodes() {
		if n.BMC != nil {
			fn(n.BMC)
		}
	}
}

// counters sums the lab's BMC counters.
func (m *benchMeter) counters() bmc.Counters {
	var c bmc.Counters
	m.eachBMC(func(b *bmc.BMC) {
		bc := b.Counters()
		c.Requests += bc.Requests
		c.Sessions += bc.Sessions
		c.Dropped += bc.Dropped
	})
	return c
}

// phaseMark is what a phase is measured by, read at each of its ends: the
// BMCs' counters, both processes' CPU time, the lab's agents' lookups and
// heartbeats.
type phaseMark struct {
	ipmi   bmc.Counters
	cpu    procCPU
	agents fakeagent.TotalsSnapshot
}

// mark reads them now.
func (m *benchMeter) mark() phaseMark {
	pm := phaseMark{ipmi: m.counters(), cpu: m.cpu()}
	if m.lab != nil {
		pm.agents = m.lab.AgentTotals()
	}
	return pm
}

// step is the runner's StepHook: end is zero as step i starts.
func (m *benchMeter) step(i int, start, end time.Time) {
	if i >= len(m.steps) {
		return
	}
	phase := m.steps[i].phase
	if end.IsZero() {
		_, begun := m.phaseStart[phase]
		if !begun && phase == "power_off" {
			m.waitSessionsClosed()
			start = time.Now()
		}
		if !begun && m.prof != nil {
			// The switch takes up to 0.1 s in each process: not the phase's.
			m.profilePiece(phase)
			start = time.Now()
		}
		m.stepStart[i] = start
		if !begun {
			m.phaseStart[phase] = start
			m.markStart[phase] = m.mark()
			fmt.Printf("   bench: phase %s\n", phase)
		}
		if phase == "heartbeats" {
			m.startHeartbeats()
		}
		return
	}
	switch phase {
	case "heartbeats":
		m.stopHeartbeats()
		m.phaseEnd[phase] = time.Now()
		m.markEnd[phase] = m.mark()
		m.profilePiece("after-" + phase)
		m.runLoads()
		m.stepEnd[i] = time.Now()
		return
	case "power_off":
		// The power API answers at once: the phase ends when every node is off.
		m.waitPowerOff()
	}
	now := time.Now()
	m.stepEnd[i] = now
	m.phaseEnd[phase] = now
	m.markEnd[phase] = m.mark()
	lastOfPhase := i+1 == len(m.steps) || m.steps[i+1].phase != phase
	if lastOfPhase {
		m.profilePiece("after-" + phase)
	}
	if phase == "manage" && lastOfPhase {
		// Both processes give their free heap back once quiet
		// (memrelease: within memrelease.Settle), as in ironlab up; the
		// figure is what stays. The driver keeps each node's last IPMI
		// session open for native.DefaultSessionLinger after manage's
		// calls, each BMC's first (the BMC keeps its end too): nodes
		// holding sessions are not idle, and closing them is work. The
		// pause is in no phase.
		settle := memrelease.Settle + 500*time.Millisecond
		if m.class == "agent_pyghmi" {
			settle += native.DefaultSessionLinger
		}
		time.Sleep(settle)
		runtime.GC()
		m.selfIdle = readProcStatus(os.Getpid())
		if m.drvPid != 0 {
			m.drvIdle = readProcStatus(m.drvPid)
		}
	}
	if i == len(m.steps)-1 {
		m.selfAfter = readProcStatus(os.Getpid())
		if m.drvPid != 0 {
			m.drvAfter = readProcStatus(m.drvPid)
		}
	}
}

func (m *benchMeter) waitPowerOff() {
	if m.api == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
	defer cancel()
	// Each read of every node's states pauses as the runner's waits do,
	// and says how many are off when that changed, as the waits do.
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	start, last := time.Now(), -1
	for {
		began := time.Now()
		nodes, err := m.api.NodeStates(ctx)
		t.Reset(scenarios.PollPause(100*time.Millisecond, time.Since(began)))
		on := 0
		for _, n := range nodes {
			if n.Power() != "power off" {
				on++
			}
		}
		if off := len(nodes) - on; err == nil && off != last {
			fmt.Printf("   bench: power off: %d/%d nodes off  %.1fs\n", off, len(nodes), time.Since(start).Seconds())
			last = off
		}
		if err == nil && on == 0 && len(nodes) > 0 {
			return
		}
		select {
		case <-ctx.Done():
			m.warn("power off: %d nodes still on after %s (err %v)", on, m.timeout, err)
			return
		case <-t.C:
		}
	}
}

// runLoads plays the closed loops as phases of their own: heartbeat_load
// (enroll --load-nodes nodes, heartbeat them from --load-clients workers
// for --load-window, check what was recorded, delete them) and ipmi_load
// (one of the lab's BMCs, whole sessions then requests in open sessions).
func (m *benchMeter) runLoads() {
	if m.url == "" || m.load.window <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
	defer cancel()
	m.beginPhase("heartbeat_load")
	hc := loadClient(m.load.clients)
	targets, err := enrollLoadNodes(ctx, hc, m.url, m.load.nodes, func(i int) map[string]any {
		return map[string]any{"name": fmt.Sprintf("hbload-%d", i), "driver": "fake_agent"}
	})
	if err != nil {
		m.warn("heartbeat load: %v", err)
	} else {
		start := time.Now().Truncate(time.Second)
		drv0, drvErr := m.driverCPU(ctx)
		self0 := selfCPU()
		r := heartbeatLoad(ctx, m.url, targets, m.load.clients, m.load.window)
		self1 := selfCPU()
		if drv1, err := m.driverCPU(ctx); err == nil && drvErr == nil && r.Requests > 0 {
			r.DriverCPUUs = round3((drv1 - drv0).Seconds() * 1e6 / float64(r.Requests))
		}
		if r.Requests > 0 {
			r.ClientCPUUs = round3((self1 - self0).Seconds() * 1e6 / float64(r.Requests))
		}
		// Each 202 is written before it is sent: check every node shows one
		// from the window, and count the accepted ones as persisted.
		stale := 0
		for _, t := range targets {
			var n ironic.Node
			if err := apiCall(ctx, hc, http.MethodGet, m.url+"/v1/nodes/"+t.UUID, nil, &n); err != nil {
				stale++
				continue
			}
			if at, ok := n.LastHeartbeat(); !ok || at.Before(start) {
				stale++
			}
		}
		if stale == 0 {
			r.Persisted = r.Accepted
		} else {
			m.warn("heartbeat load: %d of %d nodes show no heartbeat recorded in the window", stale, len(targets))
		}
		if r.Seconds > 0 {
			r.HeartbeatsPerS = round3(float64(r.Persisted) / r.Seconds)
		}
		m.hbLoad = &r
		fmt.Printf("   bench: heartbeat load: %.0f/s persisted, p50 %.2f ms, p99 %.2f ms, CPU per heartbeat %.1f us driver, %.1f us bench (%d nodes, %d clients, %d errors)\n",
			r.HeartbeatsPerS, r.P50Ms, r.P99Ms, r.DriverCPUUs, r.ClientCPUUs, r.Nodes, r.Clients, r.Errors)
	}
	if err := deleteLoadNodes(ctx, hc, m.url, targets); err != nil {
		m.warn("heartbeat load: delete its nodes: %v", err)
	}
	m.endPhase("heartbeat_load")
	// Against the first BMC; fake_agent nodes have none, and no phase.
	for _, n := range m.lab.Nodes() {
		if n.BMC == nil {
			continue
		}
		m.beginPhase("ipmi_load")
		t := &ipmiTarget{addr: n.BMC.Addr(), user: n.BMCCreds.Username, pass: n.BMCCreds.Password}
		r := ipmiLoad(ctx, t.addr, t.user, t.pass, m.load.ipmiClients, m.load.window, false)
		m.ipmiLoad, m.ipmiTarget = &r, t
		fmt.Printf("   bench: IPMI load on one BMC: %.0f sessions/s, %.0f requests/s (%d clients, %d errors)\n",
			r.SessionsPerS, r.RequestsPerS, r.Clients, r.Errors)
		m.endPhase("ipmi_load")
		break
	}
	if m.compare != nil {
		m.beginPhase("compare")
		m.cmp = runCompare(ctx, m.compare.script, m.compare.dir, m.load, &benchReport{HeartbeatLoad: m.hbLoad}, m.ipmiTarget)
		m.endPhase("compare")
	}
}

// compareOpts says where the peers' runs find scripts/ironic.sh and keep
// their state.
type compareOpts struct {
	script, dir string
}

func (m *benchMeter) beginPhase(p string) {
	m.profilePiece(p)
	fmt.Printf("   bench: phase %s\n", p)
	m.phaseStart[p] = time.Now()
	m.markStart[p] = m.mark()
}

func (m *benchMeter) endPhase(p string) {
	m.phaseEnd[p] = time.Now()
	m.markEnd[p] = m.mark()
	m.profilePiece("after-" + p)
}

// profilePiece begins the CPU profiles' piece name in both processes
// (--cpuprofile): this one's directly, the driver's with the lab extension
// PUT /v1/lab/profile. A driver that refuses is warned of once and keeps
// writing its current piece.
func (m *benchMeter) profilePiece(name string) {
	if m.prof == nil {
		return
	}
	if _, err := m.prof.Piece(name); err != nil {
		m.warn("CPU profile: %v", err)
	}
	if m.api == nil || m.profWarned {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.api.ProfilePiece(ctx, name); err != nil {
		m.warn("the driver's CPU profile stays one piece from %q on: PUT /v1/lab/profile: %v", name, err)
		m.profWarned = true
	}
}

// startHeartbeats polls the nodes' agent_last_heartbeat (Unix seconds, as
// the driver records it) and counts each change as one heartbeat: agents
// heartbeat every 0.3-0.6 of the heartbeat timeout, so with a timeout over
// 3.4 s two heartbeats never fall in one second, and the poll (every
// 250 ms, or slower for many nodes) never sees two changes at once.
func (m *benchMeter) startHeartbeats() {
	if m.api == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.hbCancel, m.hbDone = cancel, make(chan hbCount, 1)
	every := max(250*time.Millisecond, time.Duration(m.n)*200*time.Microsecond)
	go func() {
		var c hbCount
		prev := map[string]time.Time{}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			nodes, err := m.api.Nodes(ctx)
			if err == nil {
				now := time.Now()
				for _, n := range nodes {
					at, ok := n.LastHeartbeat()
					if !ok {
						continue
					}
					if p, seen := prev[n.UUID]; seen && at.After(p) && !c.first.IsZero() {
						c.beats++
					}
					prev[n.UUID] = at
				}
				if c.first.IsZero() {
					c.first = now
				}
				c.last = now
			}
			select {
			case <-ctx.Done():
				m.hbDone <- c
				return
			case <-t.C:
			}
		}
	}()
}

func (m *benchMeter) stopHeartbeats() {
	if m.hbCancel == nil {
		return
	}
	m.hbCancel()
	m.hb = <-m.hbDone
}

// procCPU is the CPU time (user + system) of the lab process and of the
// driver process, in seconds.
type procCPU struct {
	lab, driver float64
}

// cpu reads both processes' CPU time now.
func (m *benchMeter) cpu() procCPU {
	c := procCPU{lab: readProcCPU(os.Getpid())}
	if m.drvPid != 0 {
		c.driver = readProcCPU(m.drvPid)
	}
	return c
}

// clockTicks is the unit of /proc/<pid>/stat's utime and stime
// (sysconf(_SC_CLK_TCK), 100 on Linux).
const clockTicks = 100

// readProcCPU is the user + system time of pid from /proc/<pid>/stat, in
// seconds (0 when it cannot be read).
func readProcCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: count from its ")".
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseFloat(f[11], 64)
	s, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return (u + s) / clockTicks
}

// procStatus is a process's memory from /proc/<pid>/status, in KiB.
type procStatus struct {
	RSS, HWM int64
}

func readProcStatus(pid int) procStatus {
	var s procStatus
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			s.RSS = n
		case "VmHWM":
			s.HWM = n
		}
	}
	return s
}

// benchPhase is one phase's time.
type benchPhase struct {
	Name         string  `json:"name"`
	Seconds      float64 `json:"seconds"`
	NodesPerS    float64 `json:"nodes_per_s"`
	IPMIRequests uint64  `json:"ipmi_requests"`
	IPMISessions uint64  `json:"ipmi_sessions"`
	// LabCPUS and DriverCPUS are the CPU seconds (user + system) the lab
	// process (BMCs, machines, agents, runner) and the driver process
	// spent in the phase: unlike seconds, little moved by other load on
	// the machine.
	LabCPUS    float64 `json:"lab_cpu_s"`
	DriverCPUS float64 `json:"driver_cpu_s"`
	// Lookups (tried, answered or not) and Heartbeats (accepted) are
	// what the lab's agents sent the driver in the phase, over every node:
	// idle agents heartbeat all along (fast track), so a phase that lasts
	// longer costs heartbeats in proportion.
	Lookups    uint64 `json:"lookups"`
	Heartbeats uint64 `json:"heartbeats"`
}

// benchReport is bench.json.
type benchReport struct {
	Nodes  int    `json:"nodes"`
	Driver string `json:"driver"`
	// Image is the deployed image's size and the checksum each agent
	// verifies as it writes ("1MiB, sha256").
	Image string `json:"image"`
	// Cleaning is the automated clean of provide and undeploy.
	Cleaning   string       `json:"cleaning"`
	Passed     bool         `json:"passed"`
	Error      string       `json:"error,omitempty"`
	MeasuredAt string       `json:"measured_at"`
	Host       string       `json:"host"`
	Phases     []benchPhase `json:"phases"`
	// DeployWallS: the first deploy request to the last node active.
	DeployWallS float64 `json:"deploy_wall_s"`
	// DeployRequestsS is how long the runner took to send every deploy
	// request (the deploy step itself, 64 nodes at a time): the part of the
	// deploy wall that grew faster than N.
	DeployRequestsS float64 `json:"deploy_requests_s"`
	// EnrollToActiveS is the provisioning path without the bench's own
	// phases: enroll + manage + provide + deploy (not the heartbeat window,
	// the closed loops or the power off that makes the deploy cold).
	EnrollToActiveS  float64 `json:"enroll_to_active_s"`
	Heartbeats       int     `json:"heartbeats"`
	HeartbeatWindowS float64 `json:"heartbeat_window_s"`
	HeartbeatsPerS   float64 `json:"heartbeats_per_s"`
	// API latency of the runner's own requests (enroll, verbs, waits).
	APIRequests int     `json:"api_requests"`
	APIP50Ms    float64 `json:"api_p50_ms"`
	APIP99Ms    float64 `json:"api_p99_ms"`
	// APIErrors counts the answers that were not 2xx by method and status.
	APIErrors map[string]int `json:"api_errors,omitempty"`
	// From the lab's BMC counters, over enroll to the end of undeploy.
	IPMIRequests     uint64  `json:"ipmi_requests"`
	IPMISessions     uint64  `json:"ipmi_sessions"`
	IPMIRequestsPerS float64 `json:"ipmi_requests_per_s"`
	IPMISessionsPerS float64 `json:"ipmi_sessions_per_s"`
	// Memory: RSS growth of the lab process (from before the lab is built)
	// plus the driver process's (from its start) to all nodes idle, / N;
	// peak is both processes' VmHWM.
	RSSPerNodeKiB float64 `json:"rss_per_node_kib"`
	// RSSPerIdleNodeKiB is the same growth after manage, when the nodes are
	// enrolled, manageable and off, with no agent running and (native
	// power) the driver's kept IPMI sessions closed.
	RSSPerIdleNodeKiB float64 `json:"rss_per_idle_node_kib"`
	PeakRSSMiB        float64 `json:"peak_rss_mib"`
	LabPeakRSSMiB     float64 `json:"lab_peak_rss_mib"`
	DriverPeakMiB     float64 `json:"driver_peak_rss_mib"`
	ConductorCPUS     float64 `json:"conductor_cpu_s"`
	ConductorCPUPD    float64 `json:"conductor_cpu_s_per_deploy"`
	// The closed loops against the driver and one of the lab's BMCs.
	HeartbeatLoad *HeartbeatLoad `json:"heartbeat_load,omitempty"`
	IPMILoad      *IPMILoad      `json:"ipmi_load,omitempty"`
	// Compare is the same loops against the peers (--compare).
	Compare *benchCompare `json:"compare,omitempty"`
	// Settings are the flags the figures depend on besides --nodes;
	// Scaling is each phase beside a smaller run's (--scale-from).
	Settings *benchSettings `json:"settings,omitempty"`
	Scaling  *benchScaling  `json:"scaling,omitempty"`
	Goals    []benchGoal    `json:"goals"`
	Warnings []string       `json:"warnings,omitempty"`
}

func (m *benchMeter) report(res *scenarios.Result) *benchReport {
	host, _ := os.Hostname()
	r := &benchReport{Nodes: m.n, Driver: m.class, Image: m.image, Passed: res.Passed, Error: res.Error,
		MeasuredAt: time.Now().UTC().Format(time.RFC3339),
		Host:       fmt.Sprintf("%s, %d CPUs, %s", host, runtime.NumCPU(), runtime.Version())}
	r.Cleaning = "erase_devices_metadata on provide and undeploy"
	if !benchCleans(m.class) {
		r.Cleaning = "none (FakePower never powers the machine on again after the deploy: no agent would run the erase)"
	}
	var first, last time.Time
	for _, p := range benchPhases {
		s, e := m.phaseStart[p], m.phaseEnd[p]
		if s.IsZero() || e.IsZero() {
			continue
		}
		if first.IsZero() {
			first = s
		}
		last = e
		sec := e.Sub(s).Seconds()
		m0, m1 := m.markStart[p], m.markEnd[p]
		bp := benchPhase{Name: p, Seconds: round3(sec),
			IPMIRequests: m1.ipmi.Requests - m0.ipmi.Requests,
			IPMISessions: m1.ipmi.Sessions - m0.ipmi.Sessions,
			LabCPUS:      round3(m1.cpu.lab - m0.cpu.lab),
			DriverCPUS:   round3(m1.cpu.driver - m0.cpu.driver),
			Lookups:      m1.agents.Lookups - m0.agents.Lookups,
			Heartbeats:   m1.agents.Heartbeats - m0.agents.Heartbeats}
		if sec > 0 {
			bp.NodesPerS = round3(float64(m.n) / sec)
		}
		r.Phases = append(r.Phases, bp)
	}
	var deployStart, activeEnd time.Time
	for i, st := range m.steps {
		if strings.HasPrefix(st.yaml, "deploy:") {
			deployStart = m.stepStart[i]
		}
		if strings.HasPrefix(st.yaml, "wait: {state: active") {
			activeEnd = m.stepEnd[i]
		}
	}
	if !deployStart.IsZero() && !activeEnd.IsZero() {
		r.DeployWallS = round3(activeEnd.Sub(deployStart).Seconds())
	}
	for i, st := range m.steps {
		if strings.HasPrefix(st.yaml, "deploy:") && !m.stepStart[i].IsZero() && !m.stepEnd[i].IsZero() {
			r.DeployRequestsS = round3(m.stepEnd[i].Sub(m.stepStart[i]).Seconds())
		}
	}
	for _, p := range r.Phases {
		switch p.Name {
		case "enroll", "manage", "provide", "deploy":
			r.EnrollToActiveS += p.Seconds
		}
	}
	r.EnrollToActiveS = round3(r.EnrollToActiveS)
	r.Heartbeats = m.hb.beats
	if w := m.hb.last.Sub(m.hb.first).Seconds(); w > 0 {
		r.HeartbeatWindowS = round3(w)
		r.HeartbeatsPerS = round3(float64(m.hb.beats) / w)
	}
	m.mu.Lock()
	lat := append([]time.Duration(nil), m.latency...)
	r.Warnings = append(r.Warnings, m.warnings...)
	if len(m.errStatus) > 0 {
		r.APIErrors = maps.Clone(m.errStatus)
	}
	m.mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r.APIRequests = len(lat)
	if len(lat) > 0 {
		r.APIP50Ms = round3(ms(lat[(len(lat)-1)*50/100]))
		r.APIP99Ms = round3(ms(lat[(len(lat)-1)*99/100]))
	}
	if !first.IsZero() {
		c0, c1 := m.markStart[benchPhases[0]].ipmi, m.markEnd[benchPhases[len(benchPhases)-1]].ipmi
		r.IPMIRequests, r.IPMISessions = c1.Requests-c0.Requests, c1.Sessions-c0.Sessions
		w := last.Sub(first).Seconds()
		// The IPMI load and the peers' runs are not the provisioning's:
		// leave them out.
		for _, p := range []string{"ipmi_load", "compare"} {
			if s, e := m.phaseStart[p], m.phaseEnd[p]; !s.IsZero() && !e.IsZero() {
				l0, l1 := m.markStart[p].ipmi, m.markEnd[p].ipmi
				r.IPMIRequests -= l1.Requests - l0.Requests
				r.IPMISessions -= l1.Sessions - l0.Sessions
				w -= e.Sub(s).Seconds()
			}
		}
		if w > 0 {
			r.IPMIRequestsPerS = round3(float64(r.IPMIRequests) / w)
			r.IPMISessionsPerS = round3(float64(r.IPMISessions) / w)
		}
	}
	if m.selfAfter.RSS > 0 {
		grow := m.selfAfter.RSS - m.selfBefore.RSS
		if m.drvAfter.RSS > 0 {
			grow += m.drvAfter.RSS - m.drvStart.RSS
		}
		r.RSSPerNodeKiB = round3(float64(grow) / float64(m.n))
		if m.selfIdle.RSS > 0 {
			idle := m.selfIdle.RSS - m.selfBefore.RSS
			if m.drvIdle.RSS > 0 {
				idle += m.drvIdle.RSS - m.drvStart.RSS
			}
			r.RSSPerIdleNodeKiB = round3(float64(idle) / float64(m.n))
		}
		r.LabPeakRSSMiB = round3(float64(m.selfAfter.HWM) / 1024)
		r.DriverPeakMiB = round3(float64(m.drvAfter.HWM) / 1024)
		r.PeakRSSMiB = round3(float64(m.selfAfter.HWM+m.drvAfter.HWM) / 1024)
	}
	if c := res.ConductorCPU; c != nil {
		r.ConductorCPUS, r.ConductorCPUPD = round3(c.CPUSeconds), round3(c.CPUSecondsPerDeploy)
	}
	r.HeartbeatLoad, r.IPMILoad, r.Compare = m.hbLoad, m.ipmiLoad, m.cmp
	r.Settings = &m.settings
	if m.scaleBase != nil {
		r.Scaling = r.scaling(m.scaleBase, m.scaleFrom)
	}
	r.Goals = r.goals()
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func round3(f float64) float64 {
	return float64(int64(f*1000+0.5)) / 1000
}

// markdown is bench.md: the phases and the figures as tables.
func (r *benchReport) markdown() string {
	var b strings.Builder
	verdict := "passed"
	if !r.Passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "# ironlab bench: %d %s nodes (%s)\n\n", r.Nodes, r.Driver, verdict)
	fmt.Fprintf(&b, "Measured %s on %s. Image: %s. Cleaning: %s.\n\n", r.MeasuredAt, r.Host, r.Image, r.Cleaning)
	b.WriteString("| phase | seconds | nodes/s | lab CPU s | driver CPU s | IPMI requests | IPMI sessions | lookups | heartbeats |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range r.Phases {
		fmt.Fprintf(&b, "| %s | %.2f | %.1f | %.2f | %.2f | %d | %d | %d | %d |\n", p.Name, p.Seconds, p.NodesPerS, p.LabCPUS, p.DriverCPUS, p.IPMIRequests, p.IPMISessions, p.Lookups, p.Heartbeats)
	}
	r.markdownScaling(&b)
	b.WriteString("\n| figure | value |\n|---|---:|\n")
	row := func(k, f string, v any) { fmt.Fprintf(&b, "| %s | "+f+" |\n", k, v) }
	row("deploy wall (first deploy request to last active)", "%.2f s", r.DeployWallS)
	row("of which sending the deploy requests", "%.2f s", r.DeployRequestsS)
	row("enroll to active (enroll + manage + provide + deploy)", "%.2f s", r.EnrollToActiveS)
	row("heartbeats recorded / s (steady state)", "%.1f", r.HeartbeatsPerS)
	row("API requests of the bench", "%d", r.APIRequests)
	row("API latency p50", "%.2f ms", r.APIP50Ms)
	row("API latency p99", "%.2f ms", r.APIP99Ms)
	for _, k := range slices.Sorted(maps.Keys(r.APIErrors)) {
		row("API answers "+k+" (retried)", "%d", r.APIErrors[k])
	}
	row("IPMI requests / s (all BMCs, whole run)", "%.1f", r.IPMIRequestsPerS)
	row("IPMI sessions / s (all BMCs, whole run)", "%.1f", r.IPMISessionsPerS)
	row("RSS per node (lab + driver growth / N, agents running)", "%.1f KiB", r.RSSPerNodeKiB)
	row("RSS per idle node (growth to after manage / N)", "%.1f KiB", r.RSSPerIdleNodeKiB)
	row("peak RSS (lab + driver VmHWM)", "%.1f MiB", r.PeakRSSMiB)
	row("conductor CPU per deploy", "%.4f s", r.ConductorCPUPD)
	r.markdownLoads(&b)
	for _, w := range r.Warnings {
		fmt.Fprintf(&b, "\nwarning: %s\n", w)
	}
	return b.String()
}

// driverCPU is the driver process's CPU time so far (GET /v1/lab/process).
func (m *benchMeter) driverCPU(ctx context.Context) (time.Duration, error) {
	if m.api == nil {
		return 0, fmt.Errorf("no meter API client")
	}
	_, s, err := m.api.Process(ctx)
	return time.Duration(s * float64(time.Second)), err
}

// selfCPU is this process's CPU time (user and system) so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
