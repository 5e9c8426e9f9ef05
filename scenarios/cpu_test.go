package scenarios

import (
	"testing"
)

// TestPXEVersusAgent runs both scenarios of pxe-vs-agent: the same 20 fake
// nodes deployed by the agent and by the PXE driver, the driver as a child
// process. The PXE deploys pass every image byte through the conductor
// and cost it more CPU per deploy; the agent deploys pass none.
func TestPXEVersusAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("2 x 20 nodes: skipped with -short")
	}
	ss, err := LoadAll("pxe-vs-agent")
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 2 {
		t.Fatalf("%d scenarios in pxe-vs-agent, want 2", len(ss))
	}
	per := map[string]float64{}
	for _, s := range ss {
		res, _, _ := runScenario(t, s)
		c := res.ConductorCPU
		if c == nil || c.Deploys != 20 || c.CPUSeconds <= 0 {
			t.Fatalf("%s: conductor_cpu = %+v, want 20 deploys and some CPU time", s.Name, c)
		}
		var bytes int64
		for _, b := range res.ConductorImageBytes {
			bytes += b
		}
		want := int64(0)
		if c.Drivers[0] == "pxe_pyghmi" {
			want = 20 * 64 << 20
		}
		if bytes != want {
			t.Errorf("%s: %d image bytes through the conductor, want %d", s.Name, bytes, want)
		}
		per[c.Drivers[0]] = c.CPUSecondsPerDeploy
		t.Logf("%s: %.3f s conductor CPU per deploy, %d MiB through the conductor", s.Name, c.CPUSecondsPerDeploy, bytes>>20)
	}
	if per["pxe_pyghmi"] <= per["agent_pyghmi"] {
		t.Errorf("conductor CPU per deploy: PXE %.3fs, agent %.3fs; want PXE above the agent", per["pxe_pyghmi"], per["agent_pyghmi"])
	}
}
