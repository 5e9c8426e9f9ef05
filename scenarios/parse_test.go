package scenarios

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/simulator/lab"
)

func TestBuiltinScenariosParse(t *testing.T) {
	for _, name := range Builtin() {
		t.Run(name, func(t *testing.T) {
			all, err := LoadAll(name)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(all[0].Name, name) {
				t.Errorf("file %s's first scenario is named %q", name, all[0].Name)
			}
		})
	}
}

func TestDeployScenarioShape(t *testing.T) {
	s, err := Load("deploy")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Lab.Groups[0]; got.Count != 10 || got.Driver != "fake_agent" {
		t.Errorf("deploy group = %+v, want 10 fake_agent nodes", got)
	}
	if s.Lab.heartbeatTimeout != 4*time.Second {
		t.Errorf("heartbeat timeout %s", s.Lab.heartbeatTimeout)
	}
}

const good = `name: t
lab:
  images: [{id: img, size: 1MiB}]
  groups:
    - {name: g, count: 2, driver: fake_agent}
steps:
  - enroll: {}
  - wait: {state: available, timeout: 5s}
`

func TestParseErrorsNameFileLineColumn(t *testing.T) {
	tests := map[string]struct {
		yaml string
		want string // substring of the error, with file:line:col
	}{
		"syntax: bad indentation": {
			yaml: "name: t\nlab:\n  groups:\n  - name: g\n   count: 2\n",
			want: "t.yaml:5:",
		},
		"syntax: unclosed flow": {
			yaml: "name: t\nsteps:\n  - enroll: {nodes: [g\n",
			want: "t.yaml:3:",
		},
		"unknown field": {
			yaml: strings.Replace(good, "timeout: 5s", "timeout: 5s, colour: red", 1),
			want: "t.yaml:8:",
		},
		"wrong type": {
			yaml: strings.Replace(good, "count: 2", "count: two", 1),
			want: "t.yaml:5:",
		},
		"boot virtual-media without a Redfish BMC": {
			yaml: "only: ironic\n" + strings.Replace(good, "driver: fake_agent}", "driver: agent_pyghmi, boot: virtual-media}", 1),
			want: "t.yaml:6:55: lab.groups[0].boot: virtual-media needs a Redfish BMC",
		},
		"boot virtual-media without only: ironic": {
			yaml: strings.Replace(good, "driver: fake_agent}", "driver: agent_redfish, boot: virtual-media}", 1),
			want: "lab.groups[0].boot: virtual-media is a real Ironic's redfish-virtual-media boot, which ironlab's driver lacks: the scenario must say only: ironic",
		},
		"unknown boot": {
			yaml: strings.Replace(good, "driver: fake_agent}", "driver: agent_redfish, boot: http}", 1),
			want: `lab.groups[0].boot: must be pxe or virtual-media, got "http"`,
		},
		"unknown state": {
			yaml: strings.Replace(good, "state: available", "state: avaliable", 1),
			want: `t.yaml:8:19: steps[1].wait.state: unknown provision state "avaliable"`,
		},
		"windows line ends after comments": {
			yaml: "# one\r\n# two\r\n" + strings.ReplaceAll(strings.Replace(good, "state: available", "state: avaliable", 1), "\n", "\r\n"),
			want: `t.yaml:10:19: steps[1].wait.state: unknown provision state "avaliable"`,
		},
		"unknown driver": {
			yaml: strings.Replace(good, "driver: fake_agent", "driver: agent_foo", 1),
			want: `t.yaml:5:35: lab.groups[0].driver: unknown driver class "agent_foo"`,
		},
		"step only for an unknown target": {
			yaml: strings.Replace(good, "  - enroll: {}", "  - {enroll: {}, only: openstack}", 1),
			want: `t.yaml:7:`,
		},
		"scenario only for an unknown target": {
			yaml: strings.Replace(good, "name: t\n", "name: t\nonly: both\n", 1),
			want: `t.yaml:2:7: only: must be builtin or ironic, got "both"`,
		},
		"unknown group in step": {
			yaml: strings.Replace(good, "enroll: {}", "enroll: {nodes: [h]}", 1),
			want: `t.yaml:7:22: steps[0].enroll.nodes[0]: no group or node "h"`,
		},
		"bad duration": {
			yaml: strings.Replace(good, "timeout: 5s", "timeout: soon", 1),
			want: `t.yaml:8:39: steps[1].wait.timeout: want a positive duration`,
		},
		"two verbs in a step": {
			yaml: strings.Replace(good, "- enroll: {}", "- enroll: {}\n    manage: {}", 1),
			want: `steps[0]: a step needs exactly one of`,
		},
		"unknown expectation": {
			yaml: good + "  - expect: {state: available, colour: red}\n",
			want: `t.yaml:9:32: unknown expectation "colour"`,
		},
		"expectation of the wrong type": {
			yaml: good + "  - expect: {maintenance: often}\n",
			want: "t.yaml:9:",
		},
		"bad expectation value": {
			yaml: good + "  - expect: {state: actve}\n",
			want: `t.yaml:9:21: steps[2].expect.state: unknown provision state "actve"`,
		},
		"expects nothing": {
			yaml: good + "  - expect: {nodes: [g]}\n",
			want: `t.yaml:9:13: steps[2].expect: expects nothing: set one of bios_settings`,
		},
		"image missing": {
			yaml: good + "  - deploy: {image: other}\n",
			want: `t.yaml:9:21: steps[2].deploy.image: no image "other"`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded, want an error containing %q", tc.want)
			}
			if !errors.Is(err, ErrBadScenario) {
				t.Errorf("error %v does not wrap ErrBadScenario", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n  %v\nwant it to contain\n  %s", err, tc.want)
			}
		})
	}
}

func TestParseGood(t *testing.T) {
	s, err := Parse("t.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if s.Lab.Backend != "fake" || s.Lab.Groups[0].Dialect != "v1" || s.Lab.Images[0].size != 1<<20 {
		t.Errorf("defaults not applied: %+v", s.Lab)
	}
	if s.Steps[1].Wait.timeout != 5*time.Second || s.Steps[1].line != 8 {
		t.Errorf("wait step: timeout %s line %d", s.Steps[1].Wait.timeout, s.Steps[1].line)
	}
}

func TestParseSizeAndDuration(t *testing.T) {
	for in, want := range map[string]int64{"64MiB": 64 << 20, "1G": 1 << 30, "4096": 4096, "2 KiB": 2048} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := ParseSize("lots"); err == nil {
		t.Errorf("ParseSize(lots) succeeded")
	}
	for in, want := range map[string]time.Duration{"90s": 90 * time.Second, "90": 90 * time.Second, "0.5": 500 * time.Millisecond} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
}

func TestExpectClausesInFileOrder(t *testing.T) {
	s, err := Parse("t.yaml", []byte(good+"  - expect: {power: power off, nodes: [g], state: available, disk_zeroed: false, last_error: \"\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := s.Steps[2].Expect
	var got []string
	for _, c := range e.clauses {
		got = append(got, c.e.name())
	}
	// disk_zeroed: false states nothing; last_error "" wants it empty.
	want := []string{"power power off", "state available", "last_error empty"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("clauses (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"g"}, e.Nodes); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}
}

// A group says what its hardware is; the driver class follows from it by
// the one mapping, or is the group's own override, which must fit.
func TestGroupHardwareAndClass(t *testing.T) {
	parse := func(group string) (*Scenario, error) {
		return Parse("h.yaml", []byte("name: h\nlab:\n  groups:\n    - "+group+"\nsteps: [{enroll: {}}]\n"))
	}
	for group, want := range map[string][3]string{
		"{name: g, count: 1, bmc: ipmi}":                       {"agent_ipmitool", "ipmi", "agent"},
		"{name: g, count: 1, bmc: ssh, deploy: pxe}":           {"pxe_ssh", "ssh", "pxe"},
		"{name: g, count: 1, bmc: none}":                       {"fake_agent", "none", "agent"},
		"{name: g, count: 1, bmc: ipmi, driver: agent_pyghmi}": {"agent_pyghmi", "ipmi", "agent"},
		"{name: g, count: 1, driver: fake_pxe}":                {"fake_pxe", "none", "pxe"},
	} {
		s, err := parse(group)
		if err != nil {
			t.Errorf("%s: %v", group, err)
			continue
		}
		g := s.Lab.Groups[0]
		if got := [3]string{g.Driver, g.BMC, g.Deploy}; got != want {
			t.Errorf("%s: class, BMC, deploy %v, want %v", group, got, want)
		}
	}
	for group, want := range map[string]string{
		"{name: g, count: 1}":                                         "h.yaml:4:7: lab.groups[0].bmc: no BMC and no driver class",
		"{name: g, count: 1, bmc: serial}":                            `lab.groups[0].bmc: must be ipmi, redfish, ssh or none, got "serial"`,
		"{name: g, count: 1, bmc: ssh, driver: fake_agent}":           "lab.groups[0].driver: driver class fake_agent drives BMC none, the hardware has ssh",
		"{name: g, count: 1, deploy: pxe, driver: agent_ssh}":         "lab.groups[0].driver: driver class agent_ssh deploys with agent, the group says pxe",
		"{name: g, count: 1, bmc: ipmi, nics: 9}":                     "lab.groups[0].nics: must be 1 to 8",
		"{name: g, count: 1, bmc: ipmi, redfish_listen: per-node}":    "h.yaml:4:54: lab.groups[0].redfish_listen: per-node needs bmc redfish; group g has bmc ipmi",
		"{name: g, count: 1, bmc: redfish, redfish_listen: per-rack}": `lab.groups[0].redfish_listen: must be shared or per-node, got "per-rack"`,
	} {
		if _, err := parse(group); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", group, err, want)
		}
	}
}

// A Redfish group's listen mode reaches the lab's hardware.
func TestGroupRedfishListen(t *testing.T) {
	s, err := Parse("h.yaml", []byte("name: h\nlab:\n  groups:\n    - {name: g, count: 2, bmc: redfish, redfish_listen: per-node}\n    - {name: s, count: 1, bmc: redfish}\nsteps: [{enroll: {}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	ls := LabSpec(s)
	if got := ls.Groups[0].RedfishListen; got != lab.RedfishPerNode {
		t.Errorf("group g: Redfish listen %q, want per-node", got)
	}
	if got := ls.Groups[1].RedfishListen; got != "" {
		t.Errorf("group s: Redfish listen %q, want the default", got)
	}
}
