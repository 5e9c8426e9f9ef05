package scenarios

import (
	"context"

	"github.com/ironlab/ironlab/simulator/lab"
)

// power asks the driver to change each selected node's power.
func (r *runner) power(ctx context.Context, label string, p *Power) error {
	nodes := r.selected(p.Nodes)
	r.printf("%s %s %d nodes\n", label, p.Target, len(nodes))
	return forEach(nodes, func(n *lab.Node) error {
		return r.api.SetPower(ctx, r.ident(n), p.Target)
	})
}
