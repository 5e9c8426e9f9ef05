package scenarios

import (
	"context"
	"fmt"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
	"github.com/ironlab/ironlab/simulator/lab/enroll"
)

// enrollStep creates the selected nodes and their ports on the driver.
func (r *runner) enrollStep(ctx context.Context, label string, t *Target) error {
	nodes := r.selected(t.Nodes)
	r.printf("%s enroll %d nodes\n", label, len(nodes))
	return forEach(nodes, func(n *lab.Node) error { return r.enroll(ctx, n) })
}

func (r *runner) enroll(ctx context.Context, n *lab.Node) error {
	e, err := enroll.For(r.lab, n, r.target)
	if err != nil {
		return err
	}
	body := e.Body()
	if r.target == enroll.TargetIronic && r.s.Lab.AutomatedClean != nil {
		// Ironic's own [conductor]automated_clean is not the scenario's
		// to set; the node's field (API 1.47) overrides it.
		body["automated_clean"] = *r.s.Lab.AutomatedClean
	}
	got, err := r.api.CreateNode(ctx, body)
	if err != nil {
		return err
	}
	r.setUUID(n.Name, got.UUID)
	for _, mac := range e.Ports {
		if err := r.api.CreatePort(ctx, got.UUID, mac); err != nil {
			return err
		}
	}
	return nil
}

// detectTarget asks an external driver API what it is (enroll.TargetOf its
// driver list), for a run whose options do not say.
func detectTarget(ctx context.Context, api *ironic.Client) (enroll.Target, error) {
	names, err := api.Drivers(ctx)
	if err != nil {
		return "", fmt.Errorf("list the drivers of %s to tell the built-in driver from a real Ironic (or give --target): %w", api.URL(), err)
	}
	return enroll.TargetOf(names), nil
}

// adaptForIronic changes what a real Ironic cannot take, and says so: its
// agents speak the v1 lookup and heartbeat only (the spec's legacy
// vendor_passthru lookup is long gone from Ironic).
func (r *runner) adaptForIronic(spec *lab.Spec) {
	for i := range spec.Groups {
		g := &spec.Groups[i]
		if g.Enrollment.Dialect == "legacy" {
			g.Enrollment.Dialect = "v1"
			r.printf("   group %s: agents speak the v1 lookup/heartbeat: a real Ironic has no legacy vendor_passthru lookup\n", g.Name)
		}
	}
}
