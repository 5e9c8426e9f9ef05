package scenarios

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	libvirtvm "github.com/ironlab/ironlab/simulator/libvirt"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

// The VM tier: scenarios on the libvirt backend, real QEMU guests under TCG.
// It skips where libvirt or ipmitool is missing, except under CI=true.

// vmTier skips (or, under CI=true, fails) when this machine cannot run VMs.
func vmTier(t testing.TB) {
	t.Helper()
	labtest.RequireFunc(t, "libvirtd", "scripts/vm-deps.sh as root (libvirt-daemon-system, qemu-system-x86; starts libvirtd)", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := libvirtvm.Connect(ctx, libvirtvm.ConnOptions{})
		if err == nil {
			c.Close()
		}
		return err
	})
	labtest.Require(t, "ipmitool")
}

// vmState is a state folder libvirt's qemu user can traverse.
func vmState(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	for _, p := range []string{filepath.Dir(d), d} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// runVM plays a scenario on the libvirt backend under TCG and returns its
// result, the results folder and the lab's state folder.
func runVM(t testing.TB, s *Scenario, pxe string) (*Result, string, string, string) {
	t.Helper()
	results, state := t.TempDir(), vmState(t)
	keepOnFailure(t, s.Name, results, state)
	var out strings.Builder
	res, err := Run(context.Background(), s, Options{
		ResultsDir: results, StateDir: state, KeepState: true, ImageCache: filepath.Join(state, "images"),
		StartDriver: builtinDriver, FailOnMissingTools: labtest.CI(), Out: &out, Backend: "libvirt", Accel: "tcg", PXE: pxe,
	})
	if err != nil {
		t.Fatalf("run %s: %v\n%s", s.Name, err, out.String())
	}
	return res, filepath.Join(results, s.Name), filepath.Join(state, s.Name), out.String()
}

// assertTornDown checks that no domain of the lab is defined and no disk
// file is left (other labs' domains, e.g. of tests running alongside, are
// not this lab's to judge).
func assertTornDown(t testing.TB, lab, state string) {
	t.Helper()
	out, err := exec.Command("virsh", "-c", "qemu:///system", "list", "--all", "--name").CombinedOutput()
	if err != nil {
		t.Fatalf("virsh list: %v: %s", err, out)
	}
	for _, name := range strings.Fields(string(out)) {
		if strings.HasPrefix(name, libvirtvm.DomainName(lab, "")) {
			t.Errorf("domain %s is still defined after the run", name)
		}
	}
	disks, _ := filepath.Glob(filepath.Join(state, "vms", "*.raw"))
	if len(disks) > 0 {
		t.Errorf("disk files left after the run: %v", disks)
	}
}

// TestVMDeployScenario plays the built-in vm-deploy end to end: 2 VMs
// deployed through their BMCs with ipmitool, booted from disk (marker on
// the serial console), undeployed and erased to zeros.
func TestVMDeployScenario(t *testing.T) {
	vmTier(t)
	s, err := Load("vm-deploy")
	if err != nil {
		t.Fatal(err)
	}
	res, results, state, out := runVM(t, s, "")
	if !res.Passed {
		t.Fatalf("vm-deploy failed:\n%s", out)
	}
	t.Logf("vm-deploy passed in %.1fs", res.DurationS)
	if !strings.HasPrefix(res.Accel, "tcg") {
		t.Errorf("result accel %q, want tcg", res.Accel)
	}
	if len(res.Nodes) != 2 {
		t.Fatalf("%d nodes in the result, want 2", len(res.Nodes))
	}
	// The results keep each VM's serial console: agent boots, then the
	// image's marker from the disk boot.
	for _, n := range res.Nodes {
		b, err := os.ReadFile(filepath.Join(results, "console", n.Name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"ironlab init: agent running", "IRONLAB-IMAGE vm-os "} {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s: console log lacks %q", n.Name, want)
			}
		}
	}
	rj, err := os.ReadFile(filepath.Join(results, "result.json"))
	if err != nil || !strings.Contains(string(rj), `"accel": "tcg`) {
		t.Errorf("result.json does not say the accelerator (%v)", err)
	}
	assertTornDown(t, s.Name, state)
}

// TestVMIPXEBootReachesDriver network-boots one VM through real iPXE (QEMU's
// option ROM, DHCP and TFTP from QEMU's user-mode stack, the per-MAC script)
// into the agent, whose lookup reaches the driver.
func TestVMIPXEBootReachesDriver(t *testing.T) {
	vmTier(t)
	s, err := Parse("vm-ipxe.yaml", []byte(`name: vm-ipxe
seed: 5
lab:
  backend: libvirt
  pxe: ipxe
  heartbeat_timeout: 10s
  automated_clean: true
  images: [{id: vm-os, size: 1MiB}]
  groups: [{name: px, count: 1, driver: agent_ipmitool, disk_size: 16MiB}]
steps:
  - enroll: {}
  - manage: {}
  - provide: {}
  - wait: {event: lookup, timeout: 150s}
  - expect: {event: lookup}
`))
	if err != nil {
		t.Fatal(err)
	}
	res, results, state, out := runVM(t, s, "ipxe")
	if !res.Passed {
		t.Fatalf("vm-ipxe failed:\n%s", out)
	}
	b, err := os.ReadFile(filepath.Join(results, "console", "px-0.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"iPXE", "ironlab init: agent running"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("console lacks %q: was this a real iPXE boot?\n%s", want, tail(string(b), 2000))
		}
	}
	assertTornDown(t, s.Name, state)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestVMLabValidation: the libvirt settings of a lab section are checked
// at parse time, with the field's line.
func TestVMLabValidation(t *testing.T) {
	for name, tc := range map[string]struct{ lab, want string }{
		"accel":  {"backend: libvirt\n  accel: xen", "lab.accel: must be auto, kvm or tcg"},
		"pxe":    {"backend: libvirt\n  pxe: http", "lab.pxe: must be direct or ipxe"},
		"memory": {"backend: libvirt\n  memory_mb: 64", "lab.memory_mb: each VM's RAM"},
		"driver": {"backend: libvirt\n  groups: [{name: g, count: 1, driver: fake_pxe}]", "FakePower never powers a VM"},
	} {
		t.Run(name, func(t *testing.T) {
			groups := "\n  groups: [{name: g, count: 1, driver: agent_ipmitool}]"
			if strings.Contains(tc.lab, "groups:") {
				groups = ""
			}
			_, err := Parse("v.yaml", []byte("name: v\nlab:\n  "+tc.lab+groups+"\nsteps: [{enroll: {}}]\n"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// BenchmarkVMDeploy measures a deploy on the libvirt backend under TCG,
// from the deploy request to active, for 1 VM and for 4 at once, broken
// down from the driver's events and the serial console:
//
//	request_to_power_on  deploy request -> BMC power on (boot device, IPMI pacing)
//	boot_to_lookup       power on -> the agent's lookup reaches the driver
//	image_write          write_image sent -> its result (download + write + checksum)
//	reboot_to_marker     image written -> power off/on -> the disk's marker on the console
//	deploy_to_active     deploy request -> active (the slowest node with 4 VMs)
func BenchmarkVMDeploy(b *testing.B) {
	vmTier(b)
	for _, n := range []int{1, 4} {
		b.Run(fmt.Sprintf("vms=%d", n), func(b *testing.B) {
			var all []deployTimes
			for i := 0; i < b.N; i++ {
				all = append(all, benchDeploy(b, n)...)
			}
			mean := func(f func(deployTimes) float64) float64 {
				s := 0.0
				for _, d := range all {
					s += f(d)
				}
				return s / float64(len(all))
			}
			b.ReportMetric(mean(func(d deployTimes) float64 { return d.requestToPowerOn }), "s_request_to_power_on")
			b.ReportMetric(mean(func(d deployTimes) float64 { return d.bootToLookup }), "s_boot_to_lookup")
			b.ReportMetric(mean(func(d deployTimes) float64 { return d.imageWrite }), "s_image_write")
			b.ReportMetric(mean(func(d deployTimes) float64 { return d.rebootToMarker }), "s_reboot_to_marker")
			b.ReportMetric(mean(func(d deployTimes) float64 { return d.deployToActive }), "s_deploy_to_active")
			worst := 0.0
			for _, d := range all {
				worst = max(worst, d.deployToActive)
			}
			b.ReportMetric(worst, "s_deploy_to_active_max")
		})
	}
}

type deployTimes struct {
	node                                                  string
	requestToPowerOn, bootToLookup, imageWrite            float64
	rebootToMarker, deployToActive, deployToMarkerSeconds float64
}

// benchDeploy runs one deploy of a 64 MiB image to n fresh VMs and derives
// each node's phases.
func benchDeploy(b *testing.B, n int) []deployTimes {
	b.Helper()
	b.StopTimer()
	s, err := Parse("vm-bench.yaml", []byte(fmt.Sprintf(`name: vm-bench
seed: 6
lab:
  backend: libvirt
  heartbeat_timeout: 10s
  automated_clean: false
  images: [{id: bench-os, size: 64MiB}]
  groups: [{name: b, count: %d, driver: agent_ipmitool, disk_size: 128MiB}]
steps:
  - enroll: {}
  - manage: {}
  - provide: {}
  - wait: {state: available, timeout: 60s}
  - deploy: {image: bench-os}
  - wait: {state: active, timeout: 300s}
  - expect: {booted_image: bench-os}
`, n)))
	if err != nil {
		b.Fatal(err)
	}
	state := vmState(b)
	results := b.TempDir()
	keepOnFailure(b, s.Name, results, state)
	// The serial logs carry no host time: watch them for the marker.
	markers := &markerWatch{seen: map[string]time.Time{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		markers.watch(filepath.Join(state, s.Name, "vms"), "IRONLAB-IMAGE bench-os", stop)
	}()
	var out strings.Builder
	b.StartTimer()
	res, err := Run(context.Background(), s, Options{
		ResultsDir: results, StateDir: state, KeepState: true, ImageCache: filepath.Join(state, "images"),
		StartDriver: builtinDriver, FailOnMissingTools: labtest.CI(), Out: &out, Backend: "libvirt", Accel: "tcg",
	})
	b.StopTimer()
	close(stop)
	wg.Wait()
	if err != nil || !res.Passed {
		b.Fatalf("vm-bench: %v\n%s", err, out.String())
	}
	times, err := phases(filepath.Join(results, s.Name, "events.jsonl"), markers.seen)
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range times {
		b.Logf("%s (%d VMs): request->power on %.1fs, boot->lookup %.1fs, image write %.1fs, reboot->marker %.1fs; deploy->active %.1fs, deploy->marker %.1fs",
			d.node, n, d.requestToPowerOn, d.bootToLookup, d.imageWrite, d.rebootToMarker, d.deployToActive, d.deployToMarkerSeconds)
	}
	b.StartTimer()
	return times
}

// markerWatch records when each console log under a folder first shows a
// marker.
type markerWatch struct {
	mu   sync.Mutex
	seen map[string]time.Time // node -> time
}

func (w *markerWatch) watch(dir, marker string, stop <-chan struct{}) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		logs, _ := filepath.Glob(filepath.Join(dir, "*.console.log"))
		for _, l := range logs {
			node := strings.TrimSuffix(filepath.Base(l), ".console.log")
			w.mu.Lock()
			_, done := w.seen[node]
			w.mu.Unlock()
			if done {
				continue
			}
			if b, err := os.ReadFile(l); err == nil && strings.Contains(string(b), marker) {
				w.mu.Lock()
				w.seen[node] = time.Now()
				w.mu.Unlock()
			}
		}
	}
}

// phases derives each node's deploy phases from events.jsonl (the driver's
// GET /v1/nodes/{id}/events, tagged with the node) and the marker times.
func phases(eventsFile string, markers map[string]time.Time) ([]deployTimes, error) {
	f, err := os.Open(eventsFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	type ev struct {
		Node    string    `json:"node"`
		Time    time.Time `json:"time"`
		Kind    string    `json:"kind"`
		Event   string    `json:"event"`
		ToState string    `json:"to_state"`
	}
	byNode := map[string][]ev{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e ev
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			byNode[e.Node] = append(byNode[e.Node], e)
		}
	}
	var out []deployTimes
	for node, evs := range byNode {
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
		var deploy, powerOn, lookup, writeStart, writeEnd, active time.Time
		for _, e := range evs {
			switch {
			case e.Kind == "provision" && e.Event == "deploy" && deploy.IsZero():
				deploy = e.Time
			case deploy.IsZero():
			case e.Kind == "power" && e.Event == "power on" && powerOn.IsZero():
				powerOn = e.Time
			case e.Kind == "lookup" && lookup.IsZero():
				lookup = e.Time
			case e.Kind == "agent_command" && slices.Contains([]string{"deploy.execute_deploy_step", "standby.prepare_image"}, e.Event) && writeStart.IsZero():
				writeStart = e.Time
			case e.Kind == "agent_command" && slices.Contains([]string{"execute_deploy_step result", "prepare_image result"}, e.Event) && writeEnd.IsZero():
				writeEnd = e.Time
			case e.ToState == "active" && active.IsZero():
				active = e.Time
			}
		}
		marker, ok := markers[node]
		if deploy.IsZero() || powerOn.IsZero() || lookup.IsZero() || writeStart.IsZero() || writeEnd.IsZero() || active.IsZero() || !ok {
			return nil, errors.New("node " + node + ": a deploy phase is missing from the events or the console")
		}
		out = append(out, deployTimes{
			node:                  node,
			requestToPowerOn:      powerOn.Sub(deploy).Seconds(),
			bootToLookup:          lookup.Sub(powerOn).Seconds(),
			imageWrite:            writeEnd.Sub(writeStart).Seconds(),
			rebootToMarker:        marker.Sub(writeEnd).Seconds(),
			deployToActive:        active.Sub(deploy).Seconds(),
			deployToMarkerSeconds: marker.Sub(deploy).Seconds(),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].node < out[j].node })
	return out, nil
}
