package scenarios

import (
	"os/exec"
	"strings"
	"testing"
)

// The runner speaks to a driver only through the Ironic API, so the same
// scenario runs against the built-in driver or a real Ironic: it links no
// driver package (cmd/ironlab wires the built-in one in).
func TestRunnerLinksNoDriver(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/ironlab/ironlab/scenarios").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps ./scenarios: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "github.com/ironlab/ironlab/driver" || strings.HasPrefix(pkg, "github.com/ironlab/ironlab/driver/") {
			t.Errorf("the scenario runner links %s", pkg)
		}
	}
}
