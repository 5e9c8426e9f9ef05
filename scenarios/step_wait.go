package scenarios

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ironlab/ironlab/scenarios/ironic"
)

// failedStates end a wait early: the node will not move on by itself.
var failedStates = map[string]bool{"deploy failed": true, "clean failed": true, "enroll": true}

// waitState waits until every selected node has settled in the wanted
// provision state (or in a failed state it will not leave), up to the
// step's timeout; the outcome is a check.
func (r *runner) waitState(ctx context.Context, label string, i int, st *Step) {
	w := st.Wait
	nodes := r.selected(w.Nodes)
	start := time.Now()
	r.printf("%s wait for %d nodes to reach %q (timeout %s)\n", label, len(nodes), w.State, w.timeout)
	check := Check{Name: fmt.Sprintf("step %d: wait for %s", i+1, w.State), Step: i + 1, Line: st.line}
	if w.AllowFailed {
		check.Name += " or a failed state"
	}
	lastLine := ""
	var byName map[string]ironic.Node
	poll(ctx, 200*time.Millisecond, w.timeout, func(ctx context.Context) bool {
		if all, err := r.api.NodeStates(ctx); err == nil {
			byName = map[string]ironic.Node{}
			for _, n := range all {
				byName[n.Name] = n
			}
		}
		reached, stuck := 0, 0
		counts := map[string]int{}
		for _, n := range nodes {
			an, ok := byName[n.Name]
			if !ok {
				continue
			}
			counts[an.ProvisionState]++
			if an.ProvisionState == w.State && an.Settled() {
				reached++
			} else if failedStates[an.ProvisionState] && an.Settled() {
				stuck++
			}
		}
		line := fmt.Sprintf("%s   %d/%d %s  (%s)", label, reached, len(nodes), w.State, stateCounts(counts))
		if line != lastLine {
			r.printf("%s  %.1fs\n", line, time.Since(start).Seconds())
			lastLine = line
		}
		return reached+stuck == len(nodes)
	})
	for _, n := range nodes {
		an := byName[n.Name]
		if an.ProvisionState != w.State && !(w.AllowFailed && failedStates[an.ProvisionState]) {
			msg := fmt.Sprintf("%s: in %q, not %q", n.Name, an.ProvisionState, w.State)
			if e := an.Error(); e != "" {
				msg += ": last_error: " + e
			}
			check.Failures = append(check.Failures, msg)
		}
	}
	check.Passed = len(check.Failures) == 0
	check.DurationS = time.Since(start).Seconds()
	r.report(label, &check)
}

func stateCounts(c map[string]int) string {
	var parts []string
	for s, n := range c {
		parts = append(parts, fmt.Sprintf("%s: %d", s, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}
