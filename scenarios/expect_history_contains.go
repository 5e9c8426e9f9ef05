package scenarios

import (
	"context"
	"fmt"
	"strings"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `history_contains: text`: some event of the node's history (its JSON:
// name, message, detail such as an agent command's result) contains the text.
type expectHistoryContains string

func init() {
	registerExpectation("history_contains", func() expectation { return new(expectHistoryContains) })
}

func (e *expectHistoryContains) unset() bool { return *e == "" }

func (e *expectHistoryContains) validate(*validator, string, *Lab) {}

func (e *expectHistoryContains) name() string {
	return fmt.Sprintf("history contains %q", string(*e))
}

func (e *expectHistoryContains) check(ctx context.Context, r *runner, n *lab.Node, _ ironic.Node) string {
	evs, err := r.api.Events(ctx, r.ident(n))
	if err != nil {
		return "events: " + err.Error()
	}
	for _, ev := range evs {
		if strings.Contains(string(ev), string(*e)) {
			return ""
		}
	}
	return fmt.Sprintf("none of the node's %d events contains %q", len(evs), string(*e))
}
