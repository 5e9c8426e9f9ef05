package fakeagent

import (
	"os/exec"
	"strings"
	"testing"
)

// The agent defines the hardware it consumes; it links nothing of the lab
// (the simulator satisfies the agent's interfaces, not the other way).
func TestAgentLinksNothingOfTheLab(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/ironlab/ironlab/simulator") || strings.HasPrefix(p, "github.com/ironlab/ironlab/scenarios") {
			t.Errorf("fakeagent links %s", p)
		}
	}
}
