package conductor

import (
	"context"
	"errors"
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
// all), it takes the dead conductor's reservation (StealReservation: one
// taker wins), fails a node in deploying, cleaning, verifying, rescuing or
// unrescuing (it cannot resume) with a reason naming the takeover, and
// frees the lock; nodes waiting for their agent (wait call-back, clean
// wait) carry on here at the agent's next heartbeat. It returns how many
// reservations it freed.
func (c *Conductor) TakeOver(ctx context.Context, dead map[string]bool, owns func(n *store.Node) bool) (int, error) {
	if len(dead) == 0 {
		return 0, nil
	}
	nodes, err := c.store.ListNodes(ctx, store.NodeFilter{ColumnsOnly: true})
	if err != nil {
		return 0, fmt.Errorf("take over from dead conductors: %w", err)
	}
	freed := 0
	for _, n := range nodes {
		from := n.Reservation
		if !dead[from] || (owns != nil && !owns(n)) {
			continue
		}
		// The dead conductor's lock becomes this one's in one statement:
		// of two conductors taking over at once (their rings may differ for
		// a moment) only one wins, and the dead one, if it only hung, can
		// write nothing more (store.UpdateNodeHeld).
		if err := c.store.StealReservation(ctx, n.UUID, from, c.cfg.Host); err != nil {
			if errors.Is(err, store.ErrNotHeld) || errors.Is(err, store.ErrNotFound) {
				continue // released, taken over by another, or deleted meanwhile
			}
			if errors.Is(err, store.ErrLocked) {
				// The dead one hung inside a transaction on the node: again
				// at the next refresh, once the database ended its session.
				c.log.Info("takeover of node postponed", "node", n.UUID, "dead_conductor", from, "err", err)
				continue
			}
			return freed, fmt.Errorf("take over node %s from %s: %w", n.UUID, from, err)
		}
		err := c.failTakenOver(ctx, n.UUID, from)
		if rerr := c.store.Release(ctx, n.UUID, c.cfg.Host); rerr != nil && err == nil {
			err = rerr
		}
		if err != nil {
			return freed, fmt.Errorf("take over node %s from %s: %w", n.UUID, from, err)
		}
		freed++
	}
	return freed, nil
}

// failTakenOver fails the node this conductor just took over from the dead
// one when it was in a state that cannot resume, re-read under the lock.
func (c *Conductor) failTakenOver(ctx context.Context, id, from string) error {
	n, err := c.store.GetNode(ctx, id)
	if err != nil {
		return err
	}
	switch n.ProvisionState {
	case states.Deploying, states.Cleaning, states.Verifying, states.Rescuing, states.Unrescuing:
	default:
		c.log.Info("took over node", "node", n.UUID, "state", n.ProvisionState, "dead_conductor", from)
		return nil
	}
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
	if err := c.store.UpdateNodeHeld(ctx, n, c.cfg.Host, ev); err != nil {
		return err
	}
	c.log.Warn("failed node on takeover", "node", n.UUID, "from", prev, "state", to, "dead_conductor", from)
	return nil
}
