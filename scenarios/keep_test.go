package scenarios

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

// A VM test's results and state live in t.TempDir, which goes with the
// test. keepOnFailure keeps what a failure is read by.

// keepOnFailure registers a clean-up that, when t has failed, copies the
// scenario's results (result.json, events.jsonl, console/, lab.log) and the
// lab's VM console logs to a folder under $TMPDIR that outlives the test,
// and logs where it is, each node's last events and each console's end.
// Call it after the t.TempDir calls of results and state: clean-ups run
// last-registered first, so it runs before those folders are removed.
func keepOnFailure(t testing.TB, scenario, results, state string) {
	t.Helper()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		name := regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(t.Name(), "_")
		dst, err := os.MkdirTemp("", "ironlab-failed-"+name+"-")
		if err != nil {
			t.Logf("could not keep the failed run: %v", err)
			return
		}
		summary, err := keepRun(dst, scenario, results, state)
		if err != nil {
			t.Logf("keeping the failed run in %s: %v", dst, err)
		}
		t.Logf("the failed run is kept in %s\n%s", dst, summary)
	})
}

// keepRun copies <results>/<scenario> and <state>/<scenario>/vms/*.log
// (the serial consoles as libvirt writes them, and the per-MAC boot
// entries' logs if any) into dst, and summarises each node's last events
// and console end.
func keepRun(dst, scenario, results, state string) (string, error) {
	var errs []string
	if err := copyTree(filepath.Join(results, scenario), filepath.Join(dst, "results")); err != nil {
		errs = append(errs, err.Error())
	}
	vms, _ := filepath.Glob(filepath.Join(state, scenario, "vms", "*.log"))
	for _, src := range vms {
		if err := copyFile(src, filepath.Join(dst, "vms", filepath.Base(src))); err != nil {
			errs = append(errs, err.Error())
		}
	}
	var b strings.Builder
	evs, _ := lastEvents(filepath.Join(dst, "results", "events.jsonl"), 15)
	consoles, _ := filepath.Glob(filepath.Join(dst, "results", "console", "*.log"))
	if len(consoles) == 0 {
		consoles, _ = filepath.Glob(filepath.Join(dst, "vms", "*.console.log"))
	}
	for _, c := range consoles {
		node := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(c), ".log"), ".console")
		fmt.Fprintf(&b, "=== %s: last events (driver)\n", node)
		for _, l := range evs[node] {
			fmt.Fprintf(&b, "  %s\n", l)
		}
		fmt.Fprintf(&b, "=== %s: console (%s), last 40 lines\n", node, c)
		raw, err := os.ReadFile(c)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		for _, l := range TailLines(string(raw), 40) {
			fmt.Fprintf(&b, "  | %s\n", l)
		}
	}
	if len(errs) > 0 {
		return b.String(), fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return b.String(), nil
}

// lastEvents reads events.jsonl into one line per event, the last n of
// each node.
func lastEvents(path string, n int) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e struct {
			Node, Time, Kind, Event, Message string
			From                             string `json:"from_state"`
			To                               string `json:"to_state"`
		}
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		l := fmt.Sprintf("%s %s %q %s->%s %s", e.Time, e.Kind, e.Event, e.From, e.To, clip(e.Message, 160))
		out[e.Node] = append(out[e.Node], l)
		if len(out[e.Node]) > n {
			out[e.Node] = out[e.Node][1:]
		}
	}
	return out, sc.Err()
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		return copyFile(p, filepath.Join(dst, rel))
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// TestFailedRunIsReadable: a run that fails on purpose (a wait for a state
// the nodes never reach) prints the failed node's state and the end of its
// console, and keepRun keeps the results and sums up the node's events and
// console, as a failed VM test does in its log.
func TestFailedRunIsReadable(t *testing.T) {
	s, err := Parse("fail.yaml", []byte(`name: fail-on-purpose
seed: 3
lab:
  heartbeat_timeout: 4s
  images: [{id: a, size: 1MiB}]
  groups: [{name: g, count: 2, driver: fake_agent, disk_size: 8MiB}]
steps:
  - enroll: {}
  - manage: {}
  - wait: {state: active, nodes: [g-1], timeout: 1s}
`))
	if err != nil {
		t.Fatal(err)
	}
	results, state := t.TempDir(), t.TempDir()
	var out strings.Builder
	res, err := Run(context.Background(), s, Options{StartDriver: builtinDriver, FailOnMissingTools: labtest.CI(), Out: &out,
		ImageCache: t.TempDir(), ResultsDir: results, StateDir: state, KeepState: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Passed {
		t.Fatalf("a wait for a state never reached passed:\n%s", out.String())
	}
	o := out.String()
	for _, want := range []string{
		"the failed nodes' consoles, last 25 lines each (all in " + filepath.Join(results, s.Name, "console") + "/",
		"--- g-1: manageable, power",
		"  | ",
	} {
		if !strings.Contains(o, want) {
			t.Errorf("the run's output lacks %q:\n%s", want, o)
		}
	}
	// The error names g-1 only: g-0's console is not printed.
	if strings.Contains(o, "--- g-0") {
		t.Errorf("the output prints a node the failure does not name:\n%s", o)
	}

	dst := t.TempDir()
	summary, err := keepRun(dst, s.Name, results, state)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"result.json", "events.jsonl", "console/g-0.log", "console/g-1.log"} {
		if _, err := os.Stat(filepath.Join(dst, "results", f)); err != nil {
			t.Errorf("not kept: %v", err)
		}
	}
	for _, want := range []string{"=== g-1: last events (driver)", `provision "manage" enroll->verifying`, "=== g-1: console ("} {
		if !strings.Contains(summary, want) {
			t.Errorf("the summary lacks %q:\n%s", want, summary)
		}
	}
}

func TestTailLines(t *testing.T) {
	log := "SeaBIOS\x1b[2J\x1b[1;1H banner\r\n\r\nline 2\x00\nline 3\n\n"
	got := TailLines(log, 2)
	if len(got) != 2 || got[0] != "line 2" || got[1] != "line 3" {
		t.Errorf("TailLines = %q", got)
	}
	if got := TailLines(log, 10); got[0] != "SeaBIOS banner" {
		t.Errorf("TailLines keeps escapes or carriage returns: %q", got)
	}
}
