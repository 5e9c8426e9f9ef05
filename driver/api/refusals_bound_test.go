package api

import (
	"bytes"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRefusalLogBounded: an agent that refuses with ever new idents (each
// an unknown node) cannot grow the log's memory of nodes past
// maxRefusalKeys nor flood the log: past it the new nodes share one line
// per refusalEvery. Every refusal is either a line or counted in one.
func TestRefusalLogBounded(t *testing.T) {
	var buf bytes.Buffer
	l := &refusalLog{log: slog.New(slog.NewTextHandler(&buf, nil))}
	now := time.Unix(1700000000, 0)
	defer func(old func() time.Time) { refusalNow = old }(refusalNow)
	refusalNow = func() time.Time { return now }
	const nodes = maxRefusalKeys + 904
	for i := range 2 * nodes {
		l.refused("heartbeat", fmt.Sprintf("ghost-%d", i%nodes), 404, "node could not be found", "127.0.0.1:1")
	}
	if len(l.seen) > maxRefusalKeys+1 {
		t.Errorf("%d nodes remembered, want at most %d", len(l.seen), maxRefusalKeys+1)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != maxRefusalKeys+1 || !strings.Contains(lines[len(lines)-1], `suppressed_of="other nodes"`) {
		t.Errorf("%d lines for %d refusals of %d nodes, want %d, the last one for the other nodes: %s", len(lines), 2*nodes, nodes,
			maxRefusalKeys+1, lines[len(lines)-1])
	}
	now = now.Add(refusalEvery)
	l.refused("heartbeat", "ghost-new", 404, "node could not be found", "127.0.0.1:1")
	if len(l.seen) != 1 {
		t.Errorf("%d nodes remembered after the old ones' lines aged, want 1 (the new one)", len(l.seen))
	}
	// Each line stands for itself (a refusal logged) and its suppressed.
	suppressed := regexp.MustCompile(` suppressed=(\d+)`)
	total := 0
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if !strings.Contains(line, "level=WARN") {
			t.Fatalf("not a warning: %s", line)
		}
		if strings.Contains(line, `msg="heartbeat refused"`) {
			total++
		}
		if m := suppressed.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			total += n
		}
	}
	if total != 2*nodes+1 {
		t.Errorf("the log accounts for %d refusals, want %d", total, 2*nodes+1)
	}
}
