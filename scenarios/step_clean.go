package scenarios

import (
	"context"
	"strings"

	"github.com/ironlab/ironlab/simulator/lab"
)

// clean runs a manual clean with the step's clean steps on each selected node.
func (r *runner) clean(ctx context.Context, label string, c *Clean) error {
	nodes := r.selected(c.Nodes)
	r.printf("%s clean %d nodes: %s\n", label, len(nodes), stepNames(c.Steps))
	return forEach(nodes, func(n *lab.Node) error {
		return r.sendVerbBody(ctx, n, map[string]any{"target": "clean", "clean_steps": c.Steps})
	})
}

func stepNames(steps []CleanStep) string {
	var names []string
	for _, s := range steps {
		names = append(names, s.Step)
	}
	return strings.Join(names, ", ")
}
