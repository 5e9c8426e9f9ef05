package conductor

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/store"
)

// task is one locked node; it implements deploy.Task.
type task struct {
	c       *Conductor
	node    *store.Node
	ports   []*store.Port
	dep     deploy.Interface
	pw      power.Interface
	log     *slog.Logger
	release func()
	// pending are events recorded but not yet written: the next save
	// writes them first, in its transaction, or the release does. A task's
	// events (agent commands, boot device, clean plan...) were each a write
	// of their own on the one SQLite writer that deploys queue on; now they
	// ride with the state change or the release that follows them, each
	// with the time it happened.
	pending []*store.Event
}

var _ deploy.Task = (*task)(nil)

func (t *task) Node() *store.Node               { return t.node }
func (t *task) Ports() []*store.Port            { return t.ports }
func (t *task) PowerInterface() power.Interface { return t.pw }
func (t *task) Logger() *slog.Logger            { return t.log }

func (t *task) Save(ctx context.Context) error { return t.save(ctx) }

// save persists the node and appends events in the same transaction. The
// agent's fields are not part of the write (heartbeats own them), so
// nothing needs merging back. It writes only while this conductor still
// holds the node's lock (store.ErrNotHeld otherwise): a conductor that hung
// while another took the node over must not undo the takeover.
func (t *task) save(ctx context.Context, events ...*store.Event) error {
	if len(t.pending) > 0 {
		events = append(append([]*store.Event(nil), t.pending...), events...)
	}
	if err := t.c.store.UpdateNodeHeld(ctx, t.node, t.c.cfg.Host, events...); err != nil {
		return err
	}
	t.pending = nil
	return nil
}

// record appends an event to the task's history: its next save writes it,
// in that save's transaction, or its release does.
func (t *task) record(_ context.Context, kind, from, to, event, message string, detail any) {
	e := newEvent(t.node, kind, from, to, event, message, detail)
	e.Time = time.Now().UTC()
	t.pending = append(t.pending, e)
}

// FastTrack is Ironic's is_fast_track: fast track is on, the node's agent
// has a known URL and heartbeated within heartbeat_timeout, and the node is
// powered on (asked through its power interface, as Ironic does).
func (t *task) FastTrack(ctx context.Context) bool {
	if !t.c.cfg.FastTrack {
		return false
	}
	// Heartbeats write the agent's fields without the lock: read them fresh.
	if cur, err := t.c.store.GetAgent(ctx, t.node.UUID); err == nil {
		t.node.Agent = cur
	}
	if t.node.Agent.URL == "" {
		return false
	}
	last := t.node.Agent.LastHeartbeat
	if last.IsZero() || time.Since(last) > t.c.cfg.HeartbeatTimeout {
		return false
	}
	st, err := t.GetPower(ctx)
	if err != nil || st != power.On {
		return false
	}
	t.node.PowerState = string(power.On)
	return true
}

func (t *task) Process(ctx context.Context, event string) error {
	from := t.node.ProvisionState
	to, err := states.Next(from, event)
	if err != nil {
		return fmt.Errorf("node %s: %w", t.node.UUID, err)
	}
	t.node.ProvisionState = to
	t.node.ProvisionUpdatedAt = time.Now().UTC()
	if states.Stable(to) {
		t.node.TargetProvisionState = ""
	}
	msg := ""
	if event == states.EvFail || event == states.EvError {
		msg = t.node.LastError
	}
	// The state and its event commit together: no crash leaves one
	// without the other.
	if err := t.save(ctx, newEvent(t.node, store.KindProvision, from, to, event, msg, nil)); err != nil {
		t.node.ProvisionState = from
		return err
	}
	t.log.Info("provision state", "from", from, "state", to, "event", event)
	return nil
}

func (t *task) Fail(ctx context.Context, msg string) error {
	t.node.LastError = msg
	t.log.Error("node failed", "state", t.node.ProvisionState, "err", msg)
	return t.Process(ctx, states.EvFail)
}

func (t *task) Record(ctx context.Context, kind, event, message string, detail any) {
	t.record(ctx, kind, t.node.ProvisionState, t.node.ProvisionState, event, message, detail)
}

// bmcAddress names the node's BMC for error messages.
func bmcAddress(info map[string]any) string {
	for _, p := range [][2]string{{"ipmi_address", "ipmi_port"}, {"ssh_address", "ssh_port"}, {"bmc_address", "bmc_port"}, {"redfish_address", ""}} {
		if a, ok := info[p[0]]; ok && fmt.Sprint(a) != "" {
			if port, ok := info[p[1]]; ok && fmt.Sprint(port) != "" {
				return fmt.Sprintf("%v:%v", a, port)
			}
			return fmt.Sprint(a)
		}
	}
	return "(no BMC address in driver_info)"
}

// powerInfo is the driver_info handed to the power interface.
func (t *task) powerInfo() power.DriverInfo {
	info := power.DriverInfo{}
	for k, v := range t.node.DriverInfo {
		info[k] = v
	}
	info[power.NodeUUIDKey] = t.node.UUID
	info[power.RecordedStateKey] = t.node.PowerState
	return info
}

var powerVerbs = map[power.State]string{power.On: "power on", power.Off: "power off", power.SoftOff: "soft power off", power.Reboot: "reboot"}

// withRetries runs f with a timeout per attempt, PowerRetries times.
func (t *task) withRetries(ctx context.Context, f func(ctx context.Context) error) error {
	var err error
	for i := 0; i < t.c.cfg.PowerRetries; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(t.c.cfg.PowerRetryInterval):
			}
		}
		actx, cancel := context.WithTimeout(ctx, t.c.cfg.PowerTimeout)
		err = f(actx)
		if err != nil && actx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w (timeout after %s)", err, t.c.cfg.PowerTimeout)
		}
		cancel()
		if err == nil {
			return nil
		}
	}
	return err
}

// SetPower changes the node's power through its power interface, with
// target_power_state persisted while the change is under way.
func (t *task) SetPower(ctx context.Context, target power.State) error {
	if err := t.beginPower(ctx, target); err != nil {
		return err
	}
	return t.applyPower(ctx, target)
}

// beginPower persists target as target_power_state. The power API does this
// before it answers 202 and leaves applyPower to the background.
func (t *task) beginPower(ctx context.Context, target power.State) error {
	if _, ok := powerVerbs[target]; !ok {
		return fmt.Errorf("power %q node %s: %w", target, t.node.UUID, ErrInvalidParameter)
	}
	t.node.TargetPowerState = string(target)
	return t.Save(ctx)
}

// applyPower is SetPower after beginPower: the power interface's call, then
// the new power state (or the error) with its event.
func (t *task) applyPower(ctx context.Context, target power.State) error {
	verb := powerVerbs[target]
	from := t.node.PowerState
	info := t.powerInfo()
	err := t.withRetries(ctx, func(ctx context.Context) error { return t.pw.SetPowerState(ctx, info, target) })
	t.node.TargetPowerState = ""
	if err != nil {
		msg := fmt.Sprintf("%s node %s via BMC %s: %v", verb, t.node.UUID, bmcAddress(t.node.DriverInfo), err)
		t.node.LastError = msg
		if serr := t.Save(ctx); serr != nil {
			t.log.Error("save node", "err", serr)
		}
		t.record(ctx, store.KindPower, from, from, verb, msg, map[string]any{"error": err.Error(), "interface": t.pw.Name()})
		return fmt.Errorf("%s", msg)
	}
	switch target {
	case power.On, power.Reboot:
		t.node.PowerState = string(power.On)
	default:
		t.node.PowerState = string(power.Off)
	}
	if target != power.On && t.pw.Name() != "fake" {
		// As Ironic's wipe_internal_info_on_power_off: the agent that was
		// running is gone and must look up again. FakePower reboots nothing,
		// so the running agent keeps its URL and token.
		if err := t.c.store.ClearAgent(ctx, t.node.UUID); err != nil {
			return err
		}
		// The certificate goes too: the next agent makes a new one.
		t.node.Agent.URL, t.node.Agent.Token, t.node.Agent.Version, t.node.Agent.LastHeartbeat, t.node.Agent.VerifyCA = "", "", "", time.Time{}, ""
	}
	// The new power state and its event in one write (they were two: the
	// single SQLite writer is what deploys queue on).
	if err := t.save(ctx, newEvent(t.node, store.KindPower, from, t.node.PowerState, verb, "", map[string]any{"interface": t.pw.Name(), "bmc": bmcAddress(t.node.DriverInfo)})); err != nil {
		return err
	}
	t.log.Info("power", "action", verb, "power_state", t.node.PowerState)
	return nil
}

func (t *task) GetPower(ctx context.Context) (power.State, error) {
	info := t.powerInfo()
	var st power.State
	err := t.withRetries(ctx, func(ctx context.Context) error {
		var err error
		st, err = t.pw.GetPowerState(ctx, info)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("get power state of node %s via BMC %s: %v", t.node.UUID, bmcAddress(t.node.DriverInfo), err)
	}
	return st, nil
}

func (t *task) SetBootDevice(ctx context.Context, dev power.Device, persistent bool) error {
	opts := power.BootOptions{Persistent: persistent, UEFI: deploy.BootModeUEFI(t.node)}
	info := t.powerInfo()
	err := t.withRetries(ctx, func(ctx context.Context) error { return t.pw.SetBootDevice(ctx, info, dev, opts) })
	detail := map[string]any{"device": dev, "persistent": persistent, "uefi": opts.UEFI, "interface": t.pw.Name()}
	if err != nil {
		msg := fmt.Sprintf("set boot device %s of node %s via BMC %s: %v", dev, t.node.UUID, bmcAddress(t.node.DriverInfo), err)
		detail["error"] = err.Error()
		t.record(ctx, store.KindPower, "", "", "set boot device", msg, detail)
		return fmt.Errorf("%s", msg)
	}
	t.record(ctx, store.KindPower, "", "", "set boot device", "", detail)
	return nil
}
