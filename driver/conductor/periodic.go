package conductor

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/store"
)

// RunPeriodic runs Check every interval until ctx is done.
func (c *Conductor) RunPeriodic(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = 60 * time.Second
	}
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.ctx.Done():
			return
		case <-tk.C:
			if err := c.Check(ctx, time.Now()); err != nil {
				c.log.Error("periodic check", "err", err)
			}
		}
	}
}

// Check runs the periodic tasks once, as of now: call-back timeouts of nodes
// in "wait call-back" and "clean wait", and the heartbeat watchdog. Nodes
// that need action are handled concurrently, PeriodicWorkers at a time and
// each within PeriodicNodeTimeout, so a node whose BMC does not answer
// delays no other. It returns after the actions it started have finished.
func (c *Conductor) Check(ctx context.Context, now time.Time) error {
	// The store selects the nodes that are due (store.Due): at 10,000
	// nodes, reading every node each second to find the few due ones was
	// 5 % of the driver's CPU. The checks below stay the word (and the
	// action's, on its node re-read in full under the lock); the list
	// reads the node's own columns only.
	nodes, err := c.store.ListNodes(ctx, store.NodeFilter{ColumnsOnly: true, Due: c.due(now)})
	if err != nil {
		return fmt.Errorf("periodic check: %w", err)
	}
	sem := make(chan struct{}, c.cfg.PeriodicWorkers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, n := range nodes {
		if n.Reservation != "" || n.Maintenance || (c.cfg.Owns != nil && !c.cfg.Owns(n)) {
			continue
		}
		var act func(ctx context.Context, id string, now time.Time)
		switch {
		case c.callbackTimedOut(n, now):
			act = c.failTimedOut
		case c.watchdogDue(n, now):
			act = c.watchdog
		default:
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			defer func() { <-sem }()
			nctx, cancel := context.WithTimeout(ctx, c.cfg.PeriodicNodeTimeout)
			defer cancel()
			act(nctx, id, now)
		}(n.UUID)
	}
	return nil
}

// due is the store's selection of the nodes callbackTimedOut or
// watchdogDue may pick as of now.
func (c *Conductor) due(now time.Time) *store.Due {
	d := &store.Due{Now: now, CallbackTimeouts: map[string]time.Duration{states.DeployWait: c.cfg.DeployCallbackTimeout,
		states.CleanWait: c.cfg.CleanCallbackTimeout, states.RescueWait: c.cfg.RescueCallbackTimeout}}
	if c.cfg.WatchdogAction != "" {
		d.WatchdogStates, d.WatchdogPower, d.HeartbeatTimeout = watchdogStates, string(power.On), c.cfg.HeartbeatTimeout
	}
	return d
}

func (c *Conductor) callbackTimedOut(n *store.Node, now time.Time) bool {
	var limit time.Duration
	switch n.ProvisionState {
	case states.DeployWait:
		limit = c.cfg.DeployCallbackTimeout
	case states.CleanWait:
		limit = c.cfg.CleanCallbackTimeout
	case states.RescueWait:
		limit = c.cfg.RescueCallbackTimeout
	default:
		return false
	}
	return limit > 0 && now.Sub(n.ProvisionUpdatedAt) > limit
}

func (c *Conductor) failTimedOut(ctx context.Context, id string, now time.Time) {
	t, err := c.acquire(ctx, id, false)
	if err != nil {
		return
	}
	defer t.release()
	if t.node.Maintenance || !c.callbackTimedOut(t.node, now) {
		return
	}
	if t.node.ProvisionState == states.RescueWait {
		// Ironic's cleanup_rescuewait_timeout, its words (no UUID).
		msg := "Timeout reached while waiting for rescue ramdisk callback for node"
		t.Record(ctx, store.KindProvision, EventCallbackTimeout, msg, map[string]any{
			"timeout_s": int(c.cfg.RescueCallbackTimeout.Seconds()), "waited_s": int(now.Sub(t.node.ProvisionUpdatedAt).Seconds())})
		c.failRescue(ctx, t, msg, true)
		return
	}
	msg := fmt.Sprintf("Timeout reached while waiting for callback for node %s", t.node.UUID)
	limit := c.cfg.DeployCallbackTimeout
	if t.node.ProvisionState == states.CleanWait {
		limit = c.cfg.CleanCallbackTimeout
		msg = fmt.Sprintf("Timeout reached while cleaning the node %s. Please check if the ramdisk responsible for the cleaning is running on the node.", t.node.UUID)
		if step := t.node.CleanStep; step != nil && step.Step != "" {
			msg += fmt.Sprintf(" Failed on step %s.", step.Step)
			c.setMaintenance(ctx, t, true, msg, "clean failure")
		}
	}
	t.Record(ctx, store.KindProvision, EventCallbackTimeout, msg, map[string]any{
		"timeout_s": int(limit.Seconds()), "waited_s": int(now.Sub(t.node.ProvisionUpdatedAt).Seconds())})
	c.fail(ctx, t, msg)
}

func lastHeartbeat(n *store.Node) (time.Time, bool) {
	return n.Agent.LastHeartbeat, !n.Agent.LastHeartbeat.IsZero()
}

// watchdogStates are the states the watchdog watches: not provisioned
// (available; manageable too: after a manual clean with fast track the
// agent runs on), or waiting for a call-back.
var watchdogStates = []string{states.Available, states.Manageable, states.DeployWait, states.CleanWait}

// watchdogDue: the spec's check for a node that is powered on, not
// provisioned (available, or waiting for a call-back), and whose agent has
// not heartbeated for heartbeat_timeout (nor since the last watchdog action).
func (c *Conductor) watchdogDue(n *store.Node, now time.Time) bool {
	if c.cfg.WatchdogAction == "" || n.PowerState != string(power.On) {
		return false
	}
	if !slices.Contains(watchdogStates, n.ProvisionState) {
		return false
	}
	last, ok := lastHeartbeat(n)
	// A watchdog reboot wipes the agent's fields (real power interfaces);
	// its time then stands in for the heartbeat the new agent owes us.
	if at := n.Agent.WatchdogLastAction; !at.IsZero() && at.After(last) {
		last, ok = at, true
	}
	return ok && now.Sub(last) > c.cfg.HeartbeatTimeout
}

// Event names of the periodic tasks, for scenarios to match.
const (
	EventWatchdogReboot      = "watchdog reboot"
	EventWatchdogMaintenance = "watchdog maintenance"
	EventWatchdogRecovered   = "watchdog recovered"
	EventCallbackTimeout     = "callback timeout"
)

func (c *Conductor) watchdog(ctx context.Context, id string, now time.Time) {
	t, err := c.acquire(ctx, id, false)
	if err != nil {
		return
	}
	defer t.release()
	n := t.node
	if n.Maintenance || !c.watchdogDue(n, now) {
		return
	}
	last, _ := lastHeartbeat(n)
	reason := fmt.Sprintf("Agent heartbeat timeout: no heartbeat from the agent of node %s for %ds (agent.heartbeat_timeout is %ds)",
		n.UUID, int(now.Sub(last).Seconds()), int(c.cfg.HeartbeatTimeout.Seconds()))
	reboots := n.Agent.WatchdogReboots
	action := c.cfg.WatchdogAction
	if action == WatchdogReboot && reboots >= c.cfg.WatchdogMaxReboots {
		action = WatchdogMaintenance
		reason += fmt.Sprintf("; %d watchdog reboots did not bring it back", reboots)
	}
	detail := map[string]any{"action": action, "reboots": reboots, "state": n.ProvisionState,
		"heartbeat_timeout_s": int(c.cfg.HeartbeatTimeout.Seconds())}
	t.log.Warn("agent heartbeat timeout", "action", action, "state", n.ProvisionState)
	switch action {
	case WatchdogReboot:
		t.Record(ctx, store.KindHeartbeat, EventWatchdogReboot, reason, detail)
		at := time.Unix(now.Unix(), 0).UTC()
		if err := c.store.SetWatchdog(ctx, n.UUID, reboots+1, at); err != nil {
			t.log.Error("record watchdog action", "err", err)
			return
		}
		n.Agent.WatchdogReboots, n.Agent.WatchdogLastAction = reboots+1, at
		// The agent that comes back starts afresh: a deploy or clean that
		// was under way restarts from its first step on its heartbeat.
		n.DeployStep = nil
		if n.ProvisionState == states.CleanWait {
			n.CleanStep = nil
		}
		if err := t.Save(ctx); err != nil {
			t.log.Error("save node", "err", err)
			return
		}
		// Boot the ramdisk again: the one-time network boot of the last
		// boot into it is spent, and the disk may hold an old image.
		if err := t.SetBootDevice(ctx, power.PXE, false); err != nil {
			t.log.Warn("watchdog: set boot device", "err", err)
		}
		if err := t.SetPower(ctx, power.Reboot); err != nil {
			t.log.Error("watchdog reboot", "err", err)
		}
	default:
		t.Record(ctx, store.KindHeartbeat, EventWatchdogMaintenance, reason, detail)
		c.setMaintenance(ctx, t, true, reason, "")
		if err := t.Save(ctx); err != nil {
			t.log.Error("save node", "err", err)
		}
	}
}
