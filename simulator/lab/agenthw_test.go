package lab

import (
	"testing"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/fake"
)

// What an agent writes into the machine's firmware (BIOS settings, the
// UEFI NVRAM boot entry of install_bootloader) is kept by the machine, so
// the next boot's agent, e.g. one that runs clean_uefi_nvram, sees it.
func TestAgentHardwareKeepsFirmwareAcrossBoots(t *testing.T) {
	m, err := fake.New(fake.Options{Name: "n", UUID: "u", Hardware: simulator.Hardware{CPUs: 2, BIOSVersion: "1.0"}})
	if err != nil {
		t.Fatal(err)
	}
	first := agentHardware{m: m, fw: m}
	entry := fakeagent.UEFIBootEntry{Label: "ironic1", Device: "/dev/vda1", PartUUID: "5f2a0c1e-8b1d-4c3a-9e2f-0123456789ab", Loader: `\EFI\BOOT\BOOTX64.EFI`}
	if err := first.UpdateHardware(func(hw *fakeagent.Hardware) {
		hw.UEFIBootEntries = append(hw.UEFIBootEntries, entry)
		hw.BIOSSettings = map[string]string{"vt": "off"}
	}); err != nil {
		t.Fatal(err)
	}
	next := agentHardware{m: m, fw: m}.Hardware()
	if len(next.UEFIBootEntries) != 1 || next.UEFIBootEntries[0] != entry || next.BIOSSettings["vt"] != "off" || next.CPUs != 2 {
		t.Errorf("the next boot's agent sees %+v; want the NVRAM entry, the BIOS setting and the rest unchanged", next)
	}
	if got := m.Hardware().UEFIBootEntries; len(got) != 1 || got[0].Loader != entry.Loader {
		t.Errorf("the machine's NVRAM holds %+v", got)
	}
}
