package driver_test

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/scenarios/labtest/minilab"
)

// TestFastTrackAndManualCleanWithRealAgent runs `ironlab driver --fast-track`
// against a fake machine behind a virtual IPMI BMC and the fake IPA it
// boots: cleaning leaves the agent running, manual clean steps change the
// machine's firmware and BIOS settings with the arguments given, a failed
// step reports the agent's error, and the deploy boots no ramdisk.
func TestFastTrackAndManualCleanWithRealAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the ironlab binary")
	}
	l, r, id := rigLab(t, "--fast-track")
	l.ToAvailable(id)
	if n := l.Get(id); n.PowerState != "power on" {
		t.Fatalf("after cleaning with fast track: power %q, want power on", n.PowerState)
	}
	boots := len(minilab.BootsFrom(r))

	// A manual clean with arguments, on the running agent.
	l.Provision(id, "manage")
	l.WaitState(id, states.Manageable)
	l.Provision(id, "clean", map[string]any{"clean_steps": []any{
		map[string]any{"interface": "deploy", "step": "update_firmware", "args": map[string]any{"version": "2.1.0"}},
		map[string]any{"interface": "bios", "step": "apply_bios_settings", "args": map[string]any{"settings": []any{map[string]any{"name": "vt", "value": "off"}}}},
	}})
	l.WaitFor(id, "manageable after the manual clean", func(n minilab.APINode) bool {
		return n.ProvisionState == states.Manageable && r.Machine.Hardware().BIOSVersion == "2.1.0"
	})
	if hw := r.Machine.Hardware(); hw.BIOSSettings["vt"] != "off" {
		t.Errorf("BIOS settings after apply_bios_settings: %v, want vt=off", hw.BIOSSettings)
	}

	// A step the agent fails: clean failed with the agent's error.
	setAgentFaults(t, r, fakeagent.Faults{FailCommand: &fakeagent.CommandFailure{Command: "update_firmware", Error: "flash failed: image rejected"}})
	l.Provision(id, "clean", map[string]any{"clean_steps": []any{
		map[string]any{"interface": "deploy", "step": "update_firmware", "args": map[string]any{"version": "3.0.0"}},
	}})
	n := l.WaitFor(id, "clean failed", func(n minilab.APINode) bool { return n.ProvisionState == states.CleanFailed })
	if !strings.Contains(n.Error(), "flash failed: image rejected") {
		t.Errorf("last_error = %q, want the agent's error", n.Error())
	}
	setAgentFaults(t, r, fakeagent.Faults{})
	l.API("DELETE", "/v1/nodes/"+id+"/maintenance", nil, nil)
	l.ToAvailable(id)
	// Fast track: the cleanings reuse the running agent, no ramdisk boot.
	// (Counted by what booted, not how often: a power command resent over
	// UDP may reboot a machine twice.)
	if again := minilab.BootsFrom(r)[boots:]; slices.Contains(again, "network") {
		t.Errorf("the machine network-booted during fast-track cleaning: boots %v", again)
	}

	// The deploy: no boot into the ramdisk, only the final boot from disk.
	boots = len(minilab.BootsFrom(r))
	l.Provision(id, "active")
	l.WaitState(id, states.Active)
	if again := minilab.BootsFrom(r)[boots:]; len(again) == 0 || slices.Contains(again, "network") || again[len(again)-1] != "disk" {
		t.Errorf("a fast-track deploy booted %v, want only from disk", again)
	}
	_, _, image := l.Image("recovery")
	if b, _ := os.ReadFile(r.DiskPath()); !bytes.HasPrefix(b, image) {
		t.Error("the disk does not hold the image")
	}
	fast := 0
	for _, e := range l.Events(id) {
		if e.Event == "fast track" {
			fast++
		}
	}
	// Two manual cleans, the automated one on provide, and the deploy.
	if fast != 4 {
		t.Errorf("%d \"fast track\" events, want 4", fast)
	}
	t.Logf("state history: %s", strings.Join(l.CheckHistory(id), " -> "))
}
