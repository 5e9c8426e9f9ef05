package scenarios

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/ironlab/ironlab/simulator/lab"
)

// step plays one step: each kind's code is in its step_<kind>.go (faults
// in faults.go). A failed wait or expectation is a failed Check, not an
// error; an error ends the run.
func (r *runner) step(ctx context.Context, i int, st *Step) error {
	start := time.Now()
	if r.opts.StepHook != nil {
		r.opts.StepHook(i, start, time.Time{})
		defer func() { r.opts.StepHook(i, start, time.Now()) }()
	}
	label := fmt.Sprintf("[%d/%d]", i+1, len(r.s.Steps))
	var err error
	switch {
	case st.Enroll != nil:
		err = r.enrollStep(ctx, label, st.Enroll)
	case st.Manage != nil:
		err = r.verb(ctx, label, "manage", st.Manage.Nodes)
	case st.Provide != nil:
		err = r.verb(ctx, label, "provide", st.Provide.Nodes)
	case st.Undeploy != nil:
		err = r.verb(ctx, label, "deleted", st.Undeploy.Nodes)
	case st.Abort != nil:
		err = r.verb(ctx, label, "abort", st.Abort.Nodes)
	case st.Rescue != nil:
		err = r.rescue(ctx, label, st.Rescue)
	case st.Unrescue != nil:
		err = r.verb(ctx, label, "unrescue", st.Unrescue.Nodes)
	case st.Deploy != nil:
		r.cpuDeployStart(ctx, r.selected(st.Deploy.Nodes))
		err = r.deploy(ctx, label, st.Deploy)
	case st.Clean != nil:
		err = r.clean(ctx, label, st.Clean)
	case st.Power != nil:
		err = r.power(ctx, label, st.Power)
	case st.Fault != nil:
		err = r.fault(ctx, label, i, st.Fault)
	case st.Wait != nil && st.Wait.Event != "":
		r.waitEvent(ctx, label, i, st)
	case st.Wait != nil:
		r.waitState(ctx, label, i, st)
		if st.Wait.State == "active" {
			r.cpuDeployEnd(ctx)
		}
	case st.Expect != nil:
		r.expect(ctx, label, i, st)
	case st.VirtualMedia != nil:
		err = r.virtualMedia(ctx, label, st.VirtualMedia)
	case st.FirmwareUpdate != nil:
		err = r.firmwareUpdate(ctx, label, st.FirmwareUpdate)
	case st.Sleep != "":
		err = r.sleepStep(ctx, label, st)
	}
	if err == nil && st.Wait == nil && st.Expect == nil && st.Fault == nil {
		r.printf("%s   done in %.1fs\n", label, time.Since(start).Seconds())
	}
	return err
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

// forEachWorkers is how many nodes forEach works on at once. Each is an API
// request or two, most of their time waiting for the driver: at 16, sending
// 10,000 deploy requests took 162 s (0.26 s a request in a lab that busy)
// while the deploys they started finished behind them; a fleet's clients
// (an Ironic client's threads, metal3's controllers) have more in flight.
const forEachWorkers = 64

// forEach runs f for every node with bounded concurrency and joins errors.
func forEach(nodes []*lab.Node, f func(n *lab.Node) error) error {
	sem := make(chan struct{}, forEachWorkers)
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

// ident names a node to the driver: its UUID once enrolled, else its name.
func (r *runner) ident(n *lab.Node) string {
	if u, ok := r.enrolled(n.Name); ok {
		return u
	}
	return n.Name
}

// report adds a check to the result and prints its outcome.
func (r *runner) report(label string, c *Check) {
	r.result.Checks = append(r.result.Checks, *c)
	if c.Passed {
		r.printf("%s   PASS %s\n", label, c.Name)
		return
	}
	r.printf("%s   FAIL %s\n", label, c.Name)
	shown, more := c.FirstFailures(10)
	for _, f := range shown {
		r.printf("        %s\n", f)
	}
	if more > 0 {
		r.printf("        ... and %d more\n", more)
	}
}
