package driver_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The system under test links nothing of the lab that tests it: no
// simulator (machines, BMCs, boot files), no fake agent or deploy ramdisk,
// no scenario runner, no test images. Each side owns its wire constants;
// scenarios/contract checks they agree.
func TestDriverLinksNoLabCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/ironlab/ironlab/driver/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps ./driver/...: %v\n%s", err, out)
	}
	forbidden := []string{"simulator", "fakeagent", "scenarios", "images"}
	var bad []string
	for _, pkg := range strings.Fields(string(out)) {
		rest, ok := strings.CutPrefix(pkg, "github.com/ironlab/ironlab/")
		if !ok {
			continue
		}
		for _, f := range forbidden {
			if rest == f || strings.HasPrefix(rest, f+"/") {
				bad = append(bad, pkg)
			}
		}
	}
	if len(bad) > 0 {
		t.Errorf("the driver links lab code:\n  %s", strings.Join(bad, "\n  "))
	}
	if !strings.Contains(string(out), "github.com/ironlab/ironlab/driver/conductor\n") {
		t.Errorf("go list -deps ./driver/... does not list driver/conductor: the check looked at the wrong packages:\n%s", out)
	}
}
