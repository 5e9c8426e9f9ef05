package conductor

import (
	"context"
	"fmt"
	"time"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
)

// EventTakeover names the transition of a node failed because the
// conductor working on it died and another took it over.
const EventTakeover = "conductor takeover"

// TakeOver is what this conductor does, as Ironic's, for nodes reserved by
// conductors that died (stopped heartbeating): of those it owns (owns nil:
// all), a node in deploying, cleaning or verifying cannot resume, so it
// fails with a reason naming the takeover; then the dead conductor's
// reservation is freed, and nodes waiting for their agent (wait call-back,
// clean wait) carry on here at the agent's next heartbeat. It returns how
// many reservations it freed.
func (c *Conductor) TakeOver(ctx context.Context, dead map[string]bool, owns func(n *store.Node) bool) (int, error) {
	if len(dead) == 0 {
		return 0, nil
	}
	nodes, err := c.store.ListNodes(ctx, store.NodeFilter{})
	if err != nil {
		return 0, fmt.Errorf("take over from dead conductors: %w", err)
	}
	freed := 0
	for _, n := range nodes {
		from := n.Reservation
		if !dead[from] || (owns != nil && !owns(n)) {
			continue
		}
		switch n.ProvisionState {
		case states.Deploying, states.Cleaning, states.Verifying, states.Rescuing, states.Unrescuing:
			to, _ := states.Next(n.ProvisionState, states.EvFail)
			what := map[string]string{states.Deploying: "deployment", states.Cleaning: "cleaning", states.Verifying: "verification",
				states.Rescuing: "rescue", states.Unrescuing: "unrescue"}[n.ProvisionState]
			msg := fmt.Sprintf("The %s can't be resumed by conductor %s: conductor %s, which held the node, stopped heartbeating and %s took the node over. Moving to fail state.",
				what, c.cfg.Host, from, c.cfg.Host)
			prev := n.ProvisionState
			n.ProvisionState, n.LastError, n.TargetPowerState = to, msg, ""
			n.ProvisionUpdatedAt = time.Now().UTC()
			if states.Stable(to) {
				n.TargetProvisionState = ""
			}
			ev := newEvent(n, store.KindProvision, prev, to, EventTakeover, msg,
				map[string]any{"reason": "conductor takeover", "dead_conductor": from, "new_conductor": c.cfg.Host})
			if err := c.store.UpdateNode(ctx, n, ev); err != nil {
				return freed, fmt.Errorf("take over node %s from %s: %w", n.UUID, from, err)
			}
			c.log.Warn("failed node on takeover", "node", n.UUID, "from", prev, "state", to, "dead_conductor", from)
		}
		if err := c.store.Release(ctx, n.UUID, from); err != nil {
			return freed, fmt.Errorf("take over node %s from %s: %w", n.UUID, from, err)
		}
		freed++
		c.log.Info("took over node", "node", n.UUID, "state", n.ProvisionState, "dead_conductor", from)
	}
	return freed, nil
}
