package scenarios

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/lab"
)

// fault applies a fault step: at once, or in the background after a delay
// or after a number of events per node.
func (r *runner) fault(ctx context.Context, label string, i int, f *Fault) error {
	nodes := r.selected(f.Nodes)
	what := faultSummary(f)
	if f.Conductor != nil {
		r.snapshotConductors(ctx)
	}
	// A fault that fails in the background fails the run, naming its step.
	at := fmt.Sprintf("%s:%d: step %d: fault", r.s.File, r.s.Steps[i].line, i+1)
	switch {
	case f.after > 0:
		r.printf("%s fault %s on %d nodes in %s\n", label, what, len(nodes), f.after)
		r.goBackground(func(ctx context.Context) {
			if sleep(ctx, f.after) != nil {
				return
			}
			if err := r.applyFault(ctx, f, nodes); err != nil {
				r.printf("%s   fault failed: %v\n", label, err)
				r.backgroundFailed(fmt.Errorf("%s: %w", at, err))
			}
		})
		return nil
	case f.AfterEvents > 0:
		r.printf("%s fault %s on %d nodes after %d more events each\n", label, what, len(nodes), f.AfterEvents)
		for _, n := range nodes {
			base := r.eventCount(ctx, n)
			r.goBackground(func(ctx context.Context) {
				if poll(ctx, 100*time.Millisecond, 0, func(ctx context.Context) bool {
					return r.eventCount(ctx, n) >= base+f.AfterEvents
				}) != nil {
					return
				}
				if err := r.applyFault(ctx, f, []*lab.Node{n}); err != nil {
					r.printf("%s   fault on %s failed: %v\n", label, n.Name, err)
					r.backgroundFailed(fmt.Errorf("%s: %w", at, err))
				}
			})
		}
		return nil
	}
	r.printf("%s fault %s on %d nodes\n", label, what, len(nodes))
	return r.applyFault(ctx, f, nodes)
}

func faultSummary(f *Fault) string {
	var parts []string
	if f.Agent != nil {
		parts = append(parts, "agent")
	}
	if f.Machine != nil {
		parts = append(parts, "machine")
	}
	if f.Redfish != nil {
		parts = append(parts, "redfish")
	}
	if f.BMC != nil {
		parts = append(parts, "bmc")
	}
	if f.Image != nil {
		parts = append(parts, "image "+f.Image.ID)
	}
	if c := f.Conductor; c != nil {
		what := "conductor " + c.Name
		if c.Name == "" {
			what = "conductor"
		}
		switch {
		case c.Join:
			what += " join"
		case c.pause > 0:
			what += " pause " + c.pause.String()
		default:
			what += " kill"
		}
		if c.KillAt != "" {
			what += " at " + c.KillAt
		}
		parts = append(parts, what)
	}
	return strings.Join(parts, "+")
}

// goBackground runs f until the scenario ends.
func (r *runner) goBackground(f func(ctx context.Context)) {
	r.background.Add(1)
	go func() {
		defer r.background.Done()
		f(r.bgCtx)
	}()
}

func (r *runner) eventCount(ctx context.Context, n *lab.Node) int {
	evs, err := r.api.Events(ctx, r.ident(n))
	if err != nil {
		return 0
	}
	return len(evs)
}

func (r *runner) applyFault(ctx context.Context, f *Fault, nodes []*lab.Node) error {
	r.faults.mark(f, nodes)
	if f.Image != nil {
		r.lab.Images.SetFaults(f.Image.ID, f.Image.Faults)
	}
	for _, n := range nodes {
		if f.Agent != nil {
			if err := n.SetAgentFaults(*f.Agent, !f.UntilReboot); err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
		}
		if f.Machine != nil {
			m, ok := n.Machine.(simulator.FaultInjector)
			if !ok {
				return fmt.Errorf("node %s: %w", n.Name, errNoMachineFaults)
			}
			m.SetFaults(*f.Machine)
		}
		if f.BMC != nil {
			if n.BMC == nil {
				return fmt.Errorf("node %s (%s) has no BMC", n.Name, n.Driver)
			}
			n.BMC.SetFaults(*f.BMC)
		}
		if f.Redfish != nil {
			if n.Redfish == nil {
				return fmt.Errorf("node %s (%s) has no Redfish BMC", n.Name, n.Driver)
			}
			if err := n.Redfish.SetFaults(*f.Redfish); err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
		}
	}
	if c := f.Conductor; c != nil {
		if c.KillAt == "" {
			return r.conductorFault(ctx, c, "now")
		}
		r.goBackground(func(ctx context.Context) {
			// A scenario may end while the restarted conductor's
			// readiness poll is still in flight (its steps already saw
			// the API answer): that cancel is no failure.
			if err := r.killWhen(ctx, c, nodes); err != nil && ctx.Err() == nil {
				r.printf("   !! conductor fault failed: %v\n", err)
				r.backgroundFailed(fmt.Errorf("conductor fault (%s at %s): %w", faultSummary(f), c.KillAt, err))
			}
		})
	}
	return nil
}

// killWhen kills the conductor once a node reaches the named state or
// records an event of that name.
func (r *runner) killWhen(ctx context.Context, c *ConductorFault, nodes []*lab.Node) error {
	var why string
	if poll(ctx, 50*time.Millisecond, 0, func(ctx context.Context) bool {
		why = r.killReason(ctx, c, nodes)
		return why != ""
	}) != nil {
		return nil // the scenario ended first
	}
	return r.conductorFault(ctx, c, why)
}

// killReason says which node reached the kill_at state or recorded the
// kill_at event, if one did; for a named conductor (not joining), only
// the nodes it services count.
func (r *runner) killReason(ctx context.Context, c *ConductorFault, nodes []*lab.Node) string {
	all, err := r.api.Nodes(ctx)
	if err != nil {
		return ""
	}
	serviced := func(name string) bool { return true }
	whose := ""
	if c.Name != "" && !c.Join {
		owner := map[string]string{}
		for _, an := range all {
			if an.Conductor != nil {
				owner[an.Name] = *an.Conductor
			}
		}
		serviced = func(name string) bool { return owner[name] == c.Name }
		whose = " (serviced by " + c.Name + ")"
	}
	for _, an := range all {
		if contains(nodes, an.Name) && serviced(an.Name) && an.ProvisionState == c.KillAt {
			return an.Name + whose + " reached " + c.KillAt
		}
	}
	if provision[c.KillAt] {
		return ""
	}
	for _, n := range nodes {
		if !serviced(n.Name) {
			continue
		}
		evs, _ := r.api.Events(ctx, r.ident(n))
		for _, ev := range evs {
			if strings.Contains(string(ev), `"event":"`+c.KillAt+`"`) {
				return n.Name + whose + " recorded " + c.KillAt
			}
		}
	}
	return ""
}

func contains(nodes []*lab.Node, name string) bool {
	for _, n := range nodes {
		if n.Name == name {
			return true
		}
	}
	return false
}

// backgroundFailed records the first error of something the scenario left
// running (a delayed fault): Run returns it.
func (r *runner) backgroundFailed(err error) {
	r.bgMu.Lock()
	defer r.bgMu.Unlock()
	if r.bgErr == nil {
		r.bgErr = err
	}
}

var errNoMachineFaults = errors.New("machine faults need a machine that takes them (the fake backend's): this backend's power and boot are real")

// checkFaults makes every fault step that cannot apply to this lab an
// error before the first step runs, naming the step and the node: a
// selector that finds no node, a machine fault on a machine without the
// knobs, BMC faults on a node without a BMC, agent faults the backend
// cannot deliver, a conductor fault without a conductor to kill.
func (r *runner) checkFaults() error {
	var errs []error
	for i, st := range r.s.Steps {
		f := st.Fault
		if f == nil {
			continue
		}
		at := fmt.Sprintf("%s:%d: step %d: fault", r.s.File, st.line, i+1)
		if f.Agent != nil || f.Machine != nil || f.BMC != nil {
			for _, sel := range f.Nodes {
				if len(r.selected([]string{sel})) > 0 {
					continue
				}
				if g := groupOf(r.s, sel); g != "" && r.skipped[g] {
					r.printf("!! %s on %s: group %s is skipped, so is this fault there\n", at, sel, g)
					continue
				}
				errs = append(errs, fmt.Errorf("%s: no node %q in the lab", at, sel))
			}
		}
		for _, n := range r.selected(f.Nodes) {
			if err := faultApplies(f, n); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", at, err))
			}
		}
		if f.Conductor != nil && r.opts.DriverURL != "" {
			errs = append(errs, fmt.Errorf("%s: a conductor fault kills the built-in driver's process; this run drives %s", at, r.opts.DriverURL))
		}
	}
	return errors.Join(errs...)
}

// faultOnBackend says which field of f the backend cannot deliver to
// group g, and why, if any: the check at parse time and, with the backend
// a run chose, before a run.
func faultOnBackend(f *Fault, backend string, g Group) (field, why string) {
	if backend != "libvirt" {
		return "", ""
	}
	switch {
	case f.Machine != nil:
		return "machine", "machine faults need the fake backend: a VM's power and boot are QEMU's"
	case f.Agent != nil && f.UntilReboot:
		return "until_reboot", "until_reboot needs the fake backend: the libvirt backend cannot reach a running guest's agent, it puts faults on every later boot's command line"
	case f.Agent != nil && g.Deploy == string(lab.DeployPXE):
		return "agent", fmt.Sprintf("agent faults on the libvirt backend go on the agent ramdisk's command line, which the PXE driver writes on %s", g.Driver)
	}
	return "", ""
}

// checkBackendFaults fails a run whose chosen backend cannot deliver a
// fault the scenario file asks for, naming the step, before the lab is built.
func checkBackendFaults(s *Scenario) error {
	var errs []error
	for i, st := range s.Steps {
		if st.Fault == nil {
			continue
		}
		for _, g := range s.Lab.Groups {
			if !selected(st.Fault.Nodes, g) {
				continue
			}
			if field, why := faultOnBackend(st.Fault, s.Lab.Backend, g); why != "" {
				errs = append(errs, fmt.Errorf("%s:%d: step %d: fault.%s: group %s: %s", s.File, st.line, i+1, field, g.Name, why))
			}
		}
	}
	return errors.Join(errs...)
}

// faultApplies says why f cannot apply to node n, if it cannot.
func faultApplies(f *Fault, n *lab.Node) error {
	if f.Agent != nil {
		if err := n.CheckAgentFaults(!f.UntilReboot); err != nil {
			return err
		}
	}
	if f.Machine != nil {
		if _, ok := n.Machine.(simulator.FaultInjector); !ok {
			return fmt.Errorf("node %s: %w", n.Name, errNoMachineFaults)
		}
	}
	if f.BMC != nil && n.BMC == nil {
		return fmt.Errorf("node %s (%s) has no BMC", n.Name, n.Driver)
	}
	if f.Redfish != nil && n.Redfish == nil {
		return fmt.Errorf("node %s (%s) has no Redfish BMC", n.Name, n.Driver)
	}
	return nil
}

// groupOf is the group a selector names (a group or one of its nodes).
func groupOf(s *Scenario, sel string) string {
	for _, g := range s.Lab.Groups {
		if sel == g.Name || strings.HasPrefix(sel, g.Name+"-") {
			return g.Name
		}
	}
	return ""
}
