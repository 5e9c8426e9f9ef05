package scenarios

import (
	"context"
	"fmt"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `state: active`: the node's provision state.
type expectState string

func init() { registerExpectation("state", func() expectation { return new(expectState) }) }

func (e *expectState) unset() bool { return *e == "" }

func (e *expectState) validate(v *validator, p string, _ *Lab) {
	if !provision[string(*e)] {
		v.at(p, "unknown provision state %q (one of %s)", string(*e), keys(provision))
	}
}

func (e *expectState) name() string { return "state " + string(*e) }

func (e *expectState) check(_ context.Context, _ *runner, _ *lab.Node, an ironic.Node) string {
	if an.ProvisionState != string(*e) {
		return fmt.Sprintf("provision_state %q", an.ProvisionState)
	}
	return ""
}
