package scenarios

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVMMixedScenario runs vm-mixed: 2 agent and 2 PXE VMs deployed at the
// same time through their BMCs. The PXE VMs boot the deploy ramdisk (the
// agent ramdisk's /init in pxe-deploy mode) and the conductor streams the
// image onto their disks; every VM then boots its image from disk.
func TestVMMixedScenario(t *testing.T) {
	vmTier(t)
	s, err := Load("vm-mixed")
	if err != nil {
		t.Fatal(err)
	}
	res, results, state, out := runVM(t, s, "")
	if !res.Passed {
		t.Fatalf("vm-mixed failed:\n%s", out)
	}
	t.Logf("vm-mixed passed in %.1fs; image bytes through the conductor %v", res.DurationS, res.ConductorImageBytes)
	if len(res.Nodes) != 4 {
		t.Fatalf("%d nodes in the result, want 4", len(res.Nodes))
	}
	const image = 16 << 20
	if got := res.ConductorImageBytes["pxe_ipmitool"]; got != 2*image {
		t.Errorf("conductor image bytes for pxe_ipmitool = %d, want %d (2 x 16 MiB)", got, 2*image)
	}
	if got := res.ConductorImageBytes["agent_ipmitool"]; got != 0 {
		t.Errorf("conductor image bytes for agent_ipmitool = %d, want 0", got)
	}
	for _, n := range res.Nodes {
		b, err := os.ReadFile(filepath.Join(results, "console", n.Name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		ramdisk := "ironlab init: agent running"
		if n.Driver == "pxe_ipmitool" {
			ramdisk = "ironlab init: deploy ramdisk running"
		}
		for _, want := range []string{ramdisk, "IRONLAB-IMAGE vm-os "} {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s: console log lacks %q", n.Name, want)
			}
		}
	}
	assertTornDown(t, s.Name, state)
}
