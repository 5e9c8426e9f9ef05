package scenarios

import (
	"context"

	"github.com/ironlab/ironlab/simulator/lab"
)

// enrollStep creates the selected nodes and their ports on the driver.
func (r *runner) enrollStep(ctx context.Context, label string, t *Target) error {
	nodes := r.selected(t.Nodes)
	r.printf("%s enroll %d nodes\n", label, len(nodes))
	return forEach(nodes, func(n *lab.Node) error { return r.enroll(ctx, n) })
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
