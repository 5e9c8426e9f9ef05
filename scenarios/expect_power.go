package scenarios

import (
	"context"
	"fmt"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `power: power on`: the node's power state as the driver reports it
// ("power on" or "power off").
type expectPower string

func init() { registerExpectation("power", func() expectation { return new(expectPower) }) }

func (e *expectPower) unset() bool { return *e == "" }

func (e *expectPower) validate(v *validator, p string, _ *Lab) {
	if *e != "power on" && *e != "power off" {
		v.at(p, `must be "power on" or "power off", got %q`, string(*e))
	}
}

func (e *expectPower) name() string { return "power " + string(*e) }

func (e *expectPower) check(_ context.Context, _ *runner, _ *lab.Node, an ironic.Node) string {
	if an.Power() != string(*e) {
		return fmt.Sprintf("power_state %q", an.Power())
	}
	return ""
}
