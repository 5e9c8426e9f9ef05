package scenarios

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ironlab/ironlab/simulator/fake"
	"github.com/ironlab/ironlab/simulator/lab"
)

// fault applies a fault step: at once, or in the background after a delay
// or after a number of events per node.
func (r *runner) fault(ctx context.Context, label string, i int, f *Fault) error {
	nodes := r.selected(f.Nodes)
	what := faultSummary(f)
	switch {
	case f.after > 0:
		r.printf("%s fault %s on %d nodes in %s\n", label, what, len(nodes), f.after)
		r.goBackground(func(ctx context.Context) {
			select {
			case <-time.After(f.after):
			case <-ctx.Done():
				return
			}
			if err := r.applyFault(ctx, f, nodes); err != nil {
				r.printf("%s   fault failed: %v\n", label, err)
			}
		})
		return nil
	case f.AfterEvents > 0:
		r.printf("%s fault %s on %d nodes after %d more events each\n", label, what, len(nodes), f.AfterEvents)
		for _, n := range nodes {
			base := r.eventCount(ctx, n)
			r.goBackground(func(ctx context.Context) {
				for r.eventCount(ctx, n) < base+f.AfterEvents {
					select {
					case <-time.After(100 * time.Millisecond):
					case <-ctx.Done():
						return
					}
				}
				if err := r.applyFault(ctx, f, []*lab.Node{n}); err != nil {
					r.printf("%s   fault on %s failed: %v\n", label, n.Name, err)
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
	if f.BMC != nil {
		parts = append(parts, "bmc")
	}
	if f.Image != nil {
		parts = append(parts, "image "+f.Image.ID)
	}
	if f.Conductor != nil {
		if f.Conductor.KillAt != "" {
			parts = append(parts, "conductor kill at "+f.Conductor.KillAt)
		} else {
			parts = append(parts, "conductor kill")
		}
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
	evs, err := r.api.events(ctx, r.ident(n))
	if err != nil {
		return 0
	}
	return len(evs)
}

func (r *runner) applyFault(ctx context.Context, f *Fault, nodes []*lab.Node) error {
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
			m, ok := n.Machine.(*fake.Machine)
			if !ok {
				return fmt.Errorf("node %s: machine faults need the fake backend", n.Name)
			}
			m.SetFaults(*f.Machine)
		}
		if f.BMC != nil {
			if n.BMC == nil {
				return fmt.Errorf("node %s (%s) has no BMC", n.Name, n.Driver)
			}
			n.BMC.SetFaults(*f.BMC)
		}
	}
	if c := f.Conductor; c != nil {
		if c.KillAt == "" {
			return r.killConductor(ctx, c, "now")
		}
		r.goBackground(func(ctx context.Context) { r.killWhen(ctx, c, nodes) })
	}
	return nil
}

// killWhen kills the conductor once a node reaches the named state or
// records an event of that name.
func (r *runner) killWhen(ctx context.Context, c *ConductorFault, nodes []*lab.Node) {
	for ctx.Err() == nil {
		all, err := r.api.nodes(ctx)
		if err == nil {
			for _, an := range all {
				if !contains(nodes, an.Name) {
					continue
				}
				if an.ProvisionState == c.KillAt {
					r.killConductor(ctx, c, an.Name+" reached "+c.KillAt)
					return
				}
			}
		}
		if !provision[c.KillAt] {
			for _, n := range nodes {
				evs, _ := r.api.events(ctx, r.ident(n))
				for _, ev := range evs {
					if strings.Contains(string(ev), `"event":"`+c.KillAt+`"`) {
						r.killConductor(ctx, c, n.Name+" recorded "+c.KillAt)
						return
					}
				}
			}
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

func contains(nodes []*lab.Node, name string) bool {
	for _, n := range nodes {
		if n.Name == name {
			return true
		}
	}
	return false
}

func (r *runner) killConductor(ctx context.Context, c *ConductorFault, why string) error {
	if r.proc == nil {
		return fmt.Errorf("the conductor is not a child process of this run")
	}
	r.printf("   !! SIGKILL the conductor (%s); restart in %s\n", why, c.restartAfter)
	r.proc.kill()
	select {
	case <-time.After(c.restartAfter):
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := r.proc.start(ctx); err != nil {
		return err
	}
	r.printf("   !! conductor restarted\n")
	return nil
}
