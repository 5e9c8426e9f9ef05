// Package simulator is the lab: the Machine interface and its backends, the
// virtual BMCs, the image server, the boot folder, and lab assembly from a spec.
//
// Every protocol front-end (IPMI, SSH power, network boot) talks to a node's
// hardware only through Machine.
package simulator

import (
	"context"
	"errors"
	"time"
)

// PowerState is what a machine's power is.
type PowerState string

const (
	PowerOn  PowerState = "on"
	PowerOff PowerState = "off"
)

// PowerAction is a change a BMC or power interface asks of a machine.
type PowerAction string

const (
	ActionOn      PowerAction = "on"    // power on (no-op when on)
	ActionOff     PowerAction = "off"   // hard power off
	ActionSoftOff PowerAction = "soft"  // ACPI shutdown request
	ActionReset   PowerAction = "reset" // hard reset (reboot while on)
	ActionCycle   PowerAction = "cycle" // off, then on
	ActionNMI     PowerAction = "nmi"   // diagnostic interrupt
)

// BootDevice is what a machine boots next.
type BootDevice string

const (
	BootNetwork BootDevice = "network"
	BootDisk    BootDevice = "disk"
	// BootCD boots the virtual CD a Redfish BMC inserted (machines that
	// implement VirtualMedia); BootSetup stops in firmware setup.
	BootCD    BootDevice = "cd"
	BootSetup BootDevice = "setup"
)

// BootConfig is a machine's boot selection. A non-persistent selection applies
// to the next boot only; after it the machine falls back to its persistent one.
type BootConfig struct {
	Device     BootDevice `json:"device"`
	Persistent bool       `json:"persistent"`
	UEFI       bool       `json:"uefi"`
}

// NIC is one network interface of a machine.
type NIC struct {
	Name string `json:"name"`
	MAC  string `json:"mac"`
}

// Disk is one disk of a machine. Path is where its bytes live on the lab host
// (a sparse file for the fake backend, the domain's disk image for libvirt).
type Disk struct {
	Name        string `json:"name"`
	SizeBytes   int64  `json:"size"`
	Rotational  bool   `json:"rotational"`
	SecureErase bool   `json:"secure_erase"`
	Path        string `json:"path"`
}

// Hardware is what a machine is made of; the agent reports it as inventory.
type Hardware struct {
	CPUs         int    `json:"cpus"`
	CPUArch      string `json:"cpu_arch"`
	CPUModel     string `json:"cpu_model"`
	MemoryMB     int    `json:"memory_mb"`
	NICs         []NIC  `json:"nics"`
	Disks        []Disk `json:"disks"`
	Vendor       string `json:"vendor"`
	Product      string `json:"product"`
	SerialNumber string `json:"serial_number"`
	BIOSVersion  string `json:"bios_version"`
	// BIOSSettings are firmware settings a clean step may change (e.g. "vt": "on").
	BIOSSettings map[string]string `json:"bios_settings,omitempty"`
	// UEFIBootEntries are the boot entries in the machine's UEFI NVRAM: the
	// agent's install_bootloader adds one, clean_uefi_nvram removes them;
	// they outlive every boot, as NVRAM does.
	UEFIBootEntries []UEFIBootEntry `json:"uefi_boot_entries,omitempty"`
}

// UEFIBootEntry is one UEFI NVRAM boot entry (what efibootmgr lists).
type UEFIBootEntry struct {
	Label    string `json:"label"`
	Device   string `json:"device"`
	PartUUID string `json:"partuuid"`
	Loader   string `json:"loader"`
	// Path is the device path of an entry that is not on a disk partition
	// (a network boot: "PciRoot(0x0)/Pci(0x3,0x0)/MAC(525400123456,1)").
	Path string `json:"path,omitempty"`
}

// Machine is the narrow interface to one node's hardware.
type Machine interface {
	// Name is the machine's stable name in the lab (e.g. "node-3").
	Name() string
	// UUID is the machine's stable identity, derived from the lab seed.
	UUID() string
	Power(ctx context.Context) (PowerState, error)
	SetPower(ctx context.Context, a PowerAction) error
	BootConfig(ctx context.Context) (BootConfig, error)
	SetBootConfig(ctx context.Context, b BootConfig) error
	Hardware() Hardware
	// ConsoleLog is everything the machine printed on its serial console.
	ConsoleLog() (string, error)
}

// BootConsole is implemented by machines that can tell their console
// output since the last power on apart from earlier boots (the libvirt
// backend's serial log spans every start).
type BootConsole interface {
	ConsoleSinceBoot() (string, error)
}

// ConsoleWriter is implemented by machines whose console an in-process
// boot (the fake backend's agent) writes to, as a ramdisk prints on COM1.
type ConsoleWriter interface {
	ConsolePrintf(format string, a ...any)
}

// FirmwareStore is implemented by machines whose firmware state (BIOS
// version and settings) an agent's clean steps change, and which keep it
// across boots (the fake backend's).
type FirmwareStore interface {
	UpdateHardware(change func(*Hardware)) error
}

// MachineFaults are a machine's fault knobs.
type MachineFaults struct {
	// FailBoot makes every boot fail: the console says so and nothing runs.
	FailBoot bool `yaml:"fail_boot" json:"fail_boot"`
	// PowerLag delays every power change by this long.
	PowerLag time.Duration `yaml:"power_lag" json:"power_lag"`
}

// FaultInjector is implemented by machines whose faults can be set at run
// time (the fake backend's; a VM's power and boot are QEMU's own).
type FaultInjector interface {
	SetFaults(MachineFaults)
}

// NetBooter serves what a machine boots from the network: the lab's agent
// ramdisk or deploy ramdisk, chosen by the per-MAC boot config. In the fake
// backend Boot runs the in-process agent until ctx is cancelled (power off or
// reset); it returns when the booted system stops.
type NetBooter interface {
	NetBoot(ctx context.Context, m Machine) error
}

// VirtualMedia is implemented by machines with a virtual CD drive, which a
// Redfish BMC's InsertMedia fills with an image URL. Booting BootCD fetches
// the image from that URL (a failed fetch is a boot failure on the console).
type VirtualMedia interface {
	InsertMedia(ctx context.Context, imageURL string) error
	EjectMedia(ctx context.Context) error
}

// BootDeviceSupport is implemented by machines that boot only some of the
// BootDevices (a VM has no firmware setup to stop in; a foreign libvirt
// domain no CD drive of the lab's); a BMC offers those alone. A machine
// without it boots all of them.
type BootDeviceSupport interface {
	SupportsBootDevice(BootDevice) bool
}

// ErrNoSuchMachine is returned when a lookup names a machine the lab lacks.
var ErrNoSuchMachine = errors.New("no such machine")
