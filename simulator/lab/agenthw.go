package lab

import (
	"maps"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/simulator"
)

// agentHardware gives an in-process agent its machine in the agent's own
// terms (fakeagent.HardwareState): the machine's hardware, and firmware
// changes kept by the machine (simulator.FirmwareStore).
type agentHardware struct {
	m  simulator.Machine
	fw simulator.FirmwareStore
}

func (h agentHardware) Hardware() fakeagent.Hardware { return toAgent(h.m.Hardware()) }

func (h agentHardware) UpdateHardware(change func(*fakeagent.Hardware)) error {
	return h.fw.UpdateHardware(func(hw *simulator.Hardware) {
		a := toAgent(*hw)
		change(&a)
		*hw = fromAgent(a)
	})
}

func toAgent(hw simulator.Hardware) fakeagent.Hardware {
	a := fakeagent.Hardware{
		CPUs: hw.CPUs, CPUArch: hw.CPUArch, CPUModel: hw.CPUModel, MemoryMB: hw.MemoryMB,
		Vendor: hw.Vendor, Product: hw.Product, SerialNumber: hw.SerialNumber,
		BIOSVersion: hw.BIOSVersion, BIOSSettings: maps.Clone(hw.BIOSSettings),
	}
	for _, n := range hw.NICs {
		a.NICs = append(a.NICs, fakeagent.NIC{Name: n.Name, MAC: n.MAC})
	}
	for _, d := range hw.Disks {
		a.Disks = append(a.Disks, fakeagent.BlockDevice(d))
	}
	for _, e := range hw.UEFIBootEntries {
		a.UEFIBootEntries = append(a.UEFIBootEntries, fakeagent.UEFIBootEntry(e))
	}
	return a
}

func fromAgent(a fakeagent.Hardware) simulator.Hardware {
	hw := simulator.Hardware{
		CPUs: a.CPUs, CPUArch: a.CPUArch, CPUModel: a.CPUModel, MemoryMB: a.MemoryMB,
		Vendor: a.Vendor, Product: a.Product, SerialNumber: a.SerialNumber,
		BIOSVersion: a.BIOSVersion, BIOSSettings: maps.Clone(a.BIOSSettings),
	}
	for _, n := range a.NICs {
		hw.NICs = append(hw.NICs, simulator.NIC{Name: n.Name, MAC: n.MAC})
	}
	for _, d := range a.Disks {
		hw.Disks = append(hw.Disks, simulator.Disk(d))
	}
	for _, e := range a.UEFIBootEntries {
		hw.UEFIBootEntries = append(hw.UEFIBootEntries, simulator.UEFIBootEntry(e))
	}
	return hw
}
