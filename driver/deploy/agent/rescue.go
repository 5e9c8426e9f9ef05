package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/store"
)

var _ deploy.Rescuer = (*Deploy)(nil)

// ValidateRescue is AgentRescue.validate: a non-empty rescue_password.
// The rescue ramdisk is the agent the lab's network boot serves, so no
// rescue_kernel/rescue_ramdisk is needed here (Ironic's PXE boot wants them).
func (d *Deploy) ValidateRescue(n *store.Node) error {
	pw, ok := n.InstanceInfo[deploy.RescuePasswordKey].(string)
	if !ok {
		return fmt.Errorf("Node %s is missing 'instance_info/rescue_password'. It is required for rescuing node.", n.UUID)
	}
	if strings.TrimSpace(pw) == "" {
		return fmt.Errorf("The 'instance_info/rescue_password' is an empty string for node %s. The 'rescue_password' must be a non-empty string value.", n.UUID)
	}
	return nil
}

// Rescue is AgentRescue.rescue: power off, then boot the agent as the
// rescue ramdisk (network boot for the next boot only, power on). The
// instance's disk is not touched.
func (d *Deploy) Rescue(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	if err := t.SetPower(ctx, power.Off); err != nil {
		return deploy.Outcome{}, err
	}
	if err := deploy.BootIntoRamdisk(ctx, t); err != nil {
		return deploy.Outcome{}, err
	}
	return deploy.Next(states.EvWait, nil), nil
}

// Unrescue is AgentRescue.unrescue: power off, boot device disk
// (persistent, prepare_instance), power on: the instance boots again.
func (d *Deploy) Unrescue(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	if err := t.SetPower(ctx, power.Off); err != nil {
		return deploy.Outcome{}, err
	}
	removeRescuePassword(t.Node())
	if err := t.SetBootDevice(ctx, power.Disk, true); err != nil {
		return deploy.Outcome{}, err
	}
	if err := t.SetPower(ctx, power.On); err != nil {
		return deploy.Outcome{}, err
	}
	return deploy.Next(states.EvDone, nil), nil
}

// finalizeRescue is the heartbeat in "rescue wait" (Ironic's
// _finalize_rescue): rescue.finalize_rescue with the hashed password, then
// the clean-up (the password leaves instance_info) and rescue. An error
// fails the rescue; the conductor powers the node off.
func (d *Deploy) finalizeRescue(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	n := t.Node()
	failure := func(reason string) error {
		inst := str(n.InstanceInfo, "instance_uuid")
		if inst == "" {
			inst = "None"
		}
		return fmt.Errorf("Failed to rescue instance %s for node %s: %s", inst, n.UUID, reason)
	}
	hash := str(n.InstanceInfo, deploy.HashedRescuePasswordKey)
	if hash == "" {
		return deploy.Outcome{}, failure("Agent rescue requires rescue_password in instance_info")
	}
	cmd, err := d.exec(ctx, t, "rescue.finalize_rescue", map[string]any{"rescue_password": hash, "hashed": true}, false)
	if err != nil {
		if errors.Is(err, ErrAgentBusy) {
			return deploy.Outcome{}, failure("Agent is busy")
		}
		return deploy.Outcome{}, failure(err.Error())
	}
	if cmd.Status != StatusSucceeded {
		return deploy.Outcome{}, failure("Agent returned bad result for command finalize_rescue: " + cmd.ErrorText())
	}
	removeRescuePassword(n)
	return deploy.Next(states.EvResume, func(context.Context, deploy.Task) (deploy.Outcome, error) {
		return deploy.Next(states.EvDone, nil), nil
	}), nil
}

// removeRescuePassword is Ironic's remove_node_rescue_password.
func removeRescuePassword(n *store.Node) {
	delete(n.InstanceInfo, deploy.RescuePasswordKey)
	delete(n.InstanceInfo, deploy.HashedRescuePasswordKey)
}
