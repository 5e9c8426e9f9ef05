package scenarios

import (
	"context"
	"fmt"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `maintenance: true`: the node's maintenance flag.
type expectMaintenance bool

func init() { registerExpectation("maintenance", func() expectation { return new(expectMaintenance) }) }

func (e *expectMaintenance) validate(*validator, string, *Lab) {}

func (e *expectMaintenance) name() string { return fmt.Sprintf("maintenance %v", bool(*e)) }

func (e *expectMaintenance) check(_ context.Context, _ *runner, _ *lab.Node, an ironic.Node) string {
	if an.Maintenance != bool(*e) {
		return fmt.Sprintf("maintenance %v", an.Maintenance)
	}
	return ""
}
