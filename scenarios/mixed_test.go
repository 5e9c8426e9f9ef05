package scenarios

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/fakeagent/pxedeploy"
	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/scenarios/labtest"
)

// PXE and SSH-powered classes deploy end to end through the driver API:
// each disk holds the image (checked here with images.Verify, apart from the
// runner's own expectation), machines whose power is real booted it after
// the final power cycle, and the PXE image bytes went through the conductor.
func TestPXEAndSSHDeployEndToEnd(t *testing.T) {
	s, err := Parse("pxe.yaml", []byte(`name: pxe-ssh
seed: 9
lab:
  heartbeat_timeout: 10s
  automated_clean: false
  images: [{id: os, size: 4MiB}]
  groups:
    - {name: fp, count: 2, driver: fake_pxe, disk_size: 16MiB}
    - {name: pi, count: 1, driver: pxe_ipmitool, disk_size: 16MiB}
    - {name: pp, count: 1, driver: pxe_pyghmi, disk_size: 16MiB}
    - {name: ps, count: 1, driver: pxe_ssh, disk_size: 16MiB}
    - {name: as, count: 2, driver: agent_ssh, disk_size: 16MiB}
steps:
  - enroll: {}
  - manage: {}
  - provide: {}
  - wait: {state: available, timeout: 60s}
  - deploy: {image: os}
  - wait: {state: active, timeout: 120s}
  - expect: {state: active, last_error: "", disk_image: os}
`))
	if err != nil {
		t.Fatal(err)
	}
	results, state := t.TempDir(), t.TempDir()
	var out strings.Builder
	res, err := Run(context.Background(), s, Options{ResultsDir: results, StateDir: state, KeepState: true,
		ImageCache: filepath.Join(state, "images"), StartDriver: builtinDriver, FailOnMissingTools: labtest.CI(), Out: &out})
	if err != nil || !res.Passed {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	reportSkipped(t, res)
	lab := filepath.Join(state, "pxe-ssh")
	imageSize := int64(4 << 20)
	marker := ""
	for _, n := range res.Nodes {
		f, err := os.Open(filepath.Join(lab, "disks", n.Name+".raw"))
		if err != nil {
			t.Fatal(err)
		}
		h, err := images.Verify(f)
		f.Close()
		if err != nil || h.ID != "os" {
			t.Errorf("%s (%s): disk: %v (image %q)", n.Name, n.Driver, err, h.ID)
		}
		marker = images.Marker(h.ID, h.PayloadSHA256)
	}
	for _, n := range res.Nodes {
		log, err := os.ReadFile(filepath.Join(results, "pxe-ssh", "console", n.Name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		// The deploy ramdisk prints its accepted call-back, the one trace
		// of it when its conductor dies before recording it.
		want := 0
		if strings.Contains(n.Driver, "pxe") {
			want = 1
		}
		if got := strings.Count(string(log), pxedeploy.AcceptedMarker); got != want {
			t.Errorf("%s (%s): %d %q lines on the console, want %d:\n%s", n.Name, n.Driver, got, pxedeploy.AcceptedMarker, want, log)
		}
		if strings.HasPrefix(n.Driver, "fake_") {
			continue // FakePower never power-cycles the machine
		}
		if !strings.Contains(lastBoot(string(log)), marker) || !strings.Contains(lastBoot(string(log)), "from disk") {
			t.Errorf("%s (%s): the last boot did not boot the image from disk:\n%s", n.Name, n.Driver, log)
		}
	}
	want := map[string]int64{"fake_pxe": 2 * imageSize, "pxe_ipmitool": imageSize, "pxe_pyghmi": imageSize, "pxe_ssh": imageSize, "agent_ssh": 0}
	if len(res.Skipped) > 0 {
		delete(want, "pxe_ipmitool") // no ipmitool on this machine (reported above)
	}
	for class, n := range want {
		if got := res.ConductorImageBytes[class]; got != n {
			t.Errorf("%s: %d image bytes through the conductor, want %d", class, got, n)
		}
	}
	var rj struct {
		ConductorImageBytes map[string]int64 `json:"conductor_image_bytes"`
	}
	b, _ := os.ReadFile(filepath.Join(results, "pxe-ssh", "result.json"))
	if err := json.Unmarshal(b, &rj); err != nil || rj.ConductorImageBytes["pxe_ssh"] != imageSize {
		t.Errorf("result.json conductor_image_bytes: %v %v", err, rj.ConductorImageBytes)
	}
	var sum strings.Builder
	PrintSummary(&sum, res)
	if !strings.Contains(sum.String(), "image bytes through the conductor:") || !strings.Contains(sum.String(), "pxe_ssh 4 MiB (1 nodes)") {
		t.Errorf("summary lacks the conductor bytes:\n%s", sum.String())
	}
}

// The built-in mixed scenario: 50 nodes, agent and PXE classes over fake,
// ipmitool, native and SSH power, at once; then undeploy and erase.
func TestMixedScenarioEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("50 nodes: skipped with -short")
	}
	res, _, _ := runBuiltin(t, "mixed", nil)
	want := 50
	for _, sk := range res.Skipped {
		if strings.HasPrefix(sk, "ai:") || strings.HasPrefix(sk, "pi:") {
			want -= 5
		}
	}
	if len(res.Nodes) != want {
		t.Fatalf("%d nodes, want %d (skipped %v)", len(res.Nodes), want, res.Skipped)
	}
	perNode := int64(32 << 20)
	count := map[string]int64{}
	for _, n := range res.Nodes {
		count[n.Driver]++
	}
	for class, n := range count {
		want := int64(0)
		if strings.HasPrefix(class, "pxe_") || class == "fake_pxe" {
			want = n * perNode
		}
		if got := res.ConductorImageBytes[class]; got != want {
			t.Errorf("%s: %d image bytes through the conductor, want %d", class, got, want)
		}
	}
}
