// Package fake is FakePower, as in Ironic: power and boot device changes are
// only recorded by the conductor; nothing ever reaches a machine.
package fake

import (
	"context"
	"fmt"

	"github.com/ironlab/ironlab/driver/power"
)

// Power is the "fake" power and management interface.
type Power struct{}

// New returns FakePower.
func New() Power { return Power{} }

var _ power.Interface = Power{}

// Name is "fake".
func (Power) Name() string { return "fake" }

// Validate accepts any driver_info.
func (Power) Validate(power.DriverInfo) error { return nil }

// GetPowerState returns the state the conductor recorded, "power off" when none.
func (Power) GetPowerState(_ context.Context, info power.DriverInfo) (power.State, error) {
	if s, _ := info[power.RecordedStateKey].(string); s == string(power.On) || s == string(power.Off) {
		return power.State(s), nil
	}
	return power.Off, nil
}

// SetPowerState accepts On, Off, SoftOff and Reboot and does nothing else.
func (Power) SetPowerState(_ context.Context, _ power.DriverInfo, target power.State) error {
	switch target {
	case power.On, power.Off, power.SoftOff, power.Reboot:
		return nil
	}
	return fmt.Errorf("fake power: unsupported target %q", target)
}

// SetBootDevice accepts pxe and disk and does nothing else.
func (Power) SetBootDevice(_ context.Context, _ power.DriverInfo, dev power.Device, _ power.BootOptions) error {
	switch dev {
	case power.PXE, power.Disk:
		return nil
	}
	return fmt.Errorf("fake power: unsupported boot device %q", dev)
}
