package scenarios

import (
	"fmt"

	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/lab"
)

// MaxVMs bounds a libvirt lab: a VM costs about 215 MiB and a few
// CPU-seconds per boot under TCG.
const MaxVMs = 32

// vmLab checks the libvirt backend's settings of a lab section and fills
// in their defaults.
func (v *validator) vmLab(l *Lab) {
	switch l.Accel {
	case "":
		l.Accel = "auto"
	case "auto", "kvm", "tcg":
	default:
		v.at("$.lab.accel", "must be auto, kvm or tcg, got %q", l.Accel)
	}
	switch l.PXE {
	case "":
		l.PXE = "direct"
	case "direct", "ipxe":
	default:
		v.at("$.lab.pxe", "must be direct or ipxe, got %q", l.PXE)
	}
	if l.MemoryMB != 0 && (l.MemoryMB < 128 || l.MemoryMB > 16384) {
		v.at("$.lab.memory_mb", "each VM's RAM in MiB: 128 to 16384 (default 256), got %d", l.MemoryMB)
	}
	if l.Backend != "libvirt" {
		return
	}
	total := 0
	for i, g := range l.Groups {
		total += g.Count
		if why := vmUnsupported(lab.BMC(g.BMC), lab.Deploy(g.Deploy)); why != "" {
			v.at(fmt.Sprintf("$.lab.groups[%d].driver", i), "group %s (%s): %s", g.Name, g.Driver, why)
		}
		if g.NICs > 1 {
			v.at(fmt.Sprintf("$.lab.groups[%d].nics", i), "the libvirt backend gives a VM one NIC, got %d", g.NICs)
		}
	}
	if total > MaxVMs {
		v.at("$.lab.groups", "%d VMs in all; the libvirt backend takes at most %d", total, MaxVMs)
	}
}

// vmUnsupported says why hardware cannot run on the libvirt backend.
func vmUnsupported(bmc lab.BMC, deploy lab.Deploy) string {
	if bmc == lab.BMCNone && deploy == lab.DeployPXE {
		return "FakePower never powers a VM (bmc none), so it never boots the deploy ramdisk (give the group bmc ipmi or ssh: pxe_ipmitool, pxe_pyghmi or pxe_ssh)"
	}
	return ""
}

// vmSpec is the libvirt part of a scenario's lab.
func vmSpec(s *Scenario) lab.LibvirtSpec {
	return lab.LibvirtSpec{URI: s.Lab.LibvirtURI, Accel: s.Lab.Accel, PXE: s.Lab.PXE, MemoryMB: s.Lab.MemoryMB}
}

// sinceBoot is the console output since the machine last powered on: the
// machine's own account where it keeps one (VM serial logs span every
// start), else the fake BIOS's boot banner.
func sinceBoot(m simulator.Machine) (string, error) {
	if bc, ok := m.(simulator.BootConsole); ok {
		return bc.ConsoleSinceBoot()
	}
	log, err := m.ConsoleLog()
	return lastBoot(log), err
}
