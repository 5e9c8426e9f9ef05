// Package bmctest has an in-memory Machine for tests of IPMI clients and
// servers: power and boot config recorded, every power action logged.
package bmctest

import (
	"context"
	"fmt"
	"sync"

	"github.com/ironlab/ironlab/simulator"
)

// Machine records power and boot config in memory; conformance tests assert
// on it. It starts off, booting its disk persistently.
type Machine struct {
	name string

	mu      sync.Mutex
	power   simulator.PowerState
	boot    simulator.BootConfig
	actions []simulator.PowerAction
}

// New returns a powered-off machine.
func New(name string) *Machine {
	return &Machine{name: name, power: simulator.PowerOff, boot: simulator.BootConfig{Device: simulator.BootDisk, Persistent: true}}
}

// Name is the machine's name.
func (m *Machine) Name() string { return m.name }

// UUID is fixed: UUID.
func (m *Machine) UUID() string { return UUID }

// UUID is every test machine's UUID.
const UUID = "6d3a9f0e-2c1b-4a5d-8e7f-0123456789ab"

func (m *Machine) Power(context.Context) (simulator.PowerState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.power, nil
}

func (m *Machine) SetPower(_ context.Context, a simulator.PowerAction) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.actions = append(m.actions, a)
	switch a {
	case simulator.ActionOn, simulator.ActionCycle:
		m.power = simulator.PowerOn
	case simulator.ActionOff, simulator.ActionSoftOff:
		m.power = simulator.PowerOff
	case simulator.ActionReset, simulator.ActionNMI:
		if m.power != simulator.PowerOn {
			return fmt.Errorf("%s: %s while off", m.name, a)
		}
	default:
		return fmt.Errorf("%s: unknown action %q", m.name, a)
	}
	return nil
}

func (m *Machine) BootConfig(context.Context) (simulator.BootConfig, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.boot, nil
}

func (m *Machine) SetBootConfig(_ context.Context, b simulator.BootConfig) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.boot = b
	return nil
}

func (m *Machine) Hardware() simulator.Hardware { return simulator.Hardware{} }
func (m *Machine) ConsoleLog() (string, error)  { return "", nil }

// State is the machine's power, boot config and the power actions since
// the last SetState.
func (m *Machine) State() (simulator.PowerState, simulator.BootConfig, []simulator.PowerAction) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.power, m.boot, append([]simulator.PowerAction(nil), m.actions...)
}

// SetState resets the machine to p and b, forgetting past actions.
func (m *Machine) SetState(p simulator.PowerState, b simulator.BootConfig) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.power, m.boot, m.actions = p, b, nil
}

var _ simulator.Machine = (*Machine)(nil)

// Collapsed is acts with consecutive repeats folded into one. A client that
// times out waiting for a loaded machine resends its request (ipmitool
// after -N seconds, go-ipmi and pyghmi likewise), and the BMC runs it again;
// what the user asked for is the sequence of distinct actions.
func Collapsed(acts []simulator.PowerAction) []simulator.PowerAction {
	var out []simulator.PowerAction
	for _, a := range acts {
		if len(out) == 0 || out[len(out)-1] != a {
			out = append(out, a)
		}
	}
	return out
}
