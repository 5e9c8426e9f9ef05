package conductor

import (
	"context"
	"fmt"
	"time"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/internal/shacrypt"
)

// prepareRescue is the synchronous half of Ironic's do_node_rescue and
// do_node_unrescue, on the locked node: a node in maintenance and a deploy
// interface without rescue are refused; rescue keeps the password and its
// crypt hash (rescue_password_hash_algorithm) in instance_info (the API masks both) and validates;
// both forget the agent that ran before.
func (c *Conductor) prepareRescue(ctx context.Context, t *task, ev, password string) error {
	n := t.node
	op := "rescuing"
	if ev == states.EvUnrescue {
		op = "unrescuing"
	}
	if n.Maintenance {
		return fmt.Errorf("The %s operation can't be performed on node %s because it's in maintenance mode.: %w", op, n.UUID, ErrInvalidParameter)
	}
	inst := fmt.Sprint(n.InstanceInfo["instance_uuid"])
	if _, ok := n.InstanceInfo["instance_uuid"]; !ok {
		inst = "None"
	}
	r, ok := t.dep.(deploy.Rescuer)
	if !ok {
		verb := "rescue"
		if ev == states.EvUnrescue {
			verb = "unrescue"
		}
		return fmt.Errorf("Failed to %s instance %s for node %s: Validation failed: Driver %s does not support rescue (disabled or not implemented).: %w",
			verb, inst, n.UUID, n.Driver, ErrInvalidParameter)
	}
	if ev == states.EvRescue {
		hash, err := shacrypt.Hash(c.cfg.RescuePasswordHash, password)
		if err != nil {
			return err
		}
		if n.InstanceInfo == nil {
			n.InstanceInfo = map[string]any{}
		}
		n.InstanceInfo[deploy.RescuePasswordKey] = password
		n.InstanceInfo[deploy.HashedRescuePasswordKey] = hash
		if err := r.ValidateRescue(n); err != nil {
			removeRescuePassword(n)
			return fmt.Errorf("Failed to rescue instance %s for node %s: Validation failed: %v: %w", inst, n.UUID, err, ErrInvalidParameter)
		}
		n.TargetProvisionState = states.Rescue
	} else {
		n.TargetProvisionState = states.Active
	}
	n.LastError = ""
	return c.wipeAgent(ctx, t)
}

// wipeAgent is Ironic's wipe_token_and_url: the agent that ran before is
// not the one that will call back.
func (c *Conductor) wipeAgent(ctx context.Context, t *task) error {
	if err := c.store.ClearAgent(ctx, t.node.UUID); err != nil {
		return fmt.Errorf("forget the agent of node %s: %w", t.node.UUID, err)
	}
	t.node.Agent.URL, t.node.Agent.Token, t.node.Agent.Version, t.node.Agent.LastHeartbeat, t.node.Agent.VerifyCA = "", "", "", time.Time{}, ""
	return nil
}

// removeRescuePassword is Ironic's remove_node_rescue_password.
func removeRescuePassword(n *store.Node) {
	delete(n.InstanceInfo, deploy.RescuePasswordKey)
	delete(n.InstanceInfo, deploy.HashedRescuePasswordKey)
}

// failRescue fails a rescue: with powerOff as Ironic's
// rescuing_error_handler (the agent's call-back failed, or it never came:
// power off, forget the password and the agent), else as _do_node_rescue's
// handle_failure (the password goes).
func (c *Conductor) failRescue(ctx context.Context, t *task, msg string, powerOff bool) {
	removeRescuePassword(t.node)
	if powerOff {
		if err := t.SetPower(ctx, power.Off); err != nil {
			t.log.Error("rescue failed: power off", "err", err)
		}
		if err := c.wipeAgent(ctx, t); err != nil {
			t.log.Error("rescue failed", "err", err)
		}
	}
	c.fail(ctx, t, msg)
}
