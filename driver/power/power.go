// Package power holds the driver's power and management interfaces: how the
// conductor turns a node on and off and picks its boot device. Implementations
// reach the node only the way real Ironic does (IPMI over UDP, SSH commands),
// or, for FakePower, not at all.
package power

import (
	"context"
	"errors"
)

// State is a node's power state in Ironic's words.
type State string

const (
	On      State = "power on"
	Off     State = "power off"
	SoftOff State = "soft power off"
	Reboot  State = "rebooting"
)

// Device is a boot device in Ironic's words.
type Device string

const (
	PXE  Device = "pxe"
	Disk Device = "disk"
)

// BootOptions qualify a boot device change.
type BootOptions struct {
	Persistent bool
	UEFI       bool
}

// DriverInfo is a node's driver_info: ipmi_address, ipmi_port, ipmi_username,
// ipmi_password, ssh_address, ... as the node was enrolled with.
type DriverInfo map[string]any

// Interface is a driver class's power + management interface.
type Interface interface {
	// Name is the interface's name as reported by the API ("fake", "ipmitool", ...).
	Name() string
	// Validate checks driver_info has what this interface needs.
	Validate(info DriverInfo) error
	GetPowerState(ctx context.Context, info DriverInfo) (State, error)
	// SetPowerState moves the node to On, Off or SoftOff, or reboots it
	// (Reboot: off, then on, as Ironic does).
	SetPowerState(ctx context.Context, info DriverInfo, target State) error
	SetBootDevice(ctx context.Context, info DriverInfo, dev Device, opts BootOptions) error
}

// ErrMissingInfo is wrapped by Validate when driver_info lacks a field.
var ErrMissingInfo = errors.New("missing driver_info field")

// Keys the conductor adds to the copy of driver_info it passes to every call,
// for interfaces that keep no state of their own (FakePower reports the
// recorded state, as Ironic's FakePower returns node.power_state).
const (
	NodeUUIDKey      = "ironlab_node_uuid"
	RecordedStateKey = "ironlab_power_state"
)
