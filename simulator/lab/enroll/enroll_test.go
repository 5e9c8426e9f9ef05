package enroll_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/ironlab/ironlab/simulator/lab"
	"github.com/ironlab/ironlab/simulator/lab/enroll"
)

func testLab(t *testing.T, groups ...lab.GroupSpec) *lab.Lab {
	t.Helper()
	for i := range groups {
		if err := enroll.Complete(&groups[i]); err != nil {
			t.Fatal(err)
		}
	}
	l, err := lab.New(lab.Spec{Name: "t", Seed: 7, StateDir: t.TempDir(), BMCBasePort: 19230, Groups: groups})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func group(name string, count int, bmc lab.BMC, class string) lab.GroupSpec {
	return lab.GroupSpec{Name: name, Count: count,
		Hardware:   lab.Hardware{BMC: bmc, Firmware: "uefi", CPUs: 1, MemoryMB: 512, DiskSize: 1 << 20},
		Enrollment: lab.Enrollment{Driver: class, Dialect: "v1"}}
}

// The one mapping: hardware gives the default class; a class names the
// hardware it drives; an override must fit the hardware.
func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		bmc      lab.BMC
		deploy   lab.Deploy
		override string
		want     string // class, or error text
	}{
		{lab.BMCIPMI, "", "", "agent_ipmitool"},
		{lab.BMCIPMI, lab.DeployPXE, "", "pxe_ipmitool"},
		{lab.BMCSSH, "", "", "agent_ssh"},
		{lab.BMCNone, "", "", "fake_agent"},
		{lab.BMCNone, lab.DeployPXE, "", "fake_pxe"},
		{lab.BMCRedfish, "", "", "agent_redfish"},
		{lab.BMCRedfish, lab.DeployPXE, "", "pxe_redfish"},
		{"", "", "agent_pyghmi", "agent_pyghmi"},
		{lab.BMCIPMI, "", "agent_pyghmi", "agent_pyghmi"},
		{lab.BMCSSH, "", "agent_pyghmi", "driver class agent_pyghmi drives BMC ipmi, the hardware has ssh"},
		{"", lab.DeployAgent, "pxe_ssh", "driver class pxe_ssh deploys with pxe, the group says agent"},
		{"", "", "agent_foo", `unknown driver class "agent_foo" (one of agent_ipmitool,`},
		{"", "", "", "no BMC and no driver class"},
	} {
		c, err := enroll.Resolve(tc.bmc, tc.deploy, tc.override)
		got := c.Name
		if err != nil {
			got = err.Error()
		}
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("Resolve(%q, %q, %q) = %q, want %q", tc.bmc, tc.deploy, tc.override, got, tc.want)
		}
	}
	if c, _ := enroll.Lookup("pxe_ssh"); c.BMC != lab.BMCSSH || c.Deploy != lab.DeployPXE {
		t.Errorf("pxe_ssh is %+v", c)
	}
	ht, err := enroll.HardwareTypeOf(lab.BMCIPMI, lab.DeployAgent)
	if err != nil || ht.Driver != "ipmi" || ht.Interfaces["power_interface"] != "ipmitool" || ht.Interfaces["deploy_interface"] != "direct" || ht.Interfaces["boot_interface"] != "pxe" {
		t.Errorf("ipmi hardware in a real Ironic: %+v, %v", ht, err)
	}
	if _, err := enroll.HardwareTypeOf(lab.BMCSSH, lab.DeployAgent); err == nil {
		t.Errorf("a real Ironic drives SSH power")
	}
}

func TestDriverInfoAndProperties(t *testing.T) {
	l := testLab(t, group("fa", 1, lab.BMCNone, ""), group("ip", 2, lab.BMCIPMI, ""), group("ss", 1, lab.BMCSSH, ""), group("rf", 1, lab.BMCRedfish, ""))
	rf, _ := l.Node("rf-0")
	if di := enroll.DriverInfo(rf); di["redfish_address"] != rf.RedfishURL() || di["redfish_system_id"] != rf.Redfish.Path() ||
		di["redfish_username"] != "admin" || di["redfish_verify_ca"] != rf.RedfishCA() || rf.RedfishCA() == "" {
		t.Errorf("BMC redfish: driver_info %v", di)
	}
	fa, _ := l.Node("fa-0")
	ip, _ := l.Node("ip-1")
	ss, _ := l.Node("ss-0")
	if di := enroll.DriverInfo(fa); len(di) != 0 {
		t.Errorf("BMC none: driver_info %v", di)
	}
	di := enroll.DriverInfo(ip)
	if di["ipmi_address"] != "127.0.0.1" || di["ipmi_port"] != 19232 || di["ipmi_username"] != "admin" || di["ipmi_password"] != "password" {
		t.Errorf("BMC ipmi: driver_info %v", di)
	}
	di = enroll.DriverInfo(ss)
	if di["ssh_address"] != "127.0.0.1" || di["ssh_port"] != ss.SSH.Port || !strings.HasSuffix(l.SSHAddr(), fmt.Sprintf(":%d", ss.SSH.Port)) || di["ssh_virt_type"] != "virsh" || di["ssh_username"] != "admin" {
		t.Errorf("BMC ssh: driver_info %v", di)
	}
	if p := enroll.Properties(ip); p["capabilities"] != "boot_mode:uefi" || p["cpus"] != 1 || p["memory_mb"] != 512 || p["cpu_arch"] != "x86_64" {
		t.Errorf("properties %v", p)
	}
	if b := enroll.Node(ip); b["driver"] != "agent_ipmitool" || b["uuid"] != ip.UUID {
		t.Errorf("node body %v", b)
	}
}

type nodesYAML struct {
	Nodes []struct {
		Name           string         `yaml:"name"`
		Driver         string         `yaml:"driver"`
		DriverInfo     map[string]any `yaml:"driver_info"`
		Properties     map[string]any `yaml:"properties"`
		PowerInterface string         `yaml:"power_interface"`
		Ports          []struct {
			Address string `yaml:"address"`
		} `yaml:"ports"`
	} `yaml:"nodes"`
}

func readNodes(t *testing.T, p string) nodesYAML {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var got nodesYAML
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestWriteNodesYAML(t *testing.T) {
	ipg := group("ip", 2, lab.BMCIPMI, "")
	// Strings a careless encoder writes plain, which then read back as a
	// number or (PyYAML, the consumer) a boolean.
	ipg.BMCUser, ipg.BMCPassword = "on", "1e3"
	l := testLab(t, group("fa", 3, lab.BMCNone, ""), ipg)
	if err := l.Images.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "nodes.yaml")
	if err := enroll.WriteNodesYAML(l, p, enroll.TargetBuiltin, ""); err != nil {
		t.Fatal(err)
	}
	got := readNodes(t, p)
	if len(got.Nodes) != 5 {
		t.Fatalf("%d nodes in nodes.yaml", len(got.Nodes))
	}
	ip := got.Nodes[4]
	n, _ := l.Node("ip-1")
	if ip.Name != "ip-1" || ip.Driver != "agent_ipmitool" || ip.DriverInfo["ipmi_port"] != 19234 || ip.PowerInterface != "" ||
		ip.DriverInfo["ipmi_password"] != "1e3" || ip.DriverInfo["ipmi_username"] != "on" || ip.Ports[0].Address != n.MACs[0] || ip.Properties["cpu_arch"] != "x86_64" {
		t.Errorf("node entry %+v", ip)
	}
	// For a real Ironic: each node's hardware type and its interfaces.
	if err := enroll.WriteNodesYAML(l, p, enroll.TargetIronic, ""); err != nil {
		t.Fatal(err)
	}
	got = readNodes(t, p)
	if ip := got.Nodes[4]; ip.Driver != "ipmi" || ip.PowerInterface != "ipmitool" || ip.DriverInfo["ipmi_port"] != 19234 {
		t.Errorf("node entry for a real Ironic %+v", ip)
	}
	if fa := got.Nodes[0]; fa.Driver != "manual-management" || fa.PowerInterface != "fake" {
		t.Errorf("a BMC-less node for a real Ironic: %+v", fa)
	}
}
