package scenarios

import (
	"context"
	"fmt"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `bios_version: v`: the machine's firmware version, as the next
// inventory reports it.
type expectBIOSVersion string

func init() {
	registerExpectation("bios_version", func() expectation { return new(expectBIOSVersion) })
}

func (e *expectBIOSVersion) unset() bool { return *e == "" }

func (e *expectBIOSVersion) validate(*validator, string, *Lab) {}

func (e *expectBIOSVersion) name() string { return "bios_version " + string(*e) }

func (e *expectBIOSVersion) check(_ context.Context, _ *runner, n *lab.Node, _ ironic.Node) string {
	if got := n.Machine.Hardware().BIOSVersion; got != string(*e) {
		return fmt.Sprintf("the inventory says BIOS version %q", got)
	}
	return ""
}
