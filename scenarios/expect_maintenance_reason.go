package scenarios

import (
	"context"
	"fmt"
	"strings"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `maintenance_reason: text`: the node's maintenance_reason contains the text.
type expectMaintenanceReason string

func init() {
	registerExpectation("maintenance_reason", func() expectation { return new(expectMaintenanceReason) })
}

func (e *expectMaintenanceReason) unset() bool { return *e == "" }

func (e *expectMaintenanceReason) validate(*validator, string, *Lab) {}

func (e *expectMaintenanceReason) name() string {
	return fmt.Sprintf("maintenance_reason contains %q", string(*e))
}

func (e *expectMaintenanceReason) check(_ context.Context, _ *runner, _ *lab.Node, an ironic.Node) string {
	if !strings.Contains(an.Reason(), string(*e)) {
		return fmt.Sprintf("maintenance_reason %q", an.Reason())
	}
	return ""
}
