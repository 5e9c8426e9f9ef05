package fakeagent

import (
	"bytes"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func fillDisk(t *testing.T, path string, size int64) {
	t.Helper()
	b := bytes.Repeat([]byte{0xA5}, int(size))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func cleanStepParams(step string, prio int, args map[string]any) map[string]any {
	return map[string]any{
		"step":          map[string]any{"interface": "deploy", "step": step, "priority": prio, "args": args},
		"node":          map[string]any{"uuid": nodeA},
		"ports":         []any{},
		"clean_version": hardwareManagerVersion,
	}
}

func TestEraseDevices(t *testing.T) {
	const size = 3<<20 + 4096
	tests := []struct {
		name        string
		secureErase bool
		want        string
	}{
		{"overwrite", false, EraseOverwrite},
		{"secure erase", true, EraseSecure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := newScriptedIronic(t, 99)
			api.addNode(nodeA, true, macA)
			hw := testHardware(t, macA, size, size)
			for i := range hw.Disks {
				hw.Disks[i].SecureErase = tc.secureErase
				fillDisk(t, hw.Disks[i].Path, size)
			}
			ta := startAgent(t, api, hw, nil)
			ta.waitLookedUp(t)
			res := ta.runCommand(t, api, "clean.execute_clean_step", cleanStepParams("erase_devices", 10, nil))
			if res["command_status"] != StatusSucceeded {
				t.Fatalf("erase_devices: %v %v", res["command_status"], res["command_error"])
			}
			got := res["command_result"].(map[string]any)["clean_result"]
			if diff := cmp.Diff(map[string]any{"/dev/vda": tc.want, "/dev/vdb": tc.want}, got); diff != "" {
				t.Errorf("clean_result (-want +got):\n%s", diff)
			}
			for _, d := range hw.Disks {
				b, err := os.ReadFile(d.Path)
				if err != nil {
					t.Fatal(err)
				}
				if int64(len(b)) != size {
					t.Errorf("%s: size %d after erase, want %d", d.Name, len(b), size)
				}
				if i := bytes.IndexFunc(b, func(r rune) bool { return r != 0 }); i >= 0 {
					t.Errorf("%s: byte %d is not zero after erase", d.Name, i)
				}
			}
		})
	}
}

func TestEraseDevicesMetadata(t *testing.T) {
	const size = 5 << 20
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	hw := testHardware(t, macA, size)
	fillDisk(t, hw.Disks[0].Path, size)
	ta := startAgent(t, api, hw, nil)
	ta.waitLookedUp(t)
	res := ta.runCommand(t, api, "clean.execute_clean_step", cleanStepParams("erase_devices_metadata", 99, nil))
	if res["command_status"] != StatusSucceeded {
		t.Fatalf("erase_devices_metadata: %v %v", res["command_status"], res["command_error"])
	}
	b, _ := os.ReadFile(hw.Disks[0].Path)
	want := bytes.Repeat([]byte{0xA5}, size)
	clear(want[:mib])
	clear(want[size-mib:])
	if !bytes.Equal(b, want) {
		t.Errorf("disk after erase_devices_metadata: want the first and last MiB zero and the rest untouched")
	}
}

func TestFirmwareAndBIOSStepsShowInInventory(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	ta := startAgent(t, api, testHardware(t, macA), nil)
	ta.waitLookedUp(t)
	for _, p := range []map[string]any{
		cleanStepParams("update_firmware", 0, map[string]any{"version": "2.1.0"}),
		cleanStepParams("apply_bios_settings", 0, map[string]any{"settings": []any{
			map[string]any{"name": "vt", "value": "on"}, map[string]any{"name": "sriov", "value": true}}}),
	} {
		if res := ta.runCommand(t, api, "clean.execute_clean_step", p); res["command_status"] != StatusSucceeded {
			t.Fatalf("%v: %v", p["step"], res["command_error"])
		}
	}
	inv := ta.Inventory()
	if got := inv.SystemVendor.Firmware.Version; got != "2.1.0" {
		t.Errorf("inventory firmware version = %q, want 2.1.0", got)
	}
	if diff := cmp.Diff(map[string]string{"vt": "on", "sriov": "true"}, inv.BIOSSettings); diff != "" {
		t.Errorf("inventory bios_settings (-want +got):\n%s", diff)
	}
	// The change lives in the machine's hardware, so an agent booted next
	// on the same machine reports it too.
	next := BuildInventory(ta.hw.Hardware(), "uefi", "")
	if next.SystemVendor.Firmware.Version != "2.1.0" || next.BIOSSettings["vt"] != "on" {
		t.Errorf("the machine's hardware did not keep the changes: %+v", ta.hw.Hardware())
	}
	// Missing args fail the step with a message that says what to send.
	res := ta.runCommand(t, api, "clean.execute_clean_step", cleanStepParams("update_firmware", 0, nil))
	if res["command_status"] != StatusFailed {
		t.Errorf("update_firmware without a version = %v, want FAILED", res["command_status"])
	}
}

func TestInventoryShape(t *testing.T) {
	hw := testHardware(t, "52:54:00:AA:BB:CC", 8<<20)
	hw.Disks[0].Rotational = true
	got := roundTrip(t, BuildInventory(hw, "uefi", "node-1")).(map[string]any)
	want := map[string]any{
		"interfaces": []any{map[string]any{
			"name": "eth0", "mac_address": "52:54:00:aa:bb:cc", "ipv4_address": nil, "ipv6_address": nil, "has_carrier": true,
			"vendor": "0x1af4", "product": "0x0001", "speed_mbps": 10000.0, "driver": "virtio_net",
			"switch_port_descr": nil, "switch_chassis_descr": nil,
		}},
		"cpu": map[string]any{"model_name": "ironlab vCPU", "frequency": "2400.000", "count": 2.0, "architecture": "x86_64", "flags": []any{}, "socket_count": 1.0},
		"disks": []any{map[string]any{
			"name": "/dev/vda", "model": "ironlab disk", "size": float64(8 << 20), "rotational": true, "wwn": nil, "serial": "SN-1-disk0",
			"vendor": "ironlab", "hctl": nil, "by_path": nil, "logical_sectors": 512.0, "physical_sectors": 512.0, "tran": nil,
		}},
		"memory":        map[string]any{"total": float64(2048 << 20), "physical_mb": 2048.0},
		"bmc_address":   nil,
		"bmc_v6address": nil,
		"system_vendor": map[string]any{"product_name": "virtual-node", "serial_number": "SN-1", "manufacturer": "ironlab",
			"firmware": map[string]any{"vendor": "ironlab", "version": "1.0.0", "build_date": ""}},
		"boot":     map[string]any{"current_boot_mode": "uefi", "pxe_interface": "52:54:00:aa:bb:cc"},
		"hostname": "node-1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("inventory (-want +got):\n%s", diff)
	}
}
