package enroll

import (
	"fmt"
	"maps"
	"sort"
	"strings"

	"github.com/ironlab/ironlab/simulator/lab"
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

// TargetOf tells, from the driver names an API lists (GET /v1/drivers),
// what it is: ironlab's driver offers the spec's classes (agent_ipmitool,
// fake_agent, ...); anything else is taken for a real Ironic, which offers
// hardware types.
func TargetOf(drivers []string) Target {
	for _, n := range drivers {
		if n == "agent_ipmitool" || n == "fake_agent" {
			return TargetBuiltin
		}
	}
	return TargetIronic
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

// For is how node n of lab l is enrolled into target: its class for the
// built-in driver; for a real Ironic the hardware type and interfaces its
// hardware maps to (HardwareTypeOf), with driver_info's deploy_kernel and
// deploy_ramdisk served by the lab's image server (Ironic downloads them
// before it boots a node), so that `baremetal create` of what `ironlab up`
// writes needs no hand edits.
func For(l *lab.Lab, n *lab.Node, target Target) (Enrollment, error) {
	e := Enrollment{Name: n.Name, UUID: n.UUID, Driver: n.Driver, DriverInfo: DriverInfo(n), Properties: Properties(n), Ports: append([]string(nil), n.MACs...)}
	if target != TargetIronic {
		if n.Boot == lab.BootVirtualMedia {
			return e, fmt.Errorf("node %s (group %s): boot %s is a real Ironic's redfish-virtual-media; ironlab's driver boots the agent over the network only: enroll it into a real Ironic (--target ironic) or leave boot out", n.Name, n.Group, lab.BootVirtualMedia)
		}
		return e, nil
	}
	ht, err := HardwareTypeOf(n.Hardware.BMC, n.Deploy)
	if err != nil {
		what := "its " + string(n.Hardware.BMC) + " BMC"
		if n.Deploy != lab.DeployAgent {
			what = "the mock PXE deploy"
		}
		return e, fmt.Errorf("node %s (group %s, class %s): a real Ironic has no equivalent of %s; enroll it into the built-in driver (--target builtin) or use an agent class with IPMI, Redfish or fake power", n.Name, n.Group, n.Driver, what)
	}
	e.Driver, e.Interfaces = ht.Driver, ht.Interfaces
	if n.Boot == lab.BootVirtualMedia {
		if n.Hardware.BMC != lab.BMCRedfish {
			return e, fmt.Errorf("node %s (group %s): boot %s needs a Redfish BMC, the node has %s", n.Name, n.Group, lab.BootVirtualMedia, n.Hardware.BMC)
		}
		// Ironic builds an ISO of deploy_kernel and deploy_ramdisk
		// (isolinux for BIOS), serves it from [deploy]http_url and inserts
		// it into the BMC's virtual CD.
		e.Interfaces = maps.Clone(e.Interfaces)
		e.Interfaces["boot_interface"] = "redfish-virtual-media"
	}
	if ht.Interfaces["boot_interface"] != "fake" {
		k, r := l.DeployRamdiskURLs()
		e.DriverInfo["deploy_kernel"] = k
		e.DriverInfo["deploy_ramdisk"] = r
		if ht.Interfaces["rescue_interface"] == "agent" {
			// The agent is the rescue ramdisk too; the pxe boot interface
			// wants it named (pxe_utils.parse_driver_info(mode='rescue')).
			e.DriverInfo["rescue_kernel"] = k
			e.DriverInfo["rescue_ramdisk"] = r
		}
	}
	return e, nil
}

// All are all the lab's nodes as For gives them, or an error naming every
// node that target cannot take.
func All(l *lab.Lab, target Target) ([]Enrollment, error) {
	var out []Enrollment
	var errs []string
	for _, n := range l.Nodes() {
		e, err := For(l, n, target)
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
