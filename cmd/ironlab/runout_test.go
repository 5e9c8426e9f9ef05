package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

const twoNodes = `name: two
lab:
  heartbeat_timeout: 4s
  automated_clean: false
  images: [{id: a, size: 1MiB}]
  groups: [{name: g, count: 2, driver: fake_agent, disk_size: 4MiB}]
steps:
  - enroll: {}
  - manage: {}
  - provide: {}
  - deploy: {image: a}
  - wait: {state: active, timeout: 60s}
  - expect: {nodes: [g-1], state: available}
`

// --json prints nothing but JSON objects, one a line, that tell CI the
// progress, each check, the node events and the outcome; --quiet prints
// only the verdict and what failed. Both runs write report.html.
func TestRunJSONAndQuiet(t *testing.T) {
	dir := t.TempDir()
	sc := filepath.Join(dir, "two.yaml")
	os.WriteFile(sc, []byte(twoNodes), 0o644)

	out, code := ironlab(t, dir, "run", "--json", "--results", filepath.Join(dir, "json"), sc)
	if code != 1 {
		t.Errorf("exit %d, want 1 (a check fails)", code)
	}
	types := map[string]int{}
	var run, failed map[string]any
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %d is not JSON: %q", i+1, line)
		}
		typ, _ := m["type"].(string)
		types[typ]++
		if typ == "run" {
			run = m
		}
		if typ == "check" && m["passed"] == false {
			failed = m
		}
	}
	for _, typ := range []string{"progress", "check", "node_event", "scenario", "run"} {
		if types[typ] == 0 {
			t.Errorf("no %q object in --json output (%v)", typ, types)
		}
	}
	if failed == nil || failed["name"] != "step 6: expect state available" || !strings.Contains(strings.Join(strs(failed["failures"]), " "), "g-1:") {
		t.Errorf("failed check object: %v", failed)
	}
	if run == nil || run["passed"] != false {
		t.Fatalf("run object: %v", run)
	}
	if rep, _ := run["report"].(string); !fileHas(t, rep, "step 6: expect state available") {
		t.Errorf("the run's report %q lacks the failed check", rep)
	}

	out, code = ironlab(t, dir, "run", "--quiet", "--results", filepath.Join(dir, "quiet"), sc)
	if code != 1 || strings.Contains(out, "[1/6]") || !strings.Contains(out, "two FAILED: 1/2 checks passed") ||
		!strings.Contains(out, "FAIL step 6: expect state available") || !strings.Contains(out, "g-1: ") {
		t.Errorf("--quiet: exit %d\n%s", code, out)
	}
	if m := regexp.MustCompile(`open (\S+report\.html)`).FindStringSubmatch(out); m == nil || !fileHas(t, m[1], "two") {
		t.Errorf("--quiet does not say where report.html is:\n%s", out)
	}
}

func strs(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, x := range l {
			s, _ := x.(string)
			out = append(out, s)
		}
	}
	return out
}

func fileHas(t *testing.T, path, s string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), s)
}

// checkDashboard asks the dashboard `ironlab up` printed for its page and
// its event stream, whose first message lists the lab's nodes.
func checkDashboard(t *testing.T, url string) {
	t.Helper()
	checkDashboardNodes(t, url, `"name":"node-1"`)
}

func checkDashboardNodes(t *testing.T, url, node string) {
	t.Helper()
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("up printed dashboard %q, want http://127.0.0.1:<port>/", url)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "<title>ironlab dashboard</title>") {
		t.Errorf("GET %s: %s\n%.300s", url, resp.Status, page)
	}
	resp, err = c.Get(url + "events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var first []string
	for len(first) < 2 && sc.Scan() {
		first = append(first, sc.Text())
	}
	if len(first) < 2 || first[0] != "event: snapshot" || !strings.Contains(first[1], node) {
		t.Errorf("the dashboard's event stream starts %q", first)
	}
}

// `ironlab run --ui` serves the dashboard of the scenario's lab while the
// scenario runs: its event stream lists the scenario's nodes.
func TestRunUI(t *testing.T) {
	dir := t.TempDir()
	sc := filepath.Join(dir, "ui.yaml")
	// The wait for an event that never comes keeps the lab up for a while.
	os.WriteFile(sc, []byte(strings.Replace(twoNodes, "name: two", "name: ui", 1)+
		"  - wait: {event: never happens, timeout: 20s}\n"), 0o644)
	cmd := exec.Command(labtest.Binary(t), "run", "--ui", "--json", "--results", filepath.Join(dir, "res"), sc)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	url := ""
	for url == "" && lines.Scan() {
		var m map[string]any
		if json.Unmarshal(lines.Bytes(), &m) == nil && m["type"] == "dashboard" {
			url, _ = m["url"].(string)
		}
	}
	// Wait for the scenario's lab: the progress line of its wait step.
	for lines.Scan() {
		if strings.Contains(lines.Text(), "never happens") {
			break
		}
	}
	go func() {
		for lines.Scan() {
		}
	}()
	checkDashboardNodes(t, url, `"name":"g-1"`)
}
