package lab

import (
	"context"
	"fmt"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/simulator"
)

// hardwareOf is a machine whose hardware clean steps may change.
type hardwareOf interface {
	simulator.Machine
	UpdateHardware(func(*simulator.Hardware)) error
}

// NetBoot runs what the lab serves a machine that boots from the network:
// the in-process agent, pointed at the driver API, until the machine powers
// off or resets.
func (l *Lab) NetBoot(ctx context.Context, m simulator.Machine) error {
	n, ok := l.byName[m.Name()]
	if !ok {
		return fmt.Errorf("%w: %s", simulator.ErrNoSuchMachine, m.Name())
	}
	hm, ok := m.(hardwareOf)
	if !ok {
		return fmt.Errorf("machine %s: its hardware cannot be tracked by the agent", m.Name())
	}
	faults := n.bootFaults()
	a, err := fakeagent.New(fakeagent.Config{
		APIURL:                l.driverURL,
		Dialect:               fakeagent.Dialect(n.Dialect),
		Driver:                n.Driver,
		Mux:                   l.mux,
		Hardware:              hm,
		BootMode:              n.BootMode,
		Hostname:              n.Name,
		LookupInterval:        l.spec.LookupInterval,
		HeartbeatErrorBackoff: l.spec.HeartbeatErrorBackoff,
		ForcedHeartbeatGap:    l.spec.ForcedHeartbeatGap,
		Faults:                faults,
		Logger:                l.log.With("node", n.Name),
		// standby.power_off: the machine powers off. It runs in its own
		// goroutine; powering off waits for this boot to end.
		PowerOff: func(context.Context) error {
			return m.SetPower(context.Background(), simulator.ActionOff)
		},
	})
	if err != nil {
		return fmt.Errorf("node %s: agent: %w", n.Name, err)
	}
	n.mu.Lock()
	n.agent = a
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		if n.agent == a {
			n.agent = nil
		}
		n.mu.Unlock()
	}()
	return a.Run(ctx)
}
