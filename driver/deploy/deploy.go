// Package deploy defines the deploy interface of a driver class: how the
// conductor gets an image onto a node (agent: the agent writes it; pxe: the
// conductor streams it) and how the node is cleaned. The conductor owns the
// state machine, the lock and persistence: a deploy interface acts on one
// locked node through a Task and returns an Outcome (the next event, wait
// for the call-back, fail with a reason, poll again after), which the
// conductor alone applies and persists, one step at a time.
package deploy

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/store"
)

// Task is one locked node as the conductor hands it to a deploy interface.
// A deploy interface changes the node and acts through the Task, but never
// moves it through the state machine or saves it: it returns an Outcome,
// and the conductor applies and persists it.
type Task interface {
	// Node is the locked node; the conductor persists what a step changed
	// with the step's Outcome.
	Node() *store.Node
	Ports() []*store.Port
	// PowerInterface is the node's power interface (its Name() is "fake" for FakePower).
	PowerInterface() power.Interface
	// SetPower changes the node's power through its power interface, with the
	// conductor's retries and timeouts, records power_state and an event, and
	// wipes the agent's URL and token on off/reboot unless the interface is "fake".
	SetPower(ctx context.Context, target power.State) error
	// GetPower reads the power state through the power interface.
	GetPower(ctx context.Context) (power.State, error)
	// SetBootDevice sets the next boot device through the power interface.
	SetBootDevice(ctx context.Context, dev power.Device, persistent bool) error
	// FastTrack is Ironic's is_fast_track: fast track is configured, the
	// node's agent has a URL and heartbeated within heartbeat_timeout, and
	// the node is powered on. A deploy interface whose ramdisk can stay up
	// may then skip booting it, and leave it running after cleaning.
	FastTrack(ctx context.Context) bool
	// Record appends an event of kind (store.Kind*) to the node's history.
	Record(ctx context.Context, kind, event, message string, detail any)
	Logger() *slog.Logger
}

// Step is one step of a deploy interface on a locked node.
type Step func(ctx context.Context, t Task) (Outcome, error)

// Outcome is what a deploy interface decided on one event (a heartbeat, a
// call-back, a timer): the conductor applies it, persists the node, then
// runs Then, if any. The zero Outcome leaves the node as it is, waiting for
// its next event.
type Outcome struct {
	// Event is the state machine event (states.Ev*) to apply and persist
	// with its history record; "" for none.
	Event string
	// Fail, when set, fails the node with it as last_error (states.EvFail);
	// nothing runs after.
	Fail string
	// Save persists the node before Then when there is no Event (a step
	// that must be on disk before the conductor acts on it).
	Save bool
	// After is how long to wait before Then (poll again after); the node
	// stays locked.
	After time.Duration
	// Then is the next step, run once the Outcome is applied; nil: the node
	// waits for its next event.
	Then Step
}

// Wait: nothing to apply; the node waits for its next event.
func Wait() Outcome { return Outcome{} }

// Next applies event, then runs then (nil: wait for the next event).
func Next(event string, then Step) Outcome { return Outcome{Event: event, Then: then} }

// Failed fails the node with reason as last_error.
func Failed(reason string) Outcome { return Outcome{Fail: reason} }

// Saved persists the node, then runs then.
func Saved(then Step) Outcome { return Outcome{Save: true, Then: then} }

// PollAfter runs then after d (the node stays locked).
func PollAfter(d time.Duration, then Step) Outcome { return Outcome{After: d, Then: then} }

// Interface is a deploy interface. The conductor calls each method with the
// node locked and in the state named.
type Interface interface {
	// Name is "agent" or "pxe".
	Name() string
	// ValidateDeploy checks instance_info before a deploy is accepted; the
	// error becomes a 400 naming the missing or bad field.
	ValidateDeploy(n *store.Node) error
	// Deploy runs in "deploying": set the boot device and (re)boot the node
	// into the ramdisk, and normally return Next(states.EvWait, nil) (fast
	// track: the ramdisk already runs, and Then goes on at once).
	Deploy(ctx context.Context, t Task) (Outcome, error)
	// PrepareCleaning runs in "cleaning": boot the node into the ramdisk,
	// as Deploy does.
	PrepareCleaning(ctx context.Context, t Task) (Outcome, error)
	// TearDown runs in "deleting": power off and forget the instance.
	TearDown(ctx context.Context, t Task) error
	// Continue is the call-back: it runs for a node in "wait call-back" or
	// "clean wait" after a heartbeat, and returns the node's next step.
	Continue(ctx context.Context, t Task) (Outcome, error)
}

// Rescuer is implemented by deploy interfaces that can rescue a node, as
// Ironic's "agent" rescue interface does: the node boots the agent as its
// rescue ramdisk in place of the instance (whose disk is left alone), the
// agent's heartbeat in "rescue wait" is the call-back (Continue), and
// unrescue boots the instance from its disk again. A deploy interface
// without it refuses rescue (Ironic's no-rescue).
type Rescuer interface {
	// ValidateRescue checks the node, with instance_info.rescue_password
	// set, before rescue is accepted; the error becomes a 400.
	ValidateRescue(n *store.Node) error
	// Rescue runs in "rescuing": power off and boot the rescue ramdisk;
	// normally Next(states.EvWait, nil).
	Rescue(ctx context.Context, t Task) (Outcome, error)
	// Unrescue runs in "unrescuing": boot the instance from its disk;
	// normally Next(states.EvDone, nil).
	Unrescue(ctx context.Context, t Task) (Outcome, error)
}

// Rescue password fields of instance_info, as Ironic keeps them while a
// rescue is under way (the API masks both).
const (
	RescuePasswordKey       = "rescue_password"
	HashedRescuePasswordKey = "hashed_rescue_password"
)

// Vendor is implemented by deploy interfaces that serve node vendor_passthru
// methods other than the agent's heartbeat (e.g. PXE's pass_deploy_info).
type Vendor interface {
	// VendorValidate checks a call before it is accepted; an error is a 400.
	VendorValidate(n *store.Node, method string, body []byte) error
	// VendorPassthru runs after the API answered 202, with the node locked.
	VendorPassthru(ctx context.Context, t Task, method string, body []byte) (Outcome, error)
}

// BootIntoRamdisk sets network boot for the next boot only and (re)boots
// the node, into the agent's or the deploy ramdisk: both deploy interfaces
// boot this way.
func BootIntoRamdisk(ctx context.Context, t Task) error {
	if err := t.SetBootDevice(ctx, power.PXE, false); err != nil {
		return err
	}
	st, err := t.GetPower(ctx)
	if err != nil {
		return err
	}
	if st == power.On {
		return t.SetPower(ctx, power.Reboot)
	}
	return t.SetPower(ctx, power.On)
}

// BootModeUEFI reports whether the node boots in UEFI mode: boot_mode:uefi
// in instance_info or properties capabilities (a "k:v,k:v" string or a map),
// or a plain boot_mode key.
func BootModeUEFI(n *store.Node) bool {
	for _, m := range []map[string]any{n.InstanceInfo, n.Properties} {
		switch caps := m["capabilities"].(type) {
		case string:
			for _, kv := range strings.Split(caps, ",") {
				k, v, _ := strings.Cut(strings.TrimSpace(kv), ":")
				if k == "boot_mode" {
					return v == "uefi"
				}
			}
		case map[string]any:
			if v, ok := caps["boot_mode"]; ok {
				return v == "uefi"
			}
		}
		if v, ok := m["boot_mode"]; ok {
			return v == "uefi"
		}
	}
	return false
}
