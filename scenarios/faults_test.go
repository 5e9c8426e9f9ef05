package scenarios

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/simulator/bmc"
	"github.com/ironlab/ironlab/simulator/lab/enroll"
)

// An until_reboot agent fault set while the node runs no agent (enrolled,
// powered off) reaches the first agent it boots: cleaning fails with the
// fault's error instead of passing as if there had been no fault.
func TestUntilRebootFaultReachesTheNextAgent(t *testing.T) {
	s, err := Parse("cold.yaml", []byte(`name: cold-fault
seed: 3
lab:
  automated_clean: true
  watchdog_action: "off"
  # Heartbeats every 1-2 s: one whose call-back finds the node still
  # locked is skipped (as in Ironic), and at the default 300 s the next
  # would come after the wait's minute.
  heartbeat_timeout: 4s
  images: [{id: img, size: 1MiB}]
  groups:
    - {name: cold, count: 1, driver: agent_pyghmi, disk_size: 8MiB}
steps:
  - enroll: {}
  - fault: {agent: {fail_command: {command: erase_devices, error: "platter 7 is on fire"}}, until_reboot: true}
  - manage: {}
  - provide: {}
  - wait: {state: clean failed, timeout: 60s}
  - expect: {last_error: "platter 7 is on fire"}
`))
	if err != nil {
		t.Fatal(err)
	}
	runScenario(t, s)
}

// A fault the lab section's backend cannot deliver is a parse error that
// names the step's field, the group and why.
func TestFaultsTheBackendCannotDeliverFailParsing(t *testing.T) {
	const lab = `name: v
lab:
  backend: libvirt
  groups:
    - {name: a, count: 1, driver: agent_ipmitool}
    - {name: p, count: 1, driver: pxe_ipmitool}
steps:
  - enroll: {}
`
	for name, tc := range map[string]struct{ step, want string }{
		"machine fault on a VM": {"  - fault: {nodes: [a], machine: {fail_boot: true}}\n",
			"v.yaml:9:34: steps[1].fault.machine: group a: machine faults need the fake backend"},
		"until_reboot on a VM": {"  - fault: {nodes: [a], agent: {crash_during: write_image}, until_reboot: true}\n",
			"steps[1].fault.until_reboot: group a: until_reboot needs the fake backend"},
		"agent fault on a PXE VM": {"  - fault: {nodes: [p], agent: {crash_during: write_image}}\n",
			"steps[1].fault.agent: group p: agent faults on the libvirt backend go on the agent ramdisk's command line"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("v.yaml", []byte(lab+tc.step))
			if err == nil || !errors.Is(err, ErrBadScenario) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a bad-scenario error containing %q", err, tc.want)
			}
		})
	}
}

// A fault that cannot apply to the lab a run builds fails the run before
// its first step, naming file, line, step and node: the backend chosen at
// run time, a selector that finds no node, a node without the part the
// fault is for, a conductor the run does not own.
func TestFaultsThatCannotApplyFailTheRun(t *testing.T) {
	const file = `name: f
lab:
  images: [{id: img, size: 1MiB}]
  groups:
    - {name: g, count: 2, driver: fake_agent, disk_size: 8MiB}
steps:
  - enroll: {}
  - fault: {nodes: [g-1], machine: {power_lag: 1s}}
`
	for name, tc := range map[string]struct {
		edit func(*Scenario, *Options)
		want string
	}{
		"machine fault on the libvirt backend": {func(_ *Scenario, o *Options) { o.Backend = "libvirt" },
			"f.yaml:8: step 2: fault.machine: group g: machine faults need the fake backend"},
		"no such node": {func(s *Scenario, _ *Options) { s.Steps[1].Fault.Nodes = []string{"g-7"} },
			`f.yaml:8: step 2: fault: no node "g-7" in the lab`},
		"BMC fault on a node without a BMC": {func(s *Scenario, _ *Options) { s.Steps[1].Fault.BMC = &bmc.Faults{} },
			"f.yaml:8: step 2: fault: node g-1 (fake_agent) has no BMC"},
		"conductor fault on a driver the run does not own": {func(s *Scenario, _ *Options) {
			s.Steps[1].Fault.Machine, s.Steps[1].Fault.Conductor = nil, &ConductorFault{}
		}, "f.yaml:8: step 2: fault: a conductor fault kills the built-in driver's process"},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := Parse("f.yaml", []byte(file))
			if err != nil {
				t.Fatal(err)
			}
			state := t.TempDir()
			// No driver runs: the check comes before the run needs one
			// (the target is given, so the runner does not probe the URL).
			opts := Options{ResultsDir: t.TempDir(), StateDir: state, ImageCache: filepath.Join(state, "images"),
				DriverURL: "http://127.0.0.1:1", Target: enroll.TargetBuiltin, Out: &strings.Builder{}}
			tc.edit(s, &opts)
			res, err := Run(context.Background(), s, opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run error %v, want one containing %q", err, tc.want)
			}
			if res.Passed {
				t.Errorf("the run passed")
			}
		})
	}
}
