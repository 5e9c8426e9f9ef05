package lab

import (
	"fmt"
	"time"
)

// BMC is how a node's power and boot device are reached out of band.
type BMC string

const (
	// BMCIPMI is a virtual IPMI BMC per node (IPMI v2.0 lanplus, as
	// ipmitool and pyghmi speak it).
	BMCIPMI BMC = "ipmi"
	// BMCSSH is a login on the lab's SSH virtualization host: virsh over
	// SSH powers the node's VM.
	BMCSSH BMC = "ssh"
	// BMCNone is no out-of-band control: the machine is powered on and
	// network-booted when the lab starts and stays on (fake power).
	BMCNone BMC = "none"
	// BMCRedfish is a system on a Redfish service: the group's one https
	// service for all its nodes (as sushy-tools serves many systems), or
	// one service per node (Hardware.RedfishListen).
	BMCRedfish BMC = "redfish"
	// A further BMC kind goes here, in BMCs and check, with its case in
	// newNode and its classes and driver_info in package enroll.
)

// BMCs are the BMC kinds a group may have.
func BMCs() []BMC { return []BMC{BMCIPMI, BMCRedfish, BMCSSH, BMCNone} }

// RedfishListen is how a Redfish group's nodes are reached.
type RedfishListen string

const (
	// RedfishShared (the default) serves the group's nodes as systems of
	// one listener, /redfish/v1/Systems/{uuid}, as sushy-tools does.
	RedfishShared RedfishListen = "shared"
	// RedfishPerNode gives every node a Redfish service of its own on its
	// own port, as a server's own BMC is.
	RedfishPerNode RedfishListen = "per-node"
)

// Deploy is how a node is provisioned, as its enrollment says: it decides
// what the lab's boot server serves the node's network boot.
type Deploy string

const (
	// DeployAgent: a network boot runs the agent ramdisk (IPA), which
	// looks up at the driver and writes the image itself.
	DeployAgent Deploy = "agent"
	// DeployPXE: the PXE driver writes a per-MAC boot entry for its deploy
	// ramdisk, which serves the disk for the conductor to write; without
	// an entry a network boot finds nothing.
	DeployPXE Deploy = "pxe"
)

// Hardware is what a group's machines are made of.
type Hardware struct {
	// BMC is the nodes' out-of-band control.
	BMC BMC
	// RedfishListen is, for BMC redfish, one listener for the group
	// (RedfishShared, the default "") or one per node (RedfishPerNode).
	RedfishListen RedfishListen
	// Firmware is "bios" or "uefi".
	Firmware string
	CPUs     int
	MemoryMB int
	// DiskSize is the size of the one disk in bytes; SecureErase says it
	// supports secure erase (erase_devices takes that path).
	DiskSize    int64
	SecureErase bool
	// NICs is the number of network interfaces (default 1); the first
	// one network-boots from the lab's boot server.
	NICs int
	// POSTTime is the firmware's time before a network boot (fake backend).
	POSTTime time.Duration
}

// Enrollment is what the lab must know of how a group's nodes are
// enrolled, as data: the lab decides nothing from driver names.
type Enrollment struct {
	// Deploy says which ramdisk the boot server serves.
	Deploy Deploy
	// Driver is the driver name the nodes are enrolled with (a legacy
	// agent's lookup URL carries it; results show it).
	Driver string
	// Dialect is the agent's API: "v1" (lookup/heartbeat with tokens) or
	// "legacy" (vendor_passthru).
	Dialect string
	// Boot is how a real Ironic boots the agent: "" or BootPXE (a network
	// boot), or BootVirtualMedia (Redfish nodes: Ironic builds a boot ISO
	// and inserts it as a virtual CD).
	Boot string
}

// Boot interfaces a group's enrollment may ask a real Ironic for.
const (
	BootPXE          = "pxe"
	BootVirtualMedia = "virtual-media"
)

func (g GroupSpec) check() error {
	switch g.BMC {
	case BMCIPMI, BMCRedfish, BMCSSH, BMCNone:
	default:
		return fmt.Errorf("group %s: BMC %q: want one of %v", g.Name, g.BMC, BMCs())
	}
	switch g.RedfishListen {
	case "", RedfishShared:
	case RedfishPerNode:
		if g.BMC != BMCRedfish {
			return fmt.Errorf("group %s: Redfish listen %q needs BMC redfish, not %q", g.Name, g.RedfishListen, g.BMC)
		}
	default:
		return fmt.Errorf("group %s: Redfish listen %q: want %s or %s", g.Name, g.RedfishListen, RedfishShared, RedfishPerNode)
	}
	switch g.Enrollment.Deploy {
	case DeployAgent, DeployPXE:
	default:
		return fmt.Errorf("group %s: deploy %q: want agent or pxe", g.Name, g.Enrollment.Deploy)
	}
	switch g.Enrollment.Boot {
	case "", BootPXE:
	case BootVirtualMedia:
		if g.BMC != BMCRedfish {
			return fmt.Errorf("group %s: boot %s needs a Redfish BMC, the group has %s", g.Name, BootVirtualMedia, g.BMC)
		}
	default:
		return fmt.Errorf("group %s: boot %q: want %s or %s", g.Name, g.Enrollment.Boot, BootPXE, BootVirtualMedia)
	}
	if g.NICs < 0 {
		return fmt.Errorf("group %s: %d NICs", g.Name, g.NICs)
	}
	return nil
}

// keepsNetbooting says whether a machine is never power-cycled by anyone
// and so network-boots whatever boot entry appears, as a PXE ROM that
// retries: no BMC, and a deploy that writes boot entries.
func (n *Node) keepsNetbooting() bool {
	return n.Hardware.BMC == BMCNone && n.Deploy == DeployPXE
}
