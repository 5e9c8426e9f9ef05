package scenarios

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ironlab/ironlab/simulator/lab"
)

// waitEvent waits until every selected node has recorded the event, up to
// the step's timeout; the outcome is a check.
func (r *runner) waitEvent(ctx context.Context, label string, i int, st *Step) {
	w := st.Wait
	nodes := r.selected(w.Nodes)
	start := time.Now()
	r.printf("%s wait for %d nodes to record %q (timeout %s)\n", label, len(nodes), w.Event, w.timeout)
	check := Check{Name: fmt.Sprintf("step %d: wait for event %s", i+1, w.Event), Step: i + 1, Line: st.line}
	seen := map[string]bool{}
	last := -1
	poll(ctx, 250*time.Millisecond, w.timeout, func(ctx context.Context) bool {
		for _, n := range nodes {
			if !seen[n.Name] && r.hasEvent(ctx, n, w.Event) {
				seen[n.Name] = true
			}
		}
		if len(seen) != last {
			r.printf("%s   %d/%d recorded %q  %.1fs\n", label, len(seen), len(nodes), w.Event, time.Since(start).Seconds())
			last = len(seen)
		}
		return len(seen) == len(nodes)
	})
	for _, n := range nodes {
		if !seen[n.Name] {
			check.Failures = append(check.Failures, fmt.Sprintf("%s: no %q event within %s", n.Name, w.Event, w.timeout))
		}
	}
	check.Passed = len(check.Failures) == 0
	check.DurationS = time.Since(start).Seconds()
	r.report(label, &check)
}

// hasEvent says whether the node's history holds an event of that name.
func (r *runner) hasEvent(ctx context.Context, n *lab.Node, name string) bool {
	evs, err := r.api.Events(ctx, r.ident(n))
	if err != nil {
		return false
	}
	for _, ev := range evs {
		var m struct {
			Event string `json:"event"`
		}
		if json.Unmarshal(ev, &m) == nil && m.Event == name {
			return true
		}
	}
	return false
}
