package conductor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/store"
)

// CreateNode enrolls n. Its driver class must be enabled. initial is the
// provision state (Ironic: enroll from API 1.11, available before).
func (c *Conductor) CreateNode(ctx context.Context, n *store.Node, initial string) error {
	if err := c.CheckDriver(n.Driver); err != nil {
		return err
	}
	if n.UUID == "" {
		n.UUID = uuid.NewString()
	}
	for _, m := range []*map[string]any{&n.DriverInfo, &n.DriverInternalInfo, &n.InstanceInfo, &n.Properties, &n.Extra} {
		if *m == nil {
			*m = map[string]any{}
		}
	}
	n.ProvisionState = initial
	n.ProvisionUpdatedAt = time.Now().UTC()
	return c.store.CreateNode(ctx, n, newEvent(n, store.KindProvision, "", initial, "create", "", map[string]any{"driver": n.Driver, "name": n.Name}))
}

// UpdateNode applies f to the locked node and saves it (PATCH).
func (c *Conductor) UpdateNode(ctx context.Context, ident string, f func(n *store.Node) error) (*store.Node, error) {
	t, err := c.acquireIdent(ctx, ident, true)
	if err != nil {
		return nil, err
	}
	defer t.release()
	oldDriver := t.node.Driver
	if err := f(t.node); err != nil {
		return nil, err
	}
	if t.node.Driver != oldDriver {
		if err := c.CheckDriver(t.node.Driver); err != nil {
			return nil, err
		}
	}
	if err := t.Save(ctx); err != nil {
		return nil, err
	}
	return t.node, nil
}

// DeleteNode removes a node in a state that allows it (or in maintenance).
func (c *Conductor) DeleteNode(ctx context.Context, ident string) error {
	t, err := c.acquireIdent(ctx, ident, true)
	if err != nil {
		return err
	}
	defer t.release()
	n := t.node
	switch t.node.ProvisionState {
	case states.Enroll, states.Manageable, states.Available, states.DeployFailed, states.CleanFailed, states.Error:
	default:
		if !t.node.Maintenance {
			return fmt.Errorf("can not delete node %s while it is in state %q: %w", n.UUID, t.node.ProvisionState, ErrInvalidState)
		}
	}
	return c.store.DeleteNode(ctx, n.UUID, newEvent(t.node, store.KindProvision, t.node.ProvisionState, "", "delete", "", nil))
}

// ProvisionArgs are the optional fields of a provision request.
type ProvisionArgs struct {
	// CleanSteps are the steps of a manual clean ("clean" only).
	CleanSteps []map[string]any
	// RescuePassword is the rescue user's password: required, non-empty,
	// with "rescue", refused with any other verb.
	RescuePassword *string
}

// ProvisionAction runs an API verb ("manage", "provide", "active"/"deploy",
// "deleted"/"undeploy", "clean", "abort", "rebuild"). It returns once the
// new state is persisted; the work goes on in the background.
func (c *Conductor) ProvisionAction(ctx context.Context, ident, target string, cleanSteps []map[string]any) error {
	return c.Provision(ctx, ident, target, ProvisionArgs{CleanSteps: cleanSteps})
}

// Provision is ProvisionAction with every field of the request, for the
// verbs that take more than clean steps ("rescue" with its password;
// "unrescue").
func (c *Conductor) Provision(ctx context.Context, ident, target string, args ProvisionArgs) error {
	cleanSteps := args.CleanSteps
	ev, err := states.MapVerb(target)
	if err != nil {
		return fmt.Errorf("invalid provision target %q: %w", target, ErrInvalidParameter)
	}
	if args.RescuePassword != nil && ev != states.EvRescue {
		return fmt.Errorf(`"rescue_password" is only valid when setting target provision state to rescue: %w`, ErrInvalidParameter)
	}
	if ev == states.EvRescue && (args.RescuePassword == nil || strings.TrimSpace(*args.RescuePassword) == "") {
		return fmt.Errorf(`A non-empty "rescue_password" is required when setting target provision state to rescue: %w`, ErrInvalidParameter)
	}
	if ev == states.EvClean && len(cleanSteps) == 0 {
		return fmt.Errorf(`"clean_steps" is required when setting target provision state to %s: %w`, target, ErrInvalidParameter)
	}
	if ev != states.EvClean && cleanSteps != nil {
		return fmt.Errorf(`"clean_steps" is only valid when setting target provision state to clean: %w`, ErrInvalidParameter)
	}
	for i, s := range cleanSteps {
		if _, ok := s["interface"].(string); !ok {
			return fmt.Errorf("clean_steps[%d]: \"interface\" is required: %w", i, ErrInvalidParameter)
		}
		if _, ok := s["step"].(string); !ok {
			return fmt.Errorf("clean_steps[%d]: \"step\" is required: %w", i, ErrInvalidParameter)
		}
		if a, ok := s["args"]; ok && a != nil {
			if _, ok := a.(map[string]any); !ok {
				return fmt.Errorf("clean_steps[%d]: \"args\" must be an object: %w", i, ErrInvalidParameter)
			}
		}
	}
	t, err := c.acquireIdent(ctx, ident, true)
	if err != nil {
		return err
	}
	n := t.node
	from := n.ProvisionState
	if _, err := states.NextByUser(from, ev); err != nil {
		t.release()
		return fmt.Errorf("the requested action %q can not be performed on node %q while it is in state %q: %w", target, n.UUID, from, ErrInvalidRequest)
	}
	if t.dep == nil {
		t.release()
		return c.CheckDriver(n.Driver)
	}
	if ev == states.EvUnrescue {
		empty := ""
		args.RescuePassword = &empty
	}
	switch ev {
	case states.EvDeploy, states.EvRebuild:
		if err := t.dep.ValidateDeploy(n); err != nil {
			t.release()
			return fmt.Errorf("cannot deploy node %s: %v: %w", n.UUID, err, ErrInvalidParameter)
		}
		n.TargetProvisionState = states.Active
		n.DeployStep = nil
		n.LastError = ""
	case states.EvProvide:
		n.TargetProvisionState = states.Available
		n.LastError = ""
	case states.EvClean:
		n.TargetProvisionState = states.Manageable
		plan := &store.CleanPlan{Manual: true, Requested: []store.Step{}}
		for _, s := range cleanSteps {
			args, _ := s["args"].(map[string]any)
			plan.Requested = append(plan.Requested, store.Step{Interface: s["interface"].(string), Step: s["step"].(string), Args: args})
		}
		n.CleanPlan = plan
		n.LastError = ""
	case states.EvDeleted:
		n.TargetProvisionState = states.Available
		n.LastError = ""
	case states.EvManage:
		n.TargetProvisionState = states.Manageable
	case states.EvRescue, states.EvUnrescue:
		if err := c.prepareRescue(ctx, t, ev, *args.RescuePassword); err != nil {
			t.release()
			return err
		}
	case states.EvAbort:
		if from == states.CleanWait {
			n.LastError = fmt.Sprintf("By request, the clean operation was aborted for node %s", n.UUID)
			if n.CleanStep != nil && n.CleanStep.Step != "" {
				n.LastError += fmt.Sprintf(" on step %q", n.CleanStep.Step)
			}
		} else if from == states.RescueWait {
			n.LastError = "By request, the rescue operation was aborted."
			removeRescuePassword(n)
		} else {
			n.LastError = fmt.Sprintf("By request, the deploy operation was aborted for node %s", n.UUID)
		}
	}
	if err := t.Process(ctx, ev); err != nil {
		t.release()
		return err
	}
	c.goWork(func(ctx context.Context) {
		defer t.release()
		c.continueAction(ctx, t)
	})
	return nil
}

// continueAction does the work of a transient state, on a locked node.
func (c *Conductor) continueAction(ctx context.Context, t *task) {
	n := t.node
	switch n.ProvisionState {
	case states.Verifying:
		c.verify(ctx, t)
	case states.Deploying:
		n.DeployStep = nil
		out, err := t.dep.Deploy(ctx, t)
		c.drive(ctx, t, out, err, func(err error) {
			c.fail(ctx, t, fmt.Sprintf("Failed to deploy node %s: %v", n.UUID, err))
		})
	case states.Cleaning:
		c.startCleaning(ctx, t)
	case states.Rescuing:
		out, err := t.dep.(deploy.Rescuer).Rescue(ctx, t)
		c.drive(ctx, t, out, err, func(err error) {
			c.failRescue(ctx, t, fmt.Sprintf("Failed to rescue: %v", err), false)
		})
	case states.Unrescuing:
		out, err := t.dep.(deploy.Rescuer).Unrescue(ctx, t)
		c.drive(ctx, t, out, err, func(err error) {
			c.fail(ctx, t, fmt.Sprintf("Failed to unrescue: %v", err))
		})
		if t.node.ProvisionState == states.Active {
			// As Ironic after unrescue: the rescue agent's token and URL go.
			c.wipeAgent(ctx, t)
		}
	case states.Deleting:
		removeRescuePassword(n)
		if err := t.dep.TearDown(ctx, t); err != nil {
			n.LastError = fmt.Sprintf("Failed to tear down node %s: %v", n.UUID, err)
			c.process(ctx, t, states.EvError)
			return
		}
		n.InstanceInfo = map[string]any{}
		n.DeployStep = nil
		if !c.process(ctx, t, states.EvClean) {
			return
		}
		c.startCleaning(ctx, t)
	}
}

func (c *Conductor) startCleaning(ctx context.Context, t *task) {
	n := t.node
	manual := n.TargetProvisionState == states.Manageable
	n.CleanStep = nil
	if n.CleanPlan != nil {
		n.CleanPlan.Steps, n.CleanPlan.Index, n.CleanPlan.Started, n.CleanPlan.Version = nil, 0, false, nil
	}
	if !manual {
		n.CleanPlan = nil
		// No power action here, with fast track or without: Ironic's
		// do_node_clean skips straight to available when automated cleaning
		// is off and boots nothing. An agent that already runs (fast track)
		// keeps running; a node that is off stays off, and its first deploy
		// is cold.
		if !c.cfg.AutomatedClean {
			t.Record(ctx, store.KindProvision, "clean skipped", "automated cleaning is disabled", nil)
			c.process(ctx, t, states.EvDone)
			return
		}
	}
	out, err := t.dep.PrepareCleaning(ctx, t)
	c.drive(ctx, t, out, err, func(err error) {
		c.fail(ctx, t, fmt.Sprintf("Failed to prepare node %s for cleaning: %v", n.UUID, err))
	})
}

// drive applies a deploy interface's outcome and the steps it leads to,
// one at a time: the state machine event, persisted with its history
// record (or the node saved, when the step asks), a wait before a poll,
// then the next step. onErr handles a step's error; a failure outcome
// fails the node. The conductor is the only one that moves and saves the
// node here.
func (c *Conductor) drive(ctx context.Context, t *task, out deploy.Outcome, err error, onErr func(error)) {
	for {
		if errors.Is(err, store.ErrNotHeld) {
			// Taken over while this conductor hung: the node is another's.
			t.log.Warn("lost the node's lock to a takeover; stopping its work", "err", err)
			return
		}
		if err != nil {
			onErr(err)
			return
		}
		if out.Fail != "" {
			if err := t.Fail(ctx, out.Fail); err != nil {
				t.log.Error("fail node", "err", err)
			}
			return
		}
		if out.Event != "" {
			if !c.process(ctx, t, out.Event) {
				return
			}
		} else if out.Save {
			if err := t.Save(ctx); err != nil {
				onErr(err)
				return
			}
		}
		if out.Then == nil {
			return
		}
		if out.After > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(out.After):
			}
		}
		out, err = out.Then(ctx, t)
	}
}

func (c *Conductor) verify(ctx context.Context, t *task) {
	if err := t.pw.Validate(t.powerInfo()); err != nil {
		c.fail(ctx, t, fmt.Sprintf("Failed to validate power driver interface for node %s: %v", t.node.UUID, err))
		return
	}
	st, err := t.GetPower(ctx)
	if err != nil {
		c.fail(ctx, t, fmt.Sprintf("Failed to get power state for node %s: %v", t.node.UUID, err))
		return
	}
	t.node.PowerState = string(st)
	t.node.LastError = ""
	c.process(ctx, t, states.EvDone)
}

// process applies an event and logs a failure; it reports success.
func (c *Conductor) process(ctx context.Context, t *task, ev string) bool {
	if err := t.Process(ctx, ev); err != nil {
		if errors.Is(err, store.ErrNotHeld) {
			t.log.Warn("state change refused: the node was taken over", "event", ev, "err", err)
			return false
		}
		t.log.Error("state change", "event", ev, "err", err)
		return false
	}
	return true
}

func (c *Conductor) fail(ctx context.Context, t *task, msg string) {
	t.record(ctx, store.KindError, t.node.ProvisionState, t.node.ProvisionState, "fail", msg, nil)
	if err := t.Fail(ctx, msg); err != nil {
		t.log.Error("fail node", "err", err)
	}
}

// PowerTarget maps a target of PUT /v1/nodes/{id}/states/power to a power
// state.
func PowerTarget(target string) (power.State, bool) {
	st, ok := powerTargets[target]
	return st, ok
}

var powerTargets = map[string]power.State{
	"power on": power.On, "power off": power.Off, "rebooting": power.Reboot, "soft power off": power.SoftOff,
}

// PowerAction changes a node's power through its power interface, in the
// background once the target is persisted.
func (c *Conductor) PowerAction(ctx context.Context, ident, target string) error {
	st, ok := PowerTarget(target)
	if !ok {
		return fmt.Errorf("invalid power target %q (want \"power on\", \"power off\", \"rebooting\" or \"soft power off\"): %w", target, ErrInvalidParameter)
	}
	t, err := c.acquireIdent(ctx, ident, true)
	if err != nil {
		return err
	}
	if t.pw == nil {
		t.release()
		return c.CheckDriver(t.node.Driver)
	}
	if err := t.beginPower(ctx, st); err != nil {
		t.release()
		return err
	}
	c.goWork(func(ctx context.Context) {
		defer t.release()
		if err := t.applyPower(ctx, st); err != nil {
			t.log.Error("power action", "target", target, "err", err)
		}
	})
	return nil
}

// SetMaintenance turns maintenance on (with reason) or off.
func (c *Conductor) SetMaintenance(ctx context.Context, ident string, on bool, reason string) error {
	t, err := c.acquireIdent(ctx, ident, true)
	if err != nil {
		return err
	}
	defer t.release()
	c.setMaintenance(ctx, t, on, reason, "")
	return t.Save(ctx)
}

func (c *Conductor) setMaintenance(ctx context.Context, t *task, on bool, reason, fault string) {
	t.node.Maintenance = on
	if on {
		t.node.MaintenanceReason = reason
		t.node.Fault = fault
	} else {
		t.node.MaintenanceReason, t.node.Fault = "", ""
	}
	ev := "maintenance on"
	if !on {
		ev = "maintenance off"
	}
	t.Record(ctx, store.KindMaintenance, ev, reason, map[string]any{"fault": fault})
}

// VendorPassthru runs a node vendor_passthru method other than heartbeat on
// the node's deploy interface (deploy.Vendor), in the background after the
// node is locked.
func (c *Conductor) VendorPassthru(ctx context.Context, ident, method string, body []byte) error {
	n, err := c.GetNode(ctx, ident)
	if err != nil {
		return err
	}
	dep, _, err := c.interfaces(n.Driver)
	if err != nil {
		return err
	}
	v, ok := dep.(deploy.Vendor)
	if !ok {
		return fmt.Errorf("unsupported method (%s) passed through to vendor extension of node %s: %w", method, n.UUID, ErrInvalidParameter)
	}
	if err := v.VendorValidate(n, method, body); err != nil {
		return fmt.Errorf("vendor method %s of node %s: %v: %w", method, n.UUID, err, ErrInvalidParameter)
	}
	t, err := c.acquire(ctx, n.UUID, true)
	if err != nil {
		return err
	}
	c.goWork(func(ctx context.Context) {
		defer t.release()
		out, err := v.VendorPassthru(ctx, t, method, body)
		c.drive(ctx, t, out, err, func(err error) {
			t.log.Error("vendor passthru", "method", method, "err", err)
			if !states.Stable(t.node.ProvisionState) {
				c.fail(ctx, t, fmt.Sprintf("Vendor method %s failed on node %s: %v", method, t.node.UUID, err))
			}
		})
	})
	return nil
}
