package scenarios

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/simulator/lab"
)

// DriverConfig is what a scenario asks of the built-in driver.
type DriverConfig struct {
	StateDir              string
	HeartbeatTimeout      time.Duration
	AutomatedClean        bool
	IPMIMinInterval       time.Duration
	FastTrack             bool
	WatchdogAction        string // reboot, maintenance, "" (off)
	WatchdogMaxReboots    int
	DeployCallbackTimeout time.Duration
	CleanCallbackTimeout  time.Duration
	Logger                *slog.Logger
}

// checkInterval paces the periodic tasks to the heartbeat timeout, so a
// scenario with a 4 s timeout sees the watchdog act within a second of it.
func (c DriverConfig) checkInterval() time.Duration {
	return min(time.Second, c.HeartbeatTimeout/4)
}

// ipmiInterval is the least time between ipmitool commands to one BMC;
// scenarios default to 0.5 s (Ironic's 5 s would make runs crawl).
func (c DriverConfig) ipmiInterval() time.Duration {
	if c.IPMIMinInterval == 0 {
		return 500 * time.Millisecond
	}
	return c.IPMIMinInterval
}

// StartDriver starts an in-process driver API and returns its URL and a
// function that stops it. The CLI and tests supply the built-in driver.
type StartDriver func(ctx context.Context, cfg DriverConfig) (url string, stop func() error, err error)

// Options tune a run.
type Options struct {
	// ResultsDir is where this run's results go (results/<run-id>).
	ResultsDir string
	// StateDir holds the labs' disks and databases (default: a temporary
	// folder, removed after the run unless KeepState).
	StateDir  string
	KeepState bool
	// ImageCache keeps built images across runs (default StateDir/images).
	ImageCache string
	// DriverURL targets an external driver (e.g. a real Ironic) instead of
	// the built-in one.
	DriverURL   string
	StartDriver StartDriver
	// DriverBinary is the ironlab binary, for scenarios that run the driver
	// as a child process (conductor faults); `ironlab run` sets itself.
	DriverBinary string
	// Out receives progress lines and the summary (default os.Stdout).
	Out    io.Writer
	Logger *slog.Logger
	// Backend, Accel and PXE override the scenarios' lab settings when set
	// (`ironlab run --backend libvirt --accel tcg --pxe ipxe`).
	Backend, Accel, PXE string
	// Agent timing for in-process agents; zero means fast lab defaults.
	LookupInterval        time.Duration
	HeartbeatErrorBackoff time.Duration
}

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
	// their driver needs (never under CI=true, where that is an error).
	Skipped []string `json:"skipped,omitempty"`
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
}

// runner plays one scenario.
type runner struct {
	s      *Scenario
	opts   Options
	out    io.Writer
	log    *slog.Logger
	lab    *lab.Lab
	api    *client
	outMu  sync.Mutex
	uuidMu sync.RWMutex      // enroll runs on many nodes at once
	uuids  map[string]string // node name -> UUID on the driver
	result *Result

	stopDriver  func() error
	proc        *driverProcess
	cpuPhase    *cpuPhase
	removeState string
	background  sync.WaitGroup // faults applied later
	bgMu        sync.Mutex
	bgErr       error           // the first fault that failed in the background
	skipped     map[string]bool // groups this machine cannot run
	bgCtx       context.Context
	bgCancel    context.CancelFunc
}

// Run plays a scenario against a fresh lab and writes its results under
// opts.ResultsDir/<scenario>/. It returns an error only when the run could
// not be carried out; failed expectations are in the Result.
func Run(ctx context.Context, s *Scenario, opts Options) (*Result, error) {
	start := time.Now()
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.LookupInterval == 0 {
		opts.LookupInterval = 200 * time.Millisecond
	}
	if opts.HeartbeatErrorBackoff == 0 {
		opts.HeartbeatErrorBackoff = 300 * time.Millisecond
	}
	if opts.Backend != "" {
		s.Lab.Backend = opts.Backend
	}
	if opts.Accel != "" {
		s.Lab.Accel = opts.Accel
	}
	if opts.PXE != "" {
		s.Lab.PXE = opts.PXE
	}
	r := &runner{s: s, opts: opts, out: opts.Out, log: opts.Logger, uuids: map[string]string{}, skipped: map[string]bool{},
		result: &Result{Scenario: s.Name, File: s.File, Backend: s.Lab.Backend}}
	r.bgCtx, r.bgCancel = context.WithCancel(ctx)
	err := r.run(ctx)
	r.bgCancel()
	r.background.Wait()
	if err == nil {
		err = r.bgErr
	}
	r.result.DurationS = time.Since(start).Seconds()
	if err != nil {
		r.result.Error = err.Error()
	}
	r.result.Passed = err == nil && len(r.result.Checks) > 0
	for _, c := range r.result.Checks {
		r.result.Passed = r.result.Passed && c.Passed
	}
	if werr := r.writeResults(ctx); werr != nil && err == nil {
		err = werr
	}
	r.cleanup()
	return r.result, err
}

// printf writes a progress line; background faults print too.
func (r *runner) printf(format string, a ...any) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	fmt.Fprintf(r.out, format, a...)
}

func (r *runner) run(ctx context.Context) error {
	if err := checkBackendFaults(r.s); err != nil {
		return err
	}
	stateDir := r.opts.StateDir
	if stateDir == "" {
		d, err := os.MkdirTemp("", "ironlab-"+r.s.Name+"-")
		if err != nil {
			return err
		}
		stateDir = d
		if !r.opts.KeepState {
			r.removeState = d
		}
	} else {
		stateDir = filepath.Join(stateDir, r.s.Name)
	}
	spec := LabSpec(r.s)
	spec.StateDir, spec.ImageDir, spec.Logger = stateDir, r.opts.ImageCache, r.log
	spec.LookupInterval, spec.HeartbeatErrorBackoff = r.opts.LookupInterval, r.opts.HeartbeatErrorBackoff
	spec.ForcedHeartbeatGap = 200 * time.Millisecond
	spec.Libvirt.Progress = r.out
	groups := spec.Groups
	spec.Groups = nil
	total := 0
	for _, g := range groups {
		if why := vmUnsupported(g.Driver); why != "" && spec.Backend == "libvirt" {
			return fmt.Errorf("group %s: %s", g.Name, why)
		}
		if why := missingTool(g.Driver); why != "" {
			if os.Getenv("CI") == "true" {
				return fmt.Errorf("group %s (%s): %s", g.Name, g.Driver, why)
			}
			r.printf("!! skipping group %s (%d %s nodes): %s\n", g.Name, g.Count, g.Driver, why)
			r.result.Skipped = append(r.result.Skipped, fmt.Sprintf("%s: %s", g.Name, why))
			r.skipped[g.Name] = true
			continue
		}
		spec.Groups = append(spec.Groups, g)
		total += g.Count
	}
	r.printf("== %s: %d nodes on the %s backend (%s)\n", r.s.Name, total, r.s.Lab.Backend, r.s.File)
	l, err := lab.New(spec)
	if err != nil {
		return err
	}
	r.lab = l
	r.result.Accel = l.Accel()
	if err := r.checkFaults(); err != nil {
		return err
	}

	driverURL := r.opts.DriverURL
	if driverURL == "" {
		cfg := DriverConfig{
			StateDir: stateDir, HeartbeatTimeout: r.s.Lab.heartbeatTimeout, AutomatedClean: true,
			IPMIMinInterval: r.s.Lab.ipmiMinInterval, FastTrack: r.s.Lab.FastTrack,
			WatchdogAction: r.s.Lab.WatchdogAction, WatchdogMaxReboots: r.s.Lab.WatchdogMaxReboots,
			DeployCallbackTimeout: r.s.Lab.deployCallbackTimeout, CleanCallbackTimeout: r.s.Lab.cleanCallbackTimeout,
			Logger: r.log,
		}
		if r.s.Lab.AutomatedClean != nil {
			cfg.AutomatedClean = *r.s.Lab.AutomatedClean
		}
		if cfg.WatchdogAction == "off" {
			cfg.WatchdogAction = ""
		}
		if cfg.WatchdogMaxReboots == 0 {
			cfg.WatchdogMaxReboots = 3
		}
		switch {
		case r.s.needsDriverProcess():
			if r.opts.DriverBinary == "" {
				return errors.New("this scenario runs the driver as a child process (lab.driver_process or a conductor fault): give the ironlab binary (ironlab run does)")
			}
			p, err := startDriverProcess(ctx, r.opts.DriverBinary, cfg)
			if err != nil {
				return err
			}
			r.proc = p
			r.stopDriver = p.stop
			driverURL = p.url
			r.printf("   driver runs as process %d (log %s)\n", p.cmd.Process.Pid, p.log)
		case r.opts.StartDriver != nil:
			url, stop, err := r.opts.StartDriver(ctx, cfg)
			if err != nil {
				return fmt.Errorf("start the driver: %w", err)
			}
			r.stopDriver = stop
			driverURL = url
		default:
			return errors.New("no driver: give a driver URL or a built-in driver")
		}
	}
	r.result.DriverURL = driverURL
	if err := l.Start(ctx, driverURL); err != nil {
		return err
	}
	api, err := newClient(ctx, driverURL)
	if err != nil {
		return err
	}
	r.api = api
	r.printf("   driver API %s (API %s), images at %s, agents at %s\n", driverURL, api.version, l.Images.Addr(), l.AgentAddr())
	if accel := l.Accel(); accel != "" {
		r.printf("   VMs: libvirt domains ironlab-%s-<node>, accel %s; the guests reach the driver and images at 10.0.2.2\n", r.s.Name, accel)
	}

	for i := range r.s.Steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.step(ctx, i, &r.s.Steps[i]); err != nil {
			return fmt.Errorf("%s:%d: step %d: %w", r.s.File, r.s.Steps[i].line, i+1, err)
		}
	}
	return nil
}

// needsDriverProcess says whether the scenario kills the conductor.
func (s *Scenario) needsDriverProcess() bool {
	if s.Lab.DriverProcess {
		return true
	}
	for _, st := range s.Steps {
		if st.Fault != nil && st.Fault.Conductor != nil {
			return true
		}
	}
	return false
}

// LabSpec is the lab a scenario describes (state folders, logging and
// agent timing are the caller's to add).
func LabSpec(s *Scenario) lab.Spec {
	spec := lab.Spec{
		Name: s.Name, Seed: s.Seed, Backend: s.Lab.Backend,
		BMCAddressing: s.Lab.BMCAddressing, BMCBasePort: s.Lab.BMCBasePort,
		Libvirt: vmSpec(s),
	}
	for _, im := range s.Lab.Images {
		spec.Images = append(spec.Images, images.Spec{ID: im.ID, Size: im.size})
	}
	for _, g := range s.Lab.Groups {
		spec.Groups = append(spec.Groups, lab.GroupSpec{
			Name: g.Name, Count: g.Count, Driver: g.Driver, Dialect: g.Dialect, CPUs: g.CPUs,
			MemoryMB: g.MemoryMB, DiskSize: g.diskSize, BootMode: g.BootMode,
			BMCUser: g.BMCUser, BMCPassword: g.BMCPassword, SecureErase: g.SecureErase, POSTTime: g.postTime,
		})
	}
	return spec
}

// missingTool says why a driver class cannot run on this machine, if it cannot.
func missingTool(driver string) string {
	if strings.HasSuffix(driver, "_ipmitool") {
		if _, err := exec.LookPath("ipmitool"); err != nil {
			return "ipmitool is not installed (apt-get install ipmitool, or run make test as root)"
		}
	}
	return ""
}

// selected resolves a selector to lab nodes: group names and node names;
// none selects every node.
func (r *runner) selected(sel []string) []*lab.Node {
	if len(sel) == 0 {
		return r.lab.Nodes()
	}
	want := map[string]bool{}
	for _, s := range sel {
		want[s] = true
	}
	var out []*lab.Node
	for _, n := range r.lab.Nodes() {
		if want[n.Group] || want[n.Name] {
			out = append(out, n)
		}
	}
	return out
}

// forEach runs f for every node with bounded concurrency and joins errors.
func forEach(nodes []*lab.Node, f func(n *lab.Node) error) error {
	sem := make(chan struct{}, 16)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(n); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

func (r *runner) step(ctx context.Context, i int, st *Step) error {
	start := time.Now()
	label := fmt.Sprintf("[%d/%d]", i+1, len(r.s.Steps))
	var err error
	switch {
	case st.Enroll != nil:
		nodes := r.selected(st.Enroll.Nodes)
		r.printf("%s enroll %d nodes\n", label, len(nodes))
		err = forEach(nodes, func(n *lab.Node) error { return r.enroll(ctx, n) })
	case st.Manage != nil:
		err = r.verb(ctx, label, "manage", st.Manage.Nodes)
	case st.Provide != nil:
		err = r.verb(ctx, label, "provide", st.Provide.Nodes)
	case st.Undeploy != nil:
		err = r.verb(ctx, label, "deleted", st.Undeploy.Nodes)
	case st.Deploy != nil:
		r.cpuDeployStart(r.selected(st.Deploy.Nodes))
		err = r.deploy(ctx, label, st.Deploy)
	case st.Clean != nil:
		nodes := r.selected(st.Clean.Nodes)
		r.printf("%s clean %d nodes: %s\n", label, len(nodes), stepNames(st.Clean.Steps))
		err = forEach(nodes, func(n *lab.Node) error {
			return r.sendVerbBody(ctx, n, map[string]any{"target": "clean", "clean_steps": st.Clean.Steps})
		})
	case st.Abort != nil:
		err = r.verb(ctx, label, "abort", st.Abort.Nodes)
	case st.Power != nil:
		nodes := r.selected(st.Power.Nodes)
		r.printf("%s %s %d nodes\n", label, st.Power.Target, len(nodes))
		err = forEach(nodes, func(n *lab.Node) error {
			return r.api.do(ctx, http.MethodPut, "/v1/nodes/"+r.ident(n)+"/states/power", map[string]any{"target": st.Power.Target}, nil)
		})
	case st.Fault != nil:
		err = r.fault(ctx, label, i, st.Fault)
	case st.Wait != nil && st.Wait.Event != "":
		r.waitEvent(ctx, label, i, st)
	case st.Wait != nil:
		r.wait(ctx, label, i, st)
		if st.Wait.State == "active" {
			r.cpuDeployEnd()
		}
	case st.Expect != nil:
		r.expect(ctx, label, i, st)
	case st.Sleep != "":
		r.printf("%s sleep %s\n", label, st.sleep)
		select {
		case <-time.After(st.sleep):
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err == nil && st.Wait == nil && st.Expect == nil && st.Fault == nil {
		r.printf("%s   done in %.1fs\n", label, time.Since(start).Seconds())
	}
	return err
}

func (r *runner) enroll(ctx context.Context, n *lab.Node) error {
	body := map[string]any{
		"name": n.Name, "uuid": n.UUID, "driver": n.Driver,
		"driver_info": n.DriverInfo(), "properties": n.Properties(),
	}
	got, err := r.api.createNode(ctx, body)
	if err != nil {
		return err
	}
	r.setUUID(n.Name, got.UUID)
	for _, mac := range n.MACs {
		if err := r.api.createPort(ctx, got.UUID, mac); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) setUUID(name, uuid string) {
	r.uuidMu.Lock()
	r.uuids[name] = uuid
	r.uuidMu.Unlock()
}

// enrolled is the node's UUID on the driver, if the run enrolled it.
func (r *runner) enrolled(name string) (string, bool) {
	r.uuidMu.RLock()
	defer r.uuidMu.RUnlock()
	u, ok := r.uuids[name]
	return u, ok
}

func (r *runner) ident(n *lab.Node) string {
	if u, ok := r.enrolled(n.Name); ok {
		return u
	}
	return n.Name
}

// verb sends a provision verb to each selected node, once the node has
// settled (no target state) and is not locked.
func (r *runner) verb(ctx context.Context, label, target string, sel []string) error {
	nodes := r.selected(sel)
	r.printf("%s %s %d nodes\n", label, target, len(nodes))
	return forEach(nodes, func(n *lab.Node) error { return r.sendVerb(ctx, n, target) })
}

func (r *runner) sendVerb(ctx context.Context, n *lab.Node, target string) error {
	return r.sendVerbBody(ctx, n, map[string]any{"target": target})
}

// sendVerbBody sends a provision request once the node has settled (no
// target state; abort goes to nodes that wait) and is not locked.
func (r *runner) sendVerbBody(ctx context.Context, n *lab.Node, body map[string]any) error {
	deadline := time.Now().Add(60 * time.Second)
	abort := body["target"] == "abort"
	for {
		node, err := r.api.node(ctx, r.ident(n))
		if err != nil {
			return err
		}
		if abort || node.settled() || time.Now().After(deadline) {
			err = r.api.provisionBody(ctx, r.ident(n), body)
			var ae *apiError
			if errors.As(err, &ae) && ae.Status == 409 && time.Now().Before(deadline) {
				// Locked: the conductor is still busy with the node.
			} else {
				return err
			}
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func stepNames(steps []CleanStep) string {
	var names []string
	for _, s := range steps {
		names = append(names, s.Step)
	}
	return strings.Join(names, ", ")
}

func (r *runner) deploy(ctx context.Context, label string, d *Deploy) error {
	info, ok := r.lab.Images.Info(d.Image)
	if !ok {
		return fmt.Errorf("image %s is not served", d.Image)
	}
	nodes := r.selected(d.Nodes)
	r.printf("%s deploy image %s (%d MiB) to %d nodes\n", label, d.Image, info.Size>>20, len(nodes))
	var ops []map[string]any
	if d.Checksum == "md5" {
		ops = append(ops, map[string]any{"op": "add", "path": "/instance_info/image_checksum", "value": info.MD5})
	} else {
		ops = append(ops,
			map[string]any{"op": "add", "path": "/instance_info/image_os_hash_algo", "value": "sha256"},
			map[string]any{"op": "add", "path": "/instance_info/image_os_hash_value", "value": info.SHA256})
	}
	return forEach(nodes, func(n *lab.Node) error {
		// The image URL as whoever downloads it sees it (the conductor for PXE).
		src := map[string]any{"op": "add", "path": "/instance_info/image_source", "value": r.lab.ImageURLFor(n, d.Image)}
		if err := r.api.patch(ctx, r.ident(n), append([]map[string]any{src}, ops...)); err != nil {
			return err
		}
		return r.sendVerb(ctx, n, "active")
	})
}

// failedStates end a wait early: the node will not move on by itself.
var failedStates = map[string]bool{"deploy failed": true, "clean failed": true, "enroll": true}

func (r *runner) wait(ctx context.Context, label string, i int, st *Step) {
	w := st.Wait
	nodes := r.selected(w.Nodes)
	start := time.Now()
	r.printf("%s wait for %d nodes to reach %q (timeout %s)\n", label, len(nodes), w.State, w.timeout)
	deadline := start.Add(w.timeout)
	check := Check{Name: fmt.Sprintf("step %d: wait for %s", i+1, w.State), Step: i + 1, Line: st.line}
	lastLine := ""
	var byName map[string]apiNode
	for {
		all, err := r.api.nodes(ctx)
		if err == nil {
			byName = map[string]apiNode{}
			for _, n := range all {
				byName[n.Name] = n
			}
		}
		reached, stuck := 0, 0
		counts := map[string]int{}
		for _, n := range nodes {
			an, ok := byName[n.Name]
			if !ok {
				continue
			}
			counts[an.ProvisionState]++
			if an.ProvisionState == w.State && an.settled() {
				reached++
			} else if failedStates[an.ProvisionState] && an.settled() {
				stuck++
			}
		}
		line := fmt.Sprintf("%s   %d/%d %s  (%s)", label, reached, len(nodes), w.State, stateCounts(counts))
		if line != lastLine {
			r.printf("%s  %.1fs\n", line, time.Since(start).Seconds())
			lastLine = line
		}
		if reached+stuck == len(nodes) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, n := range nodes {
		an := byName[n.Name]
		if an.ProvisionState != w.State {
			msg := fmt.Sprintf("%s: in %q, not %q", n.Name, an.ProvisionState, w.State)
			if e := an.lastError(); e != "" {
				msg += ": last_error: " + e
			}
			check.Failures = append(check.Failures, msg)
		}
	}
	check.Passed = len(check.Failures) == 0
	check.DurationS = time.Since(start).Seconds()
	r.report(label, &check)
}

// waitEvent waits until every selected node has recorded the event.
func (r *runner) waitEvent(ctx context.Context, label string, i int, st *Step) {
	w := st.Wait
	nodes := r.selected(w.Nodes)
	start := time.Now()
	r.printf("%s wait for %d nodes to record %q (timeout %s)\n", label, len(nodes), w.Event, w.timeout)
	check := Check{Name: fmt.Sprintf("step %d: wait for event %s", i+1, w.Event), Step: i + 1, Line: st.line}
	seen := map[string]bool{}
	last := -1
	for time.Since(start) < w.timeout && ctx.Err() == nil {
		for _, n := range nodes {
			if !seen[n.Name] && r.hasEvent(ctx, n, w.Event) {
				seen[n.Name] = true
			}
		}
		if len(seen) != last {
			r.printf("%s   %d/%d recorded %q  %.1fs\n", label, len(seen), len(nodes), w.Event, time.Since(start).Seconds())
			last = len(seen)
		}
		if len(seen) == len(nodes) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	for _, n := range nodes {
		if !seen[n.Name] {
			check.Failures = append(check.Failures, fmt.Sprintf("%s: no %q event within %s", n.Name, w.Event, w.timeout))
		}
	}
	check.Passed = len(check.Failures) == 0
	check.DurationS = time.Since(start).Seconds()
	r.report(label, &check)
}

func (r *runner) hasEvent(ctx context.Context, n *lab.Node, name string) bool {
	evs, err := r.api.events(ctx, r.ident(n))
	if err != nil {
		return false
	}
	for _, ev := range evs {
		var m struct {
			Event string `json:"event"`
		}
		if json.Unmarshal(ev, &m) == nil && m.Event == name {
			return true
		}
	}
	return false
}

func stateCounts(c map[string]int) string {
	var parts []string
	for s, n := range c {
		parts = append(parts, fmt.Sprintf("%s: %d", s, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func (r *runner) report(label string, c *Check) {
	r.result.Checks = append(r.result.Checks, *c)
	if c.Passed {
		r.printf("%s   PASS %s\n", label, c.Name)
		return
	}
	r.printf("%s   FAIL %s\n", label, c.Name)
	for i, f := range c.Failures {
		if i == 10 {
			r.printf("        ... and %d more\n", len(c.Failures)-10)
			break
		}
		r.printf("        %s\n", f)
	}
}

func (r *runner) expect(ctx context.Context, label string, i int, st *Step) {
	e := st.Expect
	nodes := r.selected(e.Nodes)
	r.printf("%s expect on %d nodes\n", label, len(nodes))
	all, err := r.api.nodes(ctx)
	byName := map[string]apiNode{}
	for _, n := range all {
		byName[n.Name] = n
	}
	clause := func(name string, f func(n *lab.Node, an apiNode) string) {
		start := time.Now()
		c := Check{Name: fmt.Sprintf("step %d: expect %s", i+1, name), Step: i + 1, Line: st.line}
		if err != nil {
			c.Failures = append(c.Failures, "list nodes: "+err.Error())
		}
		var mu sync.Mutex
		forEach(nodes, func(n *lab.Node) error {
			an, ok := byName[n.Name]
			msg := ""
			if !ok {
				msg = "not enrolled on the driver"
			} else {
				msg = f(n, an)
			}
			if msg != "" {
				mu.Lock()
				c.Failures = append(c.Failures, n.Name+": "+msg)
				mu.Unlock()
			}
			return nil
		})
		sort.Strings(c.Failures)
		c.Passed = len(c.Failures) == 0
		c.DurationS = time.Since(start).Seconds()
		r.report(label, &c)
	}
	if e.State != "" {
		clause("state "+e.State, func(_ *lab.Node, an apiNode) string {
			if an.ProvisionState != e.State {
				return fmt.Sprintf("provision_state %q", an.ProvisionState)
			}
			return ""
		})
	}
	if e.Power != "" {
		clause("power "+e.Power, func(_ *lab.Node, an apiNode) string {
			if an.power() != e.Power {
				return fmt.Sprintf("power_state %q", an.power())
			}
			return ""
		})
	}
	if e.LastError != nil {
		want := *e.LastError
		name := "last_error empty"
		if want != "" {
			name = fmt.Sprintf("last_error contains %q", want)
		}
		clause(name, func(_ *lab.Node, an apiNode) string {
			got := an.lastError()
			if want == "" && got != "" || want != "" && !strings.Contains(got, want) {
				return fmt.Sprintf("last_error %q", got)
			}
			return ""
		})
	}
	if e.Maintenance != nil {
		clause(fmt.Sprintf("maintenance %v", *e.Maintenance), func(_ *lab.Node, an apiNode) string {
			if an.Maintenance != *e.Maintenance {
				return fmt.Sprintf("maintenance %v", an.Maintenance)
			}
			return ""
		})
	}
	if e.DiskImage != "" {
		clause("disk holds image "+e.DiskImage, func(n *lab.Node, _ apiNode) string {
			return verifyDisk(n.DiskPath(), e.DiskImage)
		})
	}
	if e.MaintenanceReason != "" {
		clause(fmt.Sprintf("maintenance_reason contains %q", e.MaintenanceReason), func(_ *lab.Node, an apiNode) string {
			if !strings.Contains(an.maintenanceReason(), e.MaintenanceReason) {
				return fmt.Sprintf("maintenance_reason %q", an.maintenanceReason())
			}
			return ""
		})
	}
	if e.DiskZeroed {
		clause("disk zeroed", func(n *lab.Node, _ apiNode) string {
			return checkZero(n.DiskPath(), 0, -1)
		})
	}
	if e.DiskMetadataErased {
		clause("disk metadata erased", func(n *lab.Node, _ apiNode) string {
			if msg := checkZero(n.DiskPath(), 0, 1<<20); msg != "" {
				return "first MiB: " + msg
			}
			if msg := checkZero(n.DiskPath(), -(1 << 20), 1<<20); msg != "" {
				return "last MiB: " + msg
			}
			return ""
		})
	}
	if e.BIOSVersion != "" {
		clause("bios_version "+e.BIOSVersion, func(n *lab.Node, _ apiNode) string {
			if got := n.Machine.Hardware().BIOSVersion; got != e.BIOSVersion {
				return fmt.Sprintf("the inventory says BIOS version %q", got)
			}
			return ""
		})
	}
	if len(e.BIOSSettings) > 0 {
		clause(fmt.Sprintf("bios_settings %v", e.BIOSSettings), func(n *lab.Node, _ apiNode) string {
			got := n.Machine.Hardware().BIOSSettings
			var bad []string
			for k, v := range e.BIOSSettings {
				if got[k] != v {
					bad = append(bad, fmt.Sprintf("%s=%q", k, got[k]))
				}
			}
			if len(bad) > 0 {
				sort.Strings(bad)
				return "the inventory says " + strings.Join(bad, ", ")
			}
			return ""
		})
	}
	if e.HeartbeatWithin != "" {
		clause("agent heartbeat within "+e.HeartbeatWithin, func(_ *lab.Node, an apiNode) string {
			t, ok := an.lastHeartbeat()
			if !ok {
				return "no agent_last_heartbeat recorded"
			}
			// agent_last_heartbeat has one-second resolution.
			if age := time.Since(t); age > e.heartbeatWithin+time.Second {
				return fmt.Sprintf("last heartbeat %.1fs ago", age.Seconds())
			}
			return ""
		})
	}
	if e.Event != "" {
		clause(fmt.Sprintf("event %q in the history", e.Event), func(n *lab.Node, _ apiNode) string {
			if !r.hasEvent(ctx, n, e.Event) {
				return fmt.Sprintf("no event %q in the node's history", e.Event)
			}
			return ""
		})
	}
	if e.HistoryContains != "" {
		clause(fmt.Sprintf("history contains %q", e.HistoryContains), func(n *lab.Node, _ apiNode) string {
			evs, err := r.api.events(ctx, r.ident(n))
			if err != nil {
				return "events: " + err.Error()
			}
			for _, ev := range evs {
				if strings.Contains(string(ev), e.HistoryContains) {
					return ""
				}
			}
			return fmt.Sprintf("none of the node's %d events contains %q", len(evs), e.HistoryContains)
		})
	}
	if e.BootedImage != "" {
		info, _ := r.lab.Images.Info(e.BootedImage)
		clause("booted image "+e.BootedImage, func(n *lab.Node, _ apiNode) string {
			// A node is active once its BMC has powered it on; a VM then
			// still boots for a moment (its BMC answers before the domain
			// runs, as a real BMC does): give its console bootWait.
			deadline := time.Now().Add(bootWait)
			for {
				log, err := sinceBoot(n.Machine)
				if err != nil {
					return "console: " + err.Error()
				}
				if strings.Contains(log, info.Marker()) {
					return ""
				}
				if time.Now().After(deadline) {
					return fmt.Sprintf("the console since the last boot lacks %q (waited %s)", info.Marker(), bootWait)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

// bootWait bounds how long expect booted_image waits for a machine that
// was just powered on to print its image's marker.
const bootWait = 30 * time.Second

// lastBoot is the console output since the machine last booted.
func lastBoot(log string) string {
	if i := strings.LastIndex(log, "ironlab fake BIOS: boot"); i >= 0 {
		return log[i:]
	}
	return log
}

// checkZero reads n bytes at off (off < 0: from the end; n < 0: to the
// end) and says where the first non-zero byte is, if any.
func checkZero(path string, off, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "open disk: " + err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	if off < 0 {
		off += st.Size()
	}
	if n < 0 || off+n > st.Size() {
		n = st.Size() - off
	}
	buf := make([]byte, 1<<20)
	for pos := off; pos < off+n; {
		m := min(int64(len(buf)), off+n-pos)
		if _, err := f.ReadAt(buf[:m], pos); err != nil {
			return err.Error()
		}
		for i, b := range buf[:m] {
			if b != 0 {
				return fmt.Sprintf("byte %d is 0x%02x, not zero", pos+int64(i), b)
			}
		}
		pos += m
	}
	return ""
}

func verifyDisk(path, id string) string {
	f, err := os.Open(path)
	if err != nil {
		return "open disk: " + err.Error()
	}
	defer f.Close()
	h, err := images.Verify(f)
	if err != nil {
		return err.Error()
	}
	if h.ID != id {
		return fmt.Sprintf("disk holds image %s, not %s", h.ID, id)
	}
	return ""
}

// cleanup stops the lab first (so no agent calls a stopped driver), then
// the driver, then removes a temporary state folder.
func (r *runner) cleanup() {
	if r.lab != nil {
		r.lab.Close()
	}
	if r.stopDriver != nil {
		if err := r.stopDriver(); err != nil {
			r.log.Warn("stop driver", "err", err)
		}
	}
	if r.removeState != "" {
		os.RemoveAll(r.removeState)
	}
}
