package bmc

import (
	"context"
	"fmt"
	"sync"

	"github.com/ironlab/ironlab/simulator"
)

// testMachine records power and boot config in memory; the conformance tests
// assert on it.
type testMachine struct {
	name string

	mu      sync.Mutex
	power   simulator.PowerState
	boot    simulator.BootConfig
	actions []simulator.PowerAction
}

func newTestMachine(name string) *testMachine {
	return &testMachine{name: name, power: simulator.PowerOff, boot: simulator.BootConfig{Device: simulator.BootDisk, Persistent: true}}
}

func (m *testMachine) Name() string { return m.name }
func (m *testMachine) UUID() string { return "6d3a9f0e-2c1b-4a5d-8e7f-0123456789ab" }

func (m *testMachine) Power(context.Context) (simulator.PowerState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.power, nil
}

func (m *testMachine) SetPower(_ context.Context, a simulator.PowerAction) error {
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

func (m *testMachine) BootConfig(context.Context) (simulator.BootConfig, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.boot, nil
}

func (m *testMachine) SetBootConfig(_ context.Context, b simulator.BootConfig) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.boot = b
	return nil
}

func (m *testMachine) Hardware() simulator.Hardware { return simulator.Hardware{} }
func (m *testMachine) ConsoleLog() (string, error)  { return "", nil }

func (m *testMachine) state() (simulator.PowerState, simulator.BootConfig, []simulator.PowerAction) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.power, m.boot, append([]simulator.PowerAction(nil), m.actions...)
}

func (m *testMachine) setState(p simulator.PowerState, b simulator.BootConfig) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.power, m.boot, m.actions = p, b, nil
}
