package fakeagent

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Hardware is what the machine the agent runs on is made of, as the agent
// consumes it: its inventory and the disks it writes. The lab's machines
// satisfy it through HardwareState; the agent imports nothing of the lab.
type Hardware struct {
	CPUs         int           `json:"cpus"`
	CPUArch      string        `json:"cpu_arch"`
	CPUModel     string        `json:"cpu_model"`
	MemoryMB     int           `json:"memory_mb"`
	NICs         []NIC         `json:"nics"`
	Disks        []BlockDevice `json:"disks"`
	Vendor       string        `json:"vendor"`
	Product      string        `json:"product"`
	SerialNumber string        `json:"serial_number"`
	BIOSVersion  string        `json:"bios_version"`
	// BIOSSettings are firmware settings a clean step may change (e.g. "vt": "on").
	BIOSSettings map[string]string `json:"bios_settings,omitempty"`
	// UEFIBootEntries are the machine's UEFI NVRAM boot entries, kept by the
	// machine across boots: install_bootloader adds one, clean_uefi_nvram
	// removes those that match.
	UEFIBootEntries []UEFIBootEntry `json:"uefi_boot_entries,omitempty"`
}

// NIC is one network interface.
type NIC struct {
	Name string `json:"name"`
	MAC  string `json:"mac"`
}

// BlockDevice is one disk. Path is where its bytes are (a file or a block
// device) for OpenDisk.
type BlockDevice struct {
	Name        string `json:"name"`
	SizeBytes   int64  `json:"size"`
	Rotational  bool   `json:"rotational"`
	SecureErase bool   `json:"secure_erase"`
	Path        string `json:"path"`
}

// HardwareState is the machine the agent runs on, behind the two calls the
// agent needs. The lab implements it on its machines so that changes made by
// clean steps (BIOS version and settings) persist across agent reboots and
// show in the next inventory.
type HardwareState interface {
	Hardware() Hardware
	// UpdateHardware applies change to the machine's hardware atomically.
	UpdateHardware(change func(*Hardware)) error
}

// MemHardware is a HardwareState held in memory (standalone agents, tests).
type MemHardware struct {
	mu sync.Mutex
	hw Hardware
}

// NewMemHardware holds a copy of hw.
func NewMemHardware(hw Hardware) *MemHardware {
	return &MemHardware{hw: cloneHardware(hw)}
}

// Hardware returns a copy of the current hardware.
func (m *MemHardware) Hardware() Hardware {
	m.mu.Lock()
	defer m.mu.Unlock()
	return cloneHardware(m.hw)
}

// UpdateHardware applies change under the lock.
func (m *MemHardware) UpdateHardware(change func(*Hardware)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	hw := cloneHardware(m.hw)
	change(&hw)
	m.hw = hw
	return nil
}

func cloneHardware(hw Hardware) Hardware {
	hw.NICs = slices.Clone(hw.NICs)
	hw.Disks = slices.Clone(hw.Disks)
	hw.BIOSSettings = maps.Clone(hw.BIOSSettings)
	return hw
}

// Inventory is IPA's hardware inventory (list_hardware_info), the fields an
// emulated machine can fill. BIOSSettings is ironlab's addition: IPA has no
// such field, and scenarios check apply_bios_settings through it.
type Inventory struct {
	Interfaces   []Interface       `json:"interfaces"`
	CPU          CPU               `json:"cpu"`
	Disks        []InventoryDisk   `json:"disks"`
	Memory       Memory            `json:"memory"`
	BMCAddress   *string           `json:"bmc_address"`
	BMCV6Address *string           `json:"bmc_v6address"`
	SystemVendor SystemVendor      `json:"system_vendor"`
	Boot         Boot              `json:"boot"`
	Hostname     string            `json:"hostname"`
	BIOSSettings map[string]string `json:"bios_settings,omitempty"`
}

// Interface is one NIC in the inventory.
type Interface struct {
	Name        string  `json:"name"`
	MACAddress  string  `json:"mac_address"`
	IPv4Address *string `json:"ipv4_address"`
	IPv6Address *string `json:"ipv6_address"`
	HasCarrier  bool    `json:"has_carrier"`
	Vendor      string  `json:"vendor"`
	Product     string  `json:"product"`
	SpeedMbps   int     `json:"speed_mbps"`
	Driver      string  `json:"driver"`
	// The original (v2) inventory's LLDP fields; always null here.
	SwitchPortDescr    *string `json:"switch_port_descr"`
	SwitchChassisDescr *string `json:"switch_chassis_descr"`
}

// CPU is the inventory's cpu object. Frequency is a string in IPA.
type CPU struct {
	ModelName    string   `json:"model_name"`
	Frequency    string   `json:"frequency"`
	Count        int      `json:"count"`
	Architecture string   `json:"architecture"`
	Flags        []string `json:"flags"`
	SocketCount  int      `json:"socket_count"`
}

// InventoryDisk is one block device; Size is in bytes.
type InventoryDisk struct {
	Name             string  `json:"name"`
	Model            string  `json:"model"`
	Size             int64   `json:"size"`
	Rotational       bool    `json:"rotational"`
	WWN              *string `json:"wwn"`
	Serial           string  `json:"serial"`
	Vendor           string  `json:"vendor"`
	HCTL             *string `json:"hctl"`
	ByPath           *string `json:"by_path"`
	LogicalSectors   int     `json:"logical_sectors"`
	PhysicalSectors  int     `json:"physical_sectors"`
	Tran             *string `json:"tran"`
	SupportsSecErase bool    `json:"-"`
}

// Memory: Total in bytes, PhysicalMB in MiB.
type Memory struct {
	Total      int64 `json:"total"`
	PhysicalMB int   `json:"physical_mb"`
}

// SystemVendor is the DMI system information.
type SystemVendor struct {
	ProductName  string   `json:"product_name"`
	SerialNumber string   `json:"serial_number"`
	Manufacturer string   `json:"manufacturer"`
	Firmware     Firmware `json:"firmware"`
}

// Firmware is the BIOS/UEFI firmware; Version changes with update_firmware.
type Firmware struct {
	Vendor    string `json:"vendor"`
	Version   string `json:"version"`
	BuildDate string `json:"build_date"`
}

// Boot is how the agent was booted; PXEInterface is the boot NIC's MAC.
type Boot struct {
	CurrentBootMode string `json:"current_boot_mode"`
	PXEInterface    string `json:"pxe_interface"`
}

// BuildInventory turns a machine's hardware into IPA's inventory shape.
func BuildInventory(hw Hardware, bootMode, hostname string) Inventory {
	inv := Inventory{
		Interfaces: make([]Interface, 0, len(hw.NICs)),
		Disks:      make([]InventoryDisk, 0, len(hw.Disks)),
		CPU: CPU{
			ModelName:    orDefault(hw.CPUModel, "ironlab virtual CPU"),
			Frequency:    "2400.000",
			Count:        hw.CPUs,
			Architecture: orDefault(hw.CPUArch, "x86_64"),
			Flags:        []string{},
			SocketCount:  1,
		},
		Memory: Memory{Total: int64(hw.MemoryMB) << 20, PhysicalMB: hw.MemoryMB},
		SystemVendor: SystemVendor{
			ProductName:  hw.Product,
			SerialNumber: hw.SerialNumber,
			Manufacturer: hw.Vendor,
			Firmware: Firmware{
				Vendor:    orDefault(hw.Vendor, "ironlab"),
				Version:   hw.BIOSVersion,
				BuildDate: "",
			},
		},
		Boot:         Boot{CurrentBootMode: bootMode},
		Hostname:     hostname,
		BIOSSettings: maps.Clone(hw.BIOSSettings),
	}
	for i, n := range hw.NICs {
		name := n.Name
		if name == "" {
			name = fmt.Sprintf("eth%d", i)
		}
		inv.Interfaces = append(inv.Interfaces, Interface{
			Name: name, MACAddress: strings.ToLower(n.MAC), HasCarrier: true,
			Vendor: "0x1af4", Product: "0x0001", SpeedMbps: 10000, Driver: "virtio_net",
		})
	}
	if len(hw.NICs) > 0 {
		inv.Boot.PXEInterface = strings.ToLower(hw.NICs[0].MAC)
		if inv.Hostname == "" {
			inv.Hostname = "ironlab-" + strings.ReplaceAll(strings.ToLower(hw.NICs[0].MAC), ":", "")
		}
	}
	for i, d := range hw.Disks {
		inv.Disks = append(inv.Disks, InventoryDisk{
			Name: devPath(d.Name), Model: "ironlab disk", Size: d.SizeBytes, Rotational: d.Rotational,
			Serial: fmt.Sprintf("%s-disk%d", orDefault(hw.SerialNumber, "ironlab"), i), Vendor: "ironlab",
			LogicalSectors: 512, PhysicalSectors: 512, SupportsSecErase: d.SecureErase,
		})
	}
	return inv
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// MACs returns the machine's MAC addresses, lower case, as lookup sends them.
func (inv Inventory) MACs() []string {
	macs := make([]string, 0, len(inv.Interfaces))
	for _, i := range inv.Interfaces {
		if i.MACAddress != "" {
			macs = append(macs, i.MACAddress)
		}
	}
	return macs
}
