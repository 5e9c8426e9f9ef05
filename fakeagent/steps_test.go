package fakeagent

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"strconv"
	"testing"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

// TestIPAStepNamesAndPriorities: the generic hardware manager offers IPA
// 9.x's clean steps with their interfaces and priorities; the lab's own
// steps come from a hardware manager of their own.
func TestIPAStepNamesAndPriorities(t *testing.T) {
	want := map[string]string{
		"erase_devices": "deploy 10", "erase_devices_metadata": "deploy 99", "erase_devices_express": "deploy 0",
		"erase_pstore": "deploy 0", "clean_uefi_nvram": "deploy 0", "delete_configuration": "raid 0", "create_configuration": "raid 0",
		"burnin_cpu": "deploy 0", "burnin_disk": "deploy 0", "burnin_memory": "deploy 0", "burnin_network": "deploy 0",
	}
	got := map[string]string{}
	for _, s := range genericCleanSteps {
		got[s.Step] = s.Interface + " " + strconv.Itoa(s.Priority)
		if !s.Abortable || s.RebootRequested {
			t.Errorf("%s: abortable %t, reboot_requested %t; IPA's are abortable and need no reboot", s.Step, s.Abortable, s.RebootRequested)
		}
	}
	if len(got) != len(want) {
		t.Errorf("generic clean steps %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("clean step %s = %q, want %q", k, got[k], v)
		}
	}
	for _, s := range ironlabCleanSteps {
		if s.Step != "update_firmware" && s.Step != "apply_bios_settings" {
			t.Errorf("unexpected lab step %s", s.Step)
		}
	}
	dwant := map[string]string{"erase_devices_metadata": "deploy 0", "apply_configuration": "raid 0", "clean_uefi_nvram": "deploy 0", "write_image": "deploy 0", "inject_files": "deploy 0"}
	if len(deploySteps) != len(dwant) {
		t.Errorf("%d deploy steps, want %d", len(deploySteps), len(dwant))
	}
	for _, s := range deploySteps {
		if dwant[s.Step] != s.Interface+" "+strconv.Itoa(s.Priority) {
			t.Errorf("deploy step %s = %s %d, want %s", s.Step, s.Interface, s.Priority, dwant[s.Step])
		}
	}
}

func cleanStep(step, iface string, node map[string]any) map[string]any {
	if node == nil {
		node = map[string]any{}
	}
	return map[string]any{"step": map[string]any{"step": step, "interface": iface, "priority": 0, "args": map[string]any{}},
		"node": node, "ports": []any{}, "clean_version": hardwareManagerVersion}
}

func TestNewCleanSteps(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	hw := testHardware(t, macA, 4<<20)
	if err := os.WriteFile(hw.Disks[0].Path, bytes.Repeat([]byte{0xA5}, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	ta := startAgent(t, api, hw, nil)
	ta.waitLookedUp(t)

	res := ta.runCommand(t, api, "clean.execute_clean_step", cleanStep("erase_devices_express", "deploy", nil))
	mustSucceed(t, res)
	disk, _ := os.ReadFile(hw.Disks[0].Path)
	if !bytes.Equal(disk[:1<<20], make([]byte, 1<<20)) || disk[2<<20] != 0xA5 {
		t.Error("erase_devices_express on a disk without secure erase must erase the metadata (first and last MiB) only")
	}
	for _, s := range []struct{ step, iface string }{{"erase_pstore", "deploy"}, {"delete_configuration", "raid"}, {"create_configuration", "raid"}} {
		mustSucceed(t, ta.runCommand(t, api, "clean.execute_clean_step", cleanStep(s.step, s.iface, nil)))
	}
	res = ta.runCommand(t, api, "clean.execute_clean_step", cleanStep("create_configuration", "raid",
		map[string]any{"target_raid_config": map[string]any{"logical_disks": []any{map[string]any{"size_gb": "MAX", "raid_level": "1"}}}}))
	mustFail(t, res, "software RAID (mdadm) is not emulated")
	res = ta.runCommand(t, api, "clean.execute_clean_step", cleanStep("burnin_cpu", "deploy", nil))
	mustFail(t, res, "burn-in (stress-ng, fio) is not emulated")
}

// clean_uefi_nvram removes the NVRAM boot entries whose device path
// matches (IPA's defaults: every disk entry, shim and GRUB), keeps the
// others, and refuses patterns that are not a list of regular expressions.
func TestCleanUEFINVRAM(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	hw := testHardware(t, macA)
	hw.UEFIBootEntries = []UEFIBootEntry{
		{Label: "ironic1", Device: "/dev/vda1", PartUUID: "5f2a0c1e-8b1d-4c3a-9e2f-0123456789ab", Loader: `\EFI\BOOT\BOOTX64.EFI`},
		{Label: "UEFI PXEv4", Path: "PciRoot(0x0)/Pci(0x3,0x0)/MAC(525400123456,1)/IPv4(0.0.0.0)"},
	}
	ta := startAgent(t, api, hw, nil)
	ta.waitLookedUp(t)
	labels := func() []string {
		var out []string
		for _, e := range ta.UEFIBootEntries() {
			out = append(out, e.Label)
		}
		return out
	}
	step := func(args map[string]any) map[string]any {
		p := cleanStep("clean_uefi_nvram", "deploy", nil)
		p["step"].(map[string]any)["args"] = args
		return p
	}
	mustFail(t, ta.runCommand(t, api, "clean.execute_clean_step", step(map[string]any{"match_patterns": "grub"})), "must be a list of strings")
	mustFail(t, ta.runCommand(t, api, "clean.execute_clean_step", step(map[string]any{"match_patterns": []any{"("}})), "must be a list of strings")
	if got := labels(); len(got) != 2 {
		t.Fatalf("a refused clean_uefi_nvram changed the NVRAM: %v", got)
	}
	res := ta.runCommand(t, api, "clean.execute_clean_step", step(map[string]any{}))
	mustSucceed(t, res)
	if got := labels(); len(got) != 1 || got[0] != "UEFI PXEv4" {
		t.Errorf("NVRAM after clean_uefi_nvram with the default patterns: %v, want only the PXE entry left", got)
	}
	mustSucceed(t, ta.runCommand(t, api, "clean.execute_clean_step", step(map[string]any{"match_patterns": []any{"^hd\\("}})))
	if got := labels(); len(got) != 1 {
		t.Errorf("a pattern matching nothing removed %v", got)
	}
}

func TestRunImageReboots(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	rebooted := make(chan struct{})
	ta := startAgent(t, api, testHardware(t, macA), func(c *Config) {
		c.Reboot = func(context.Context) error { close(rebooted); return nil }
	})
	ta.waitLookedUp(t)
	if status, res := ta.post(t, "standby.run_image", map[string]any{}, false, api.token(nodeA)); status != 200 || res["command_name"] != "run_image" {
		t.Fatalf("POST run_image = %d %v", status, res)
	}
	labtest.Recv(t, rebooted, "the machine's reboot")
	if err := labtest.Recv(t, ta.done, "end of the agent's Run"); !errors.Is(err, ErrRebooted) {
		t.Fatalf("Run returned %v, want ErrRebooted", err)
	}
	ta.done <- nil

	// Without a way to reboot, run_image fails instead of pretending.
	api2 := newScriptedIronic(t, 99)
	api2.addNode(nodeA, true, macA)
	tb := startAgent(t, api2, testHardware(t, macA), nil)
	tb.waitLookedUp(t)
	mustFail(t, tb.runCommand(t, api2, "standby.run_image", map[string]any{}), "no way to reboot")
}

func TestFinalizeRescue(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	ta := startAgent(t, api, testHardware(t, macA), nil)
	ta.waitLookedUp(t)
	tok := api.token(nodeA)
	if _, res := ta.post(t, "rescue.finalize_rescue", map[string]any{"rescue_password": "secret", "hashed": false}, true, tok); res["command_status"] != StatusFailed {
		t.Errorf("an unhashed password: %v, want FAILED (crypt is not emulated)", res)
	}
	const hash = "$6$rounds=656000$saltsalt$AAAA"
	status, res := ta.post(t, "rescue.finalize_rescue", map[string]any{"rescue_password": hash, "hashed": true}, true, tok)
	if status != 200 || res["command_status"] != StatusSucceeded || res["command_name"] != "finalize_rescue" {
		t.Fatalf("finalize_rescue = %d %v, want SUCCEEDED", status, res)
	}
	if err := labtest.Recv(t, ta.done, "end of the agent's Run"); !errors.Is(err, ErrRescued) {
		t.Fatalf("Run returned %v, want ErrRescued", err)
	}
	ta.done <- nil
	st := ta.State()
	if st.RescuePasswordHash != hash {
		t.Errorf("rescue password hash = %q, want %q", st.RescuePasswordHash, hash)
	}
	sent := st.HeartbeatsSent
	// The API is gone: IPA stops serving after finalize_rescue.
	if resp, err := http.Get(ta.srv.URL + "/v1/status"); err == nil {
		resp.Body.Close()
		t.Errorf("status answered %d after finalize_rescue; want the connection dropped", resp.StatusCode)
	}
	if ta.State().HeartbeatsSent != sent {
		t.Error("the agent heartbeats after finalize_rescue")
	}
}
