package lab

import (
	"fmt"
	"sort"
	"strings"
)

// Target is what the lab's nodes are enrolled into: the built-in driver,
// which knows the spec's driver classes (agent_ipmitool, ...), or a real
// OpenStack Ironic, which loads hardware types (ipmi, redfish,
// fake-hardware) with interfaces.
type Target string

const (
	TargetBuiltin Target = "builtin"
	TargetIronic  Target = "ironic"
)

// ParseTarget reads a --target value.
func ParseTarget(s string) (Target, error) {
	switch t := Target(s); t {
	case TargetBuiltin, TargetIronic:
		return t, nil
	}
	return "", fmt.Errorf("target %q: want builtin or ironic", s)
}

// Enrollment is one node as `POST /v1/nodes` (and `baremetal create`) takes
// it, plus its ports.
type Enrollment struct {
	Name   string
	UUID   string
	Driver string
	// Interfaces are the node's *_interface fields (boot_interface: pxe, ...),
	// empty for the built-in driver, whose class fixes them.
	Interfaces map[string]string
	DriverInfo map[string]any
	Properties map[string]any
	Ports      []string
}

// Body is the node's create request body.
func (e Enrollment) Body() map[string]any {
	b := map[string]any{
		"name": e.Name, "uuid": e.UUID, "driver": e.Driver,
		"driver_info": e.DriverInfo, "properties": e.Properties,
	}
	for k, v := range e.Interfaces {
		b[k] = v
	}
	return b
}

// ironicInterfaces maps what a node's hardware is powered and deployed by
// to Ironic 21.4's hardware type and interfaces. Ironic has neither SSH
// power (removed in Pike) nor a deploy in which the conductor writes the
// image (iscsi, removed in Xena), so the lab's SSH-powered and mock-PXE
// nodes have no equivalent there.
func ironicInterfaces(power string) (driver string, ifaces map[string]string, ok bool) {
	switch power {
	case "ipmi":
		return "ipmi", map[string]string{
			"power_interface": "ipmitool", "management_interface": "ipmitool",
			"boot_interface": "pxe", "deploy_interface": "direct",
		}, true
	case "redfish":
		return "redfish", map[string]string{
			"power_interface": "redfish", "management_interface": "redfish",
			"boot_interface": "pxe", "deploy_interface": "direct",
		}, true
	case "fake":
		// FakePower: the agent runs from the start (the spec's long-running
		// model). fake-hardware's fake management takes only PXE as a boot
		// device, and the direct deploy sets disk at its end; the
		// manual-management type pairs fake power with noop management,
		// which takes both.
		return "manual-management", map[string]string{
			"power_interface": "fake", "management_interface": "noop",
			"boot_interface": "pxe", "deploy_interface": "direct",
		}, true
	}
	return "", nil, false
}

// powerOf says how a node is powered, from its hardware: the BMC it has.
func (n *Node) powerOf() string {
	switch {
	case n.BMC != nil:
		return "ipmi"
	case len(n.sshInfo) > 0:
		return "ssh"
	case n.Redfish != nil:
		return "redfish"
	case strings.HasPrefix(n.Driver, "fake_"):
		return "fake"
	}
	return "none"
}

// deploysByAgent says whether the node is deployed by the agent (direct
// deploy) rather than by the mock PXE deploy.
func (n *Node) deploysByAgent() bool {
	return strings.HasPrefix(n.Driver, "agent_") || n.Driver == "fake_agent"
}

// Enrollment is how node n is enrolled into target. For a real Ironic it
// names a hardware type and interfaces and adds driver_info's
// deploy_kernel and deploy_ramdisk (served by the lab's image server:
// Ironic downloads them before it boots a node), so that `baremetal
// create` of what `ironlab up` writes needs no hand edits.
func (l *Lab) Enrollment(n *Node, target Target) (Enrollment, error) {
	e := Enrollment{Name: n.Name, UUID: n.UUID, Driver: n.Driver, DriverInfo: n.DriverInfo(), Properties: n.Properties(), Ports: append([]string(nil), n.MACs...)}
	if target != TargetIronic {
		return e, nil
	}
	power := n.powerOf()
	driver, ifaces, ok := ironicInterfaces(power)
	if !ok || !n.deploysByAgent() {
		what := "its " + power + " power"
		if !n.deploysByAgent() {
			what = "the mock PXE deploy"
		}
		return e, fmt.Errorf("node %s (group %s, class %s): a real Ironic has no equivalent of %s; enroll it into the built-in driver (--target builtin) or use an agent class with IPMI, Redfish or fake power", n.Name, n.Group, n.Driver, what)
	}
	e.Driver, e.Interfaces = driver, ifaces
	if ifaces["boot_interface"] != "fake" {
		k, r := l.deployRamdiskURLs()
		e.DriverInfo["deploy_kernel"] = k
		e.DriverInfo["deploy_ramdisk"] = r
	}
	return e, nil
}

// Enrollments are all the lab's nodes as Enrollment gives them, or the
// first node that target cannot take.
func (l *Lab) Enrollments(target Target) ([]Enrollment, error) {
	var out []Enrollment
	var errs []string
	for _, n := range l.nodes {
		e, err := l.Enrollment(n, target)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		out = append(out, e)
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return out, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return out, nil
}

// deployRamdiskURLs registers (once) and returns the URLs of the deploy
// kernel and ramdisk on the image server: the agent ramdisk the VMs boot on
// the libvirt backend, small stand-ins on the fake backend (whose machines
// start an in-process agent on a network boot, whatever the files hold).
func (l *Lab) deployRamdiskURLs() (kernel, ramdisk string) {
	l.bootFilesOnce.Do(func() {
		if l.vm != nil {
			l.Images.AddFilePath("deploy_kernel", l.vm.kernelPath())
			l.Images.AddFilePath("deploy_ramdisk", l.vm.initrdPath())
			return
		}
		l.Images.AddFile("deploy_kernel", []byte("ironlab deploy kernel stand-in: fake machines boot an in-process agent\n"))
		l.Images.AddFile("deploy_ramdisk", []byte("ironlab deploy ramdisk stand-in: fake machines boot an in-process agent\n"))
	})
	return l.Images.FileURL("deploy_kernel"), l.Images.FileURL("deploy_ramdisk")
}
