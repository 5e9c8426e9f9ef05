package scenarios

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `history_complete: true`: the node's history has an event for every
// provision state it went through: each transition starts where the one
// before ended, and the last ends in the node's state. What a crash or a
// takeover must not lose.
type expectHistoryComplete bool

func init() {
	registerExpectation("history_complete", func() expectation { return new(expectHistoryComplete) })
}

func (e *expectHistoryComplete) unset() bool { return !bool(*e) }

func (e *expectHistoryComplete) validate(*validator, string, *Lab) {}

func (e *expectHistoryComplete) name() string { return "history has an event for every state" }

func (e *expectHistoryComplete) check(ctx context.Context, r *runner, n *lab.Node, an ironic.Node) string {
	evs, err := r.api.Events(ctx, r.ident(n))
	if err != nil {
		return "read the history: " + err.Error()
	}
	return historyGap(evs, an.ProvisionState)
}

// historyGap says where the provision transitions in evs leave a state
// out, or "" when they form one chain ending in state.
func historyGap(evs []json.RawMessage, state string) string {
	last, lastEvent := "", ""
	for _, raw := range evs {
		var ev struct {
			Kind      string `json:"kind"`
			Event     string `json:"event"`
			FromState string `json:"from_state"`
			ToState   string `json:"to_state"`
		}
		if json.Unmarshal(raw, &ev) != nil || ev.Kind != "provision" || ev.ToState == "" {
			continue
		}
		if last != "" && ev.FromState != "" && ev.FromState != last {
			return fmt.Sprintf("event %q goes %s -> %s, but the event before (%q) ended in %s: no event for the change", ev.Event, ev.FromState, ev.ToState, lastEvent, last)
		}
		last, lastEvent = ev.ToState, ev.Event
	}
	if last != state {
		return fmt.Sprintf("the node is %s, but its last provision event (%q) ended in %q", state, lastEvent, last)
	}
	return ""
}
