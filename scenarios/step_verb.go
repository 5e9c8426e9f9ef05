package scenarios

import (
	"context"
	"net/http"
	"time"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// verbSettleTimeout bounds how long a provision verb waits for its node to
// settle before it is sent anyway (and the driver's answer reported).
const verbSettleTimeout = 60 * time.Second

// verb sends a provision verb (manage, provide, deleted, abort) to each
// selected node, once the node has settled.
func (r *runner) verb(ctx context.Context, label, target string, sel []string) error {
	nodes := r.selected(sel)
	r.printf("%s %s %d nodes\n", label, target, len(nodes))
	return forEach(nodes, func(n *lab.Node) error { return r.sendVerb(ctx, n, target) })
}

// rescue sends the verb rescue with the rescue user's password.
func (r *runner) rescue(ctx context.Context, label string, rs *Rescue) error {
	nodes := r.selected(rs.Nodes)
	r.printf("%s rescue %d nodes\n", label, len(nodes))
	return forEach(nodes, func(n *lab.Node) error {
		return r.sendVerbBody(ctx, n, map[string]any{"target": "rescue", "rescue_password": rs.Password})
	})
}

func (r *runner) sendVerb(ctx context.Context, n *lab.Node, target string) error {
	return r.sendVerbBody(ctx, n, map[string]any{"target": target})
}

// sendVerbBody sends a provision request once the node has settled (no
// target state; abort goes to nodes that wait) and is not locked.
func (r *runner) sendVerbBody(ctx context.Context, n *lab.Node, body map[string]any) error {
	deadline := time.Now().Add(verbSettleTimeout)
	abort := body["target"] == "abort"
	var err error
	perr := poll(ctx, 100*time.Millisecond, 0, func(ctx context.Context) bool {
		var node ironic.Node
		// Only the two states Settled reads: the whole node, written and
		// decoded before each verb of a 10,000-node bench, was 7.4 s of
		// the driver's CPU and 3.3 s of the lab's.
		if node, err = r.api.NodeFields(ctx, r.ident(n), "provision_state", "target_provision_state"); err != nil {
			return true
		}
		if !abort && !node.Settled() && time.Now().Before(deadline) {
			return false
		}
		err = r.api.Provision(ctx, r.ident(n), body)
		// 409: locked, the conductor is still busy with the node.
		return !(ironic.IsStatus(err, http.StatusConflict) && time.Now().Before(deadline))
	})
	if perr != nil {
		return perr
	}
	return err
}
