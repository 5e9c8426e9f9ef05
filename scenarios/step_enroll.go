package scenarios

import (
	"context"
	"fmt"

	"github.com/ironlab/ironlab/simulator/lab"
)

// enrollStep creates the selected nodes and their ports on the driver.
func (r *runner) enrollStep(ctx context.Context, label string, t *Target) error {
	nodes := r.selected(t.Nodes)
	r.printf("%s enroll %d nodes\n", label, len(nodes))
	return forEach(nodes, func(n *lab.Node) error { return r.enroll(ctx, n) })
}

func (r *runner) enroll(ctx context.Context, n *lab.Node) error {
	e, err := r.lab.Enrollment(n, r.target)
	if err != nil {
		return err
	}
	got, err := r.api.createNode(ctx, e.Body())
	if err != nil {
		return err
	}
	r.setUUID(n.Name, got.UUID)
	for _, mac := range e.Ports {
		if err := r.api.createPort(ctx, got.UUID, mac); err != nil {
			return err
		}
	}
	return nil
}

// detectTarget decides what the nodes are enrolled into when the options do
// not say: the built-in driver offers the spec's classes (agent_ipmitool,
// ...); anything else at a --driver-url is taken for a real Ironic, which
// offers hardware types.
func detectTarget(ctx context.Context, api *client, external bool) (lab.Target, error) {
	if !external {
		return lab.TargetBuiltin, nil
	}
	names, err := api.drivers(ctx)
	if err != nil {
		return "", fmt.Errorf("list the drivers of %s to tell the built-in driver from a real Ironic (or give --target): %w", api.base, err)
	}
	for _, n := range names {
		if n == "agent_ipmitool" || n == "fake_agent" {
			return lab.TargetBuiltin, nil
		}
	}
	return lab.TargetIronic, nil
}
