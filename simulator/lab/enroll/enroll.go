// Package enroll is how lab nodes are enrolled in a driver, derived from
// their hardware by one mapping: the classic driver classes
// (agent_ipmitool, fake_agent, ...) and a real Ironic's hardware types and
// interfaces (driver ipmi, power and management ipmitool, boot pxe, deploy
// direct), the nodes' driver_info and properties, and nodes.yaml for
// `baremetal create`. A scenario may name the class itself: it overrides
// the default, and must fit the hardware.
//
// A new BMC kind of the lab adds its classes to the table, its case to
// HardwareTypeOf and its driver_info to DriverInfo (as redfish did).
package enroll

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ironlab/ironlab/simulator/lab"
)

// Class is a classic driver class and the hardware it drives.
type Class struct {
	Name   string
	BMC    lab.BMC
	Deploy lab.Deploy
}

// classes, the first of each BMC and deploy being that hardware's default.
var classes = []Class{
	{"agent_ipmitool", lab.BMCIPMI, lab.DeployAgent},
	{"agent_pyghmi", lab.BMCIPMI, lab.DeployAgent},
	{"agent_ssh", lab.BMCSSH, lab.DeployAgent},
	{"fake_agent", lab.BMCNone, lab.DeployAgent},
	{"pxe_ipmitool", lab.BMCIPMI, lab.DeployPXE},
	{"pxe_pyghmi", lab.BMCIPMI, lab.DeployPXE},
	{"pxe_ssh", lab.BMCSSH, lab.DeployPXE},
	{"fake_pxe", lab.BMCNone, lab.DeployPXE},
	{"agent_redfish", lab.BMCRedfish, lab.DeployAgent}, // lab extensions
	{"pxe_redfish", lab.BMCRedfish, lab.DeployPXE},
}

// Lookup finds a class by name.
func Lookup(name string) (Class, bool) {
	for _, c := range classes {
		if c.Name == name {
			return c, true
		}
	}
	return Class{}, false
}

// ClassNames are the classes' names, sorted.
func ClassNames() []string {
	var names []string
	for _, c := range classes {
		names = append(names, c.Name)
	}
	sort.Strings(names)
	return names
}

// Default is the class hardware of this BMC and deploy is enrolled with.
func Default(bmc lab.BMC, deploy lab.Deploy) (Class, error) {
	for _, c := range classes {
		if c.BMC == bmc && c.Deploy == deploy {
			return c, nil
		}
	}
	return Class{}, fmt.Errorf("no driver class for BMC %q with deploy %q", bmc, deploy)
}

// Resolve is the class of a group whose hardware has this BMC (empty:
// the class's) and deploy (empty: the class's, else agent), enrolled with
// class override when it is set. An override must drive that hardware.
func Resolve(bmc lab.BMC, deploy lab.Deploy, override string) (Class, error) {
	if override == "" {
		if bmc == "" {
			return Class{}, fmt.Errorf("no BMC and no driver class: say bmc (%s) or the driver class", bmcNames())
		}
		if deploy == "" {
			deploy = lab.DeployAgent
		}
		return Default(bmc, deploy)
	}
	c, ok := Lookup(override)
	if !ok {
		return Class{}, fmt.Errorf("unknown driver class %q (one of %s)", override, strings.Join(ClassNames(), ", "))
	}
	if bmc != "" && bmc != c.BMC {
		return Class{}, fmt.Errorf("driver class %s drives BMC %s, the hardware has %s", c.Name, c.BMC, bmc)
	}
	if deploy != "" && deploy != c.Deploy {
		return Class{}, fmt.Errorf("driver class %s deploys with %s, the group says %s", c.Name, c.Deploy, deploy)
	}
	return c, nil
}

// Complete fills in a group's hardware BMC and deploy from its enrollment's
// driver class, or the class from the hardware, whichever is missing.
func Complete(g *lab.GroupSpec) error {
	c, err := Resolve(g.BMC, g.Enrollment.Deploy, g.Enrollment.Driver)
	if err != nil {
		return fmt.Errorf("group %s: %w", g.Name, err)
	}
	g.BMC, g.Enrollment.Deploy, g.Enrollment.Driver = c.BMC, c.Deploy, c.Name
	return nil
}

func bmcNames() string {
	var s []string
	for _, b := range lab.BMCs() {
		s = append(s, string(b))
	}
	return strings.Join(s, ", ")
}

// HardwareType is how a real Ironic enrolls hardware: a hardware type and
// its interfaces.
type HardwareType struct {
	Driver     string
	Interfaces map[string]string // power_interface: ipmitool, ...
}

// HardwareTypeOf is the hardware type and interfaces a real Ironic drives
// this hardware with.
func HardwareTypeOf(bmc lab.BMC, deploy lab.Deploy) (HardwareType, error) {
	if deploy != lab.DeployAgent {
		return HardwareType{}, fmt.Errorf("a real Ironic has no %s deploy (the iSCSI PXE deploy is gone): use the agent", deploy)
	}
	switch bmc {
	case lab.BMCIPMI:
		return HardwareType{Driver: "ipmi", Interfaces: map[string]string{
			"power_interface": "ipmitool", "management_interface": "ipmitool", "boot_interface": "pxe", "deploy_interface": "direct",
			"rescue_interface": "agent"}}, nil
	case lab.BMCRedfish:
		return HardwareType{Driver: "redfish", Interfaces: map[string]string{
			"power_interface": "redfish", "management_interface": "redfish", "boot_interface": "pxe", "deploy_interface": "direct",
			"rescue_interface": "agent"}}, nil
	case lab.BMCNone:
		// FakePower: the agent runs from the start (the spec's long-running
		// model). fake-hardware's fake management takes only PXE as a boot
		// device, and the direct deploy sets disk at its end; the
		// manual-management type pairs fake power with noop management,
		// which takes both.
		return HardwareType{Driver: "manual-management", Interfaces: map[string]string{
			"power_interface": "fake", "management_interface": "noop", "boot_interface": "pxe", "deploy_interface": "direct"}}, nil
	}
	return HardwareType{}, fmt.Errorf("a real Ironic has no hardware type for BMC %s", bmc)
}

// DriverInfo is node n's driver_info: how the driver reaches its BMC.
func DriverInfo(n *lab.Node) map[string]any {
	di := map[string]any{}
	if n.BMC != nil {
		ap := n.BMC.Addr()
		di["ipmi_address"] = ap.Addr().String()
		di["ipmi_port"] = int(ap.Port())
		di["ipmi_username"] = n.BMCCreds.Username
		di["ipmi_password"] = n.BMCCreds.Password
	}
	if n.Redfish != nil {
		di["redfish_address"] = n.RedfishURL()
		di["redfish_system_id"] = n.Redfish.Path()
		di["redfish_username"] = n.BMCCreds.Username
		di["redfish_password"] = n.BMCCreds.Password
		if ca := n.RedfishCA(); ca != "" {
			di["redfish_verify_ca"] = ca
		}
	}
	if s := n.SSH; s != nil {
		// The VM is found by the node's UUID (virsh domname), as the
		// driver's SSHPower does without ssh_domain.
		di["ssh_address"] = s.Address
		di["ssh_port"] = s.Port
		di["ssh_username"] = s.Username
		di["ssh_password"] = s.Password
		di["ssh_virt_type"] = "virsh"
	}
	return di
}

// Properties are node n's properties, as inspection would find them.
func Properties(n *lab.Node) map[string]any {
	hw := n.Machine.Hardware()
	var disk int64
	if len(hw.Disks) > 0 {
		disk = hw.Disks[0].SizeBytes
	}
	return map[string]any{
		"cpus":         hw.CPUs,
		"memory_mb":    hw.MemoryMB,
		"local_gb":     disk >> 30,
		"cpu_arch":     hw.CPUArch,
		"capabilities": "boot_mode:" + n.Hardware.Firmware,
	}
}

// Node is the body of node n's create request (POST /v1/nodes) for the
// built-in driver.
func Node(n *lab.Node) map[string]any {
	e := Enrollment{Name: n.Name, UUID: n.UUID, Driver: n.Driver, DriverInfo: DriverInfo(n), Properties: Properties(n)}
	return e.Body()
}
