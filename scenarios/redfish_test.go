package scenarios

import (
	"strings"
	"testing"
)

const redfishLab = `name: t
lab:
  images: [{id: img, size: 1MiB}]
  groups:
    - {name: ipmi, count: 1, driver: agent_pyghmi, disk_size: 4MiB}
    - {name: rf, count: 2, driver: agent_redfish, disk_size: 4MiB}
steps:
`

// The Redfish steps and faults refuse what cannot work, naming the line.
func TestRedfishStepErrors(t *testing.T) {
	tests := map[string]struct{ step, want string }{
		"virtual media on IPMI":     {"  - virtual_media: {nodes: [ipmi], image: img}", "steps[0].virtual_media: group ipmi (agent_pyghmi) has no Redfish BMC"},
		"virtual media, no image":   {"  - virtual_media: {nodes: [rf]}", "steps[0].virtual_media: needs image (a lab image), missing_image: true or agent_iso: true"},
		"virtual media, both":       {"  - virtual_media: {nodes: [rf], image: img, missing_image: true}", "set one of image, missing_image and agent_iso"},
		"virtual media, iso+image":  {"  - virtual_media: {nodes: [rf], image: img, agent_iso: true}", "set one of image, missing_image and agent_iso"},
		"agent iso refused":         {"  - virtual_media: {nodes: [rf], agent_iso: true, expect_failure: true}", "steps[0].virtual_media.expect_failure: an agent_iso insert is expected to work"},
		"virtual media, unknown":    {"  - virtual_media: {nodes: [rf], image: nope}", `steps[0].virtual_media.image: no image "nope"`},
		"firmware, bad version":     {"  - firmware_update: {nodes: [rf], version: '2 0'}", `steps[0].firmware_update.version: want a version like 2.1.0, got "2 0"`},
		"firmware, bad target":      {"  - firmware_update: {nodes: [rf], version: 2.0, target: nic}", `steps[0].firmware_update.target: must be bios or bmc, got "nic"`},
		"firmware on every group":   {"  - firmware_update: {version: 2.0}", "group ipmi (agent_pyghmi) has no Redfish BMC"},
		"redfish fault on IPMI":     {"  - fault: {nodes: [ipmi-0], redfish: {delay: 1s}}", "steps[0].fault.redfish: group ipmi (agent_pyghmi) has no Redfish BMC"},
		"redfish fault, 404 status": {"  - fault: {nodes: [rf], redfish: {server_error: 404}}", "redfish fault server_error 404: want a 5xx status"},
		"redfish fault, bad field":  {"  - fault: {nodes: [rf], redfish: {explode: true}}", `t.yaml:8:36: unknown field "explode"`},
		"expect console, nothing":   {"  - expect: {nodes: [rf]}", "expects nothing: set one of"},
	}
	for name, c := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(redfishLab+c.step+"\n"))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
	good := redfishLab + `  - virtual_media: {nodes: [rf-0], image: img}
  - virtual_media: {nodes: [rf-1], missing_image: true}
  - firmware_update: {nodes: [rf], version: 2.1.0, target: bmc}
  - fault: {nodes: [rf], redfish: {power_late: 2s, server_error: 503, server_error_count: 1}}
  - expect: {nodes: [rf], console: "virtual CD"}
`
	s, err := Parse("t.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if s.Steps[3].Fault.Redfish.ServerErrorCount != 1 || s.Steps[2].FirmwareUpdate.Target != "bmc" {
		t.Fatalf("parsed %+v %+v", s.Steps[3].Fault.Redfish, s.Steps[2].FirmwareUpdate)
	}
}

// The mock PXE deploy with Redfish power (pxe_redfish, a lab class that a
// real Ironic has no equivalent of, so not in the built-in scenario): the
// conductor streams the image, the machine boots it.
func TestPXERedfishDeploys(t *testing.T) {
	s, err := Parse("pxe-redfish.yaml", []byte(`name: pxe-redfish
lab:
  heartbeat_timeout: 10s
  automated_clean: false
  images: [{id: img, size: 4MiB}]
  groups: [{name: rp, count: 2, driver: pxe_redfish, disk_size: 16MiB}]
steps:
  - enroll: {}
  - manage: {}
  - provide: {}
  - wait: {state: available, timeout: 60s}
  - deploy: {image: img}
  - wait: {state: active, timeout: 2m}
  - expect: {state: active, power: power on, disk_image: img, booted_image: img}
`))
	if err != nil {
		t.Fatal(err)
	}
	res, _, _ := runScenario(t, s)
	if !res.Passed || len(res.Checks) < 5 {
		t.Fatalf("pxe_redfish scenario: passed %v, %d checks", res.Passed, len(res.Checks))
	}
}
