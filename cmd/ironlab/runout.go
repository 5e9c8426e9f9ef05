package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ironlab/ironlab/scenarios"
)

// jsonLines is `ironlab run --json`: one JSON object a line on stdout.
// Each object has "type": progress (a progress line of the runner), check
// (an expectation's outcome), node_event (a line of events.jsonl), scenario
// (a scenario's result) and run (the last line).
type jsonLines struct {
	mu  sync.Mutex
	w   io.Writer
	enc *json.Encoder
}

func newJSONLines(w io.Writer) *jsonLines { return &jsonLines{w: w, enc: json.NewEncoder(w)} }

func (j *jsonLines) emit(v map[string]any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := v["time"]; !ok {
		v["time"] = time.Now().UTC().Format(time.RFC3339Nano)
	}
	j.enc.Encode(v)
}

// progress is an io.Writer for the runner's progress lines that turns
// each complete line into a progress object of scenario.
func (j *jsonLines) progress(scenario string) io.Writer {
	return &lineWriter{line: func(s string) {
		j.emit(map[string]any{"type": "progress", "scenario": scenario, "text": s})
	}}
}

// result writes the scenario's checks, the node events the run wrote and
// the scenario's outcome.
func (j *jsonLines) result(dir string, res *scenarios.Result) {
	for _, c := range res.Checks {
		j.emit(map[string]any{"type": "check", "scenario": res.Scenario, "name": c.Name, "step": c.Step, "line": c.Line,
			"passed": c.Passed, "failures": c.Failures, "duration_s": c.DurationS})
	}
	if f, err := os.Open(filepath.Join(dir, res.Scenario, "events.jsonl")); err == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			if t, ok := m["type"]; ok { // keep a field of the event's own that "type" would hide
				m["event_type"] = t
			}
			m["type"], m["scenario"] = "node_event", res.Scenario
			j.emit(m)
		}
		f.Close()
	}
	passed := 0
	for _, c := range res.Checks {
		if c.Passed {
			passed++
		}
	}
	v := map[string]any{"type": "scenario", "scenario": res.Scenario, "file": res.File, "passed": res.Passed,
		"checks": len(res.Checks), "checks_passed": passed, "duration_s": res.DurationS, "nodes": len(res.Nodes),
		"report": filepath.Join(dir, res.Scenario, "report.html")}
	if res.Error != "" {
		v["error"] = res.Error
	}
	j.emit(v)
}

// lineWriter calls line for each complete line written to it.
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	line func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if s := strings.TrimRight(string(w.buf[:i]), "\r"); strings.TrimSpace(s) != "" {
			w.line(s)
		}
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// printQuiet is `ironlab run --quiet`'s output for a scenario: its verdict
// and, when it failed, the failed checks with their first failures.
func printQuiet(w io.Writer, res *scenarios.Result) {
	passed := 0
	for _, c := range res.Checks {
		if c.Passed {
			passed++
		}
	}
	verdict := "PASSED"
	if !res.Passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "%s %s: %d/%d checks passed in %.1fs\n", res.Scenario, verdict, passed, len(res.Checks), res.DurationS)
	if res.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", res.Error)
	}
	for _, c := range res.Checks {
		if c.Passed {
			continue
		}
		fmt.Fprintf(w, "  FAIL %s (line %d)\n", c.Name, c.Line)
		shown, more := c.FirstFailures(3)
		for _, f := range shown {
			fmt.Fprintf(w, "       %s\n", f)
		}
		if more > 0 {
			fmt.Fprintf(w, "       ... and %d more\n", more)
		}
	}
}
