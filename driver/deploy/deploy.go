// Package deploy defines the deploy interface of a driver class: how the
// conductor gets an image onto a node (agent: the agent writes it; pxe: the
// conductor streams it) and how the node is cleaned. The conductor owns the
// state machine, the lock and persistence; a deploy interface acts on one
// locked node through a Task.
package deploy

import (
	"context"
	"log/slog"
	"strings"

	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/store"
)

// Task is one locked node as the conductor hands it to a deploy interface.
// Every method persists before it returns, so a restarted conductor sees
// what was about to happen.
type Task interface {
	// Node is the locked node; change it, then Save or Process.
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
	// Save persists the node.
	Save(ctx context.Context) error
	// Process applies a state machine event (states.Ev*), persisting the new
	// state and recording an event.
	Process(ctx context.Context, event string) error
	// Fail sets last_error to msg and applies states.EvFail.
	Fail(ctx context.Context, msg string) error
	// FastTrack is Ironic's is_fast_track: fast track is configured, the
	// node's agent has a URL and heartbeated within heartbeat_timeout, and
	// the node is powered on. A deploy interface whose ramdisk can stay up
	// may then skip booting it, and leave it running after cleaning.
	FastTrack(ctx context.Context) bool
	// Record appends an event of kind (store.Kind*) to the node's history.
	Record(ctx context.Context, kind, event, message string, detail any)
	Logger() *slog.Logger
}

// Interface is a deploy interface. The conductor calls each method with the
// node locked and in the state named.
type Interface interface {
	// Name is "agent" or "pxe".
	Name() string
	// ValidateDeploy checks instance_info before a deploy is accepted; the
	// error becomes a 400 naming the missing or bad field.
	ValidateDeploy(n *store.Node) error
	// Deploy runs in "deploying": set the boot device and (re)boot the node
	// into the ramdisk. The conductor then moves the node to "wait call-back",
	// unless Deploy moved the node on itself (fast track: the ramdisk already
	// runs, so Deploy goes to "wait call-back" and continues at once).
	Deploy(ctx context.Context, t Task) error
	// PrepareCleaning runs in "cleaning": boot the node into the ramdisk. The
	// conductor then moves the node to "clean wait", unless PrepareCleaning
	// moved it on itself (fast track, as for Deploy).
	PrepareCleaning(ctx context.Context, t Task) error
	// TearDown runs in "deleting": power off and forget the instance.
	TearDown(ctx context.Context, t Task) error
	// Continue is the call-back: it runs for a node in "wait call-back" or
	// "clean wait" after a heartbeat, and advances the node by one step
	// (through Process/Fail) or leaves it waiting.
	Continue(ctx context.Context, t Task) error
}

// Vendor is implemented by deploy interfaces that serve node vendor_passthru
// methods other than the agent's heartbeat (e.g. PXE's pass_deploy_info).
type Vendor interface {
	// VendorValidate checks a call before it is accepted; an error is a 400.
	VendorValidate(n *store.Node, method string, body []byte) error
	// VendorPassthru runs after the API answered 202, with the node locked.
	VendorPassthru(ctx context.Context, t Task, method string, body []byte) error
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
