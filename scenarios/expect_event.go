package scenarios

import (
	"context"
	"fmt"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `event: name`: the node's history holds an event of this name (e.g.
// "watchdog reboot").
type expectEvent string

func init() { registerExpectation("event", func() expectation { return new(expectEvent) }) }

func (e *expectEvent) unset() bool { return *e == "" }

func (e *expectEvent) validate(*validator, string, *Lab) {}

func (e *expectEvent) name() string { return fmt.Sprintf("event %q in the history", string(*e)) }

func (e *expectEvent) check(ctx context.Context, r *runner, n *lab.Node, _ ironic.Node) string {
	if !r.hasEvent(ctx, n, string(*e)) {
		return fmt.Sprintf("no event %q in the node's history", string(*e))
	}
	return ""
}
