package scenarios

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
	"github.com/ironlab/ironlab/simulator/lab/enroll"
)

// The runner, file by file: options.go (what a caller sets), run.go (the
// lifecycle: lab, driver, steps, results, cleanup), driver_start.go (the
// three ways to reach a driver), labspec.go (the scenario's lab and the
// groups this machine can run), step.go (step dispatch) with one
// step_<kind>.go per step kind and faults.go, expect.go with one
// expect_<key>.go per expectation, wait.go (the one wait loop), disk.go
// (reading a node's disk), results.go (result.json, JUnit, the summary).

// runner plays one scenario.
type runner struct {
	s      *Scenario
	opts   Options
	out    io.Writer
	log    *slog.Logger
	lab    *lab.Lab
	api    *ironic.Client
	target enroll.Target // what the nodes are enrolled into
	outMu  sync.Mutex
	uuidMu sync.RWMutex      // enroll runs on many nodes at once
	uuids  map[string]string // node name -> UUID on the driver
	result *Result

	stopDriver  func() error
	proc        *driverProcess
	conds       *conductorSet // a lab of named conductors (lab.store: postgres)
	cpuPhase    *cpuPhase
	removeState string
	background  sync.WaitGroup // faults applied later
	bgMu        sync.Mutex
	bgErr       error           // the first fault that failed in the background
	skipped     map[string]bool // groups this machine cannot run
	bgCtx       context.Context
	bgCancel    context.CancelFunc
	faults      faultLog // injected faults, for events.jsonl and the report
	writes      *imageWrites
	// driverDied ends the run's steps when a driver child process dies on
	// its own (a crash): the steps' context is cancelled with why.
	driverDied func(error)
}

// Run plays a scenario against a fresh lab and writes its results under
// opts.ResultsDir/<scenario>/. It returns an error only when the run could
// not be carried out; failed expectations are in the Result.
func Run(ctx context.Context, s *Scenario, opts Options) (*Result, error) {
	start := time.Now()
	opts = opts.withDefaults()
	if opts.Backend != "" {
		s.Lab.Backend = opts.Backend
	}
	if opts.Accel != "" {
		s.Lab.Accel = opts.Accel
	}
	if opts.PXE != "" {
		s.Lab.PXE = opts.PXE
	}
	writes := &imageWrites{n: map[string]int{}}
	handler := opts.Logger.Handler()
	labLog, fileHandler, err := openLabLog(opts, s)
	if err != nil {
		return nil, err
	}
	if labLog != nil {
		defer labLog.Close()
		handler = slog.NewMultiHandler(handler, fileHandler)
	}
	r := &runner{s: s, opts: opts, out: opts.Out, log: slog.New(countImageWrites(handler, writes)), writes: writes,
		uuids: map[string]string{}, skipped: map[string]bool{},
		result: &Result{Scenario: s.Name, File: s.File, Backend: s.Lab.Backend}}
	r.bgCtx, r.bgCancel = context.WithCancel(ctx)
	// A driver that crashes ends the steps at once, saying why, instead of
	// leaving every wait to run out its timeout against a closed port.
	stepsCtx, endSteps := context.WithCancelCause(ctx)
	r.driverDied = func(err error) {
		r.printf("   !! %v\n", err)
		endSteps(err)
	}
	err = r.run(stepsCtx)
	r.bgCancel()
	r.background.Wait()
	if err == nil {
		err = r.bgErr
	}
	r.result.DurationS = time.Since(start).Seconds()
	if err != nil {
		r.result.Error = err.Error()
	}
	r.result.Passed = err == nil && (len(r.result.Checks) > 0 || r.result.NotRun != "")
	for _, c := range r.result.Checks {
		r.result.Passed = r.result.Passed && c.Passed
	}
	if werr := r.writeResults(ctx); werr != nil && err == nil {
		err = werr
	}
	if !r.result.Passed && r.opts.ResultsDir != "" {
		r.outMu.Lock()
		printFailure(r.out, filepath.Join(r.opts.ResultsDir, r.s.Name), r.result)
		r.outMu.Unlock()
	}
	// At 10,000 nodes stopping the lab and the driver takes seconds.
	r.timed(r.cleanupWhat(), func() error { r.cleanup(); return nil })
	endSteps(nil)
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
	stateDir, err := r.stateDir()
	if err != nil {
		return err
	}
	// When the options do not say what an external driver is, ask it
	// before the lab is built (a real Ironic gets v1 agents); that client
	// is then the run's client.
	var external *ironic.Client
	if r.target = r.opts.Target; r.target == "" {
		r.target = enroll.TargetBuiltin
		if r.opts.DriverURL != "" {
			if external, err = ironic.New(ctx, r.opts.DriverURL, r.opts.HTTPClient); err != nil {
				return err
			}
			if r.target, err = detectTarget(ctx, external); err != nil {
				return err
			}
		}
	}
	if r.s.Only != "" && enroll.Target(r.s.Only) != r.target {
		r.result.NotRun = fmt.Sprintf("only for %s (%s); this run drives %s", targetWords(enroll.Target(r.s.Only)), r.s.Description, targetWords(r.target))
		r.printf("== %s: not run: %s\n", r.s.Name, r.result.NotRun)
		return nil
	}
	spec, total, err := r.labSpec(stateDir)
	if err != nil {
		return err
	}
	if r.target == enroll.TargetIronic {
		r.adaptForIronic(&spec)
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

	driverURL, err := r.startDriver(ctx, stateDir)
	if err != nil {
		return err
	}
	r.result.DriverURL = driverURL
	if err := l.Start(ctx, driverURL); err != nil {
		return err
	}
	api := external
	if api == nil {
		if api, err = ironic.New(ctx, driverURL, r.opts.HTTPClient); err != nil {
			return err
		}
	}
	r.api = api
	r.printf("   driver API %s (API %s, enrolled as %s), images at %s, agents at %s\n", driverURL, api.Version(), r.target, l.Images.Addr(), l.AgentAddr())
	if r.opts.Started != nil {
		r.opts.Started(driverURL, l)
	}
	if accel := l.Accel(); accel != "" {
		r.printf("   VMs: libvirt domains ironlab-%s-<node>, accel %s; the guests reach the driver and images at 10.0.2.2\n", r.s.Name, accel)
	}

	for i := range r.s.Steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if o := r.s.Steps[i].Only; o != "" && enroll.Target(o) != r.target {
			r.printf("[%d/%d] skipped: this step is only for %s\n", i+1, len(r.s.Steps), targetWords(enroll.Target(o)))
			continue
		}
		err := r.step(ctx, i, &r.s.Steps[i])
		if ctx.Err() != nil {
			// The step's own error is then only "context canceled".
			err = context.Cause(ctx)
		}
		if err != nil {
			return fmt.Errorf("%s:%d: step %d: %w", r.s.File, r.s.Steps[i].line, i+1, err)
		}
	}
	return nil
}

// stateDir is the folder of this scenario's lab: under opts.StateDir, or
// a temporary one removed at cleanup unless opts.KeepState.
func (r *runner) stateDir() (string, error) {
	if r.opts.StateDir != "" {
		return filepath.Join(r.opts.StateDir, r.s.Name), nil
	}
	d, err := os.MkdirTemp("", "ironlab-"+r.s.Name+"-")
	if err != nil {
		return "", fmt.Errorf("make a state folder for %s: %w", r.s.Name, err)
	}
	if !r.opts.KeepState {
		r.removeState = d
	}
	return d, nil
}

// cleanup stops the lab first (so no agent calls a stopped driver), then
// the driver, then removes a temporary state folder.
// cleanupWhat is what cleanup's progress line says it is doing.
func (r *runner) cleanupWhat() string {
	var parts []string
	if r.opts.DriverURL != "" && r.api != nil {
		parts = append(parts, "removing the nodes from "+r.opts.DriverURL)
	}
	if r.lab != nil {
		parts = append(parts, fmt.Sprintf("stopping the lab (%d nodes)", len(r.lab.Nodes())))
	}
	if r.stopDriver != nil {
		parts = append(parts, "stopping the driver")
	}
	if len(parts) == 0 {
		return "cleaning up"
	}
	return strings.Join(parts, ", ")
}

func (r *runner) cleanup() {
	r.removeExternalNodes()
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

func targetWords(t enroll.Target) string {
	if t == enroll.TargetIronic {
		return "a real Ironic"
	}
	return "ironlab's driver"
}

// removeExternalNodes deletes the nodes this scenario enrolled on an
// external driver (a real Ironic keeps them; the next scenario enrolls
// nodes of the same names, and its periodic power sync would keep asking
// BMCs that are gone). Maintenance first: Ironic deletes an active or
// failed node only in maintenance.
func (r *runner) removeExternalNodes() {
	if r.opts.DriverURL == "" || r.api == nil {
		return
	}
	r.uuidMu.RLock()
	ids := make([]string, 0, len(r.uuids))
	for _, id := range r.uuids {
		ids = append(ids, id)
	}
	r.uuidMu.RUnlock()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	removed := 0
	for _, id := range ids {
		if err := r.api.Do(ctx, http.MethodPut, "/v1/nodes/"+id+"/maintenance", map[string]any{"reason": "ironlab scenario " + r.s.Name + " ended"}, nil); err != nil {
			r.log.Warn("set maintenance before delete", "node", id, "err", err)
		}
		if err := r.api.Do(ctx, http.MethodDelete, "/v1/nodes/"+id, nil, nil); err != nil {
			r.printf("   could not remove node %s from %s: %v\n", id, r.opts.DriverURL, err)
			continue
		}
		removed++
	}
	r.printf("   removed the scenario's %d nodes from %s\n", removed, r.opts.DriverURL)
}
