package scenarios

import "testing"

// Groups given by their hardware alone deploy: an SSH-powered group of
// two-NIC machines and a BMC-less one, enrolled with the classes their
// hardware maps to.
func TestHardwareGroupsDeploy(t *testing.T) {
	s, err := Parse("hw.yaml", []byte(`name: hw-groups
seed: 5
lab:
  heartbeat_timeout: 4s
  automated_clean: false
  images: [{id: img, size: 1MiB}]
  groups:
    - {name: virt, count: 1, bmc: ssh, nics: 2, disk_size: 8MiB}
    - {name: bare, count: 1, bmc: none, boot_mode: uefi, disk_size: 8MiB}
steps:
  - enroll: {}
  - manage: {}
  - provide: {}
  - wait: {state: available, timeout: 60s}
  - deploy: {image: img}
  - wait: {state: active, timeout: 60s}
  - expect: {disk_image: img, last_error: ""}
`))
	if err != nil {
		t.Fatal(err)
	}
	res, _, _ := runScenario(t, s)
	classes := map[string]string{}
	for _, n := range res.Nodes {
		classes[n.Name] = n.Driver
	}
	if classes["virt-0"] != "agent_ssh" || classes["bare-0"] != "fake_agent" {
		t.Errorf("enrolled with %v, want virt-0 agent_ssh and bare-0 fake_agent", classes)
	}
}
