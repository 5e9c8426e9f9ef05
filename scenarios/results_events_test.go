package scenarios

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/scenarios/labtest"
)

// events.jsonl holds every enrolled node's history in time order, each
// event tagged with its node's name, the injected faults among them; the
// results take each node's deploy timing and the conductor's image bytes
// from the same events. A node whose history cannot be read, or that was
// never enrolled, adds nothing. A fetch slower than progressEvery says
// how far it got.
func TestWriteEventsTagsSortsAndReports(t *testing.T) {
	histories := map[string]string{
		"uuid-a": `[{"event":"deploy","from_state":"available","to_state":"deploying","time":"2026-01-01T00:00:01Z","kind":"provision"},
			{"event":"image streamed","detail":{"conductor_image_bytes":4096},"time":"2026-01-01T00:00:03Z","kind":"pxe"},
			{"event":"done","from_state":"deploying","to_state":"active","time":"2026-01-01T00:00:05.5Z","kind":"provision"}]`,
		"uuid-b": `[{"event":"deploy","from_state":"available","to_state":"deploying","time":"2026-01-01T00:00:02Z","kind":"provision"},
			{"event":"fast track","time":"2026-01-01T00:00:02.5Z","kind":"provision"},
			{"event":"done","from_state":"deploying","to_state":"active","time":"2026-01-01T00:00:04Z","kind":"provision"},
			{"node":"stale","event":"odd","created_at":"2026-01-01T00:00:00Z"},
			{}]`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(150 * time.Millisecond)
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/nodes/"), "/events")
		h, ok := histories[id]
		if !ok {
			http.Error(w, `{"error_message":"no such node"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"events":` + h + `}`))
	}))
	defer srv.Close()
	old := progressEvery
	progressEvery = 10 * time.Millisecond
	defer func() { progressEvery = old }()

	out := new(labtest.SyncBuffer)
	r := &runner{api: ironic.Dial(srv.URL, "1.78", nil), out: out,
		uuids: map[string]string{"a": "uuid-a", "b": "uuid-b", "gone": "uuid-gone"}, result: &Result{}}
	r.result.Nodes = []NodeResult{{Name: "a", Driver: "pxe_ipmitool"}, {Name: "b", Driver: "fake_agent"}, {Name: "gone", Driver: "fake_agent"}, {Name: "never"}}
	r.faults.evs = []map[string]any{{"node": "a", "time": "2026-01-01T00:00:04.5Z", "kind": "fault", "event": "fault agent"}}
	path := filepath.Join(t.TempDir(), "events.jsonl")
	evs, err := r.writeEvents(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The report takes the events from memory: the same as reading the
	// file back, which a later report of the results folder does.
	fromFile, err := readEvents(path)
	if err != nil || len(fromFile) != 8 {
		t.Fatalf("readEvents: %d events, %v; want the 8 with a time", len(fromFile), err)
	}
	if d := cmp.Diff(fromFile, evs); d != "" {
		t.Errorf("the events writeEvents returns differ from events.jsonl read back, -file +returned:\n%s", d)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		ev, _ := m["event"].(string)
		got = append(got, m["node"].(string)+" "+ev)
	}
	// {} has no time: it sorts first, as an event without one always did.
	want := []string{"b ", "b odd", "a deploy", "b deploy", "b fast track", "a image streamed", "b done", "a fault agent", "a done"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("events.jsonl (node event, in order), -want +got:\n%s", d)
	}
	if !strings.Contains(string(raw), `"detail":{"conductor_image_bytes":4096}`) {
		t.Errorf("an event's detail did not come through as the driver wrote it:\n%s", raw)
	}
	a, b := r.result.Nodes[0], r.result.Nodes[1]
	if a.DeploySeconds != 4.5 || a.FastTrack || b.DeploySeconds != 2 || !b.FastTrack {
		t.Errorf("deploy timing: a %.1fs fast %v, b %.1fs fast %v; want a 4.5s cold, b 2.0s fast", a.DeploySeconds, a.FastTrack, b.DeploySeconds, b.FastTrack)
	}
	if d := cmp.Diff(map[string]int64{"pxe_ipmitool": 4096, "fake_agent": 0}, r.result.ConductorImageBytes); d != "" {
		t.Errorf("conductor image bytes, -want +got:\n%s", d)
	}
	if r.result.FastTrack == nil || r.result.FastTrack.WarmNodes != 1 || r.result.FastTrack.ColdNodes != 1 {
		t.Errorf("fast track report %+v, want one warm node and one cold", r.result.FastTrack)
	}
	printed := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if last := printed[len(printed)-1]; len(printed) < 2 || !strings.HasPrefix(last, "   results: events of 4/4 nodes  ") {
		t.Errorf("progress of a slow fetch:\n%s\nwant lines as it goes, the last of 4/4 nodes", out.String())
	}
}

// withNode puts the node's name first in an event object; an event with a
// "node" of its own has it replaced.
func TestWithNode(t *testing.T) {
	for _, tc := range []struct{ ev, want string }{
		{`{"event":"x","node_uuid":"u"}`, `{"node":"n-1","event":"x","node_uuid":"u"}`},
		{` { "event" : "x" } `, `{"node":"n-1","event" : "x" }`},
		{`{}`, `{"node":"n-1"}`},
		{`{"event":"x","node":"old"}`, `{"event":"x","node":"n-1"}`},
	} {
		got := string(withNode(json.RawMessage(tc.ev), []byte(`"n-1"`)))
		if got != tc.want {
			t.Errorf("withNode(%s) = %s, want %s", tc.ev, got, tc.want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("withNode(%s) = %s: not JSON", tc.ev, got)
		}
	}
}

// Events sort by their parsed time, whichever way it is written: the
// built-in driver's RFC 3339 and a real Ironic's zoneless created_at (UTC).
func TestEventTimeReadsBothFormats(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want time.Time
	}{
		{"2026-01-01T00:00:02Z", time.Date(2026, 1, 1, 0, 0, 2, 0, time.UTC)},
		{"2026-01-01T00:00:02.5Z", time.Date(2026, 1, 1, 0, 0, 2, 5e8, time.UTC)},
		{"2026-01-01T00:00:01.250000", time.Date(2026, 1, 1, 0, 0, 1, 25e7, time.UTC)},
		{"2026-01-01T00:00:03", time.Date(2026, 1, 1, 0, 0, 3, 0, time.UTC)},
		{"", time.Time{}},
		{"yesterday", time.Time{}},
	} {
		if got := tag(nil, &eventLine{Time: tc.s}).at; !got.Equal(tc.want) {
			t.Errorf("the sort time of %q = %s, want %s", tc.s, got, tc.want)
		}
	}
}

// readEvents reads every event, with or without a last newline, a real
// Ironic's zoneless created_at as UTC.
func TestReadEventsReadsEveryLine(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"newline":    "{\"node\":\"a\",\"time\":\"2026-01-01T00:00:01Z\",\"kind\":\"provision\"}\n{\"node\":\"b\",\"created_at\":\"2026-01-01T00:00:02.5\",\"event_type\":\"provision\"}\n",
		"no newline": "{\"node\":\"a\",\"time\":\"2026-01-01T00:00:01Z\",\"kind\":\"provision\"}\n{\"node\":\"b\",\"created_at\":\"2026-01-01T00:00:02.5\",\"event_type\":\"provision\"}",
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		evs, err := readEvents(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 2 || evs[0].Node != "a" || evs[1].Node != "b" || evs[1].Kind != "provision" ||
			!evs[1].Time.Equal(time.Date(2026, 1, 1, 0, 0, 2, 5e8, time.UTC)) {
			t.Errorf("%s: %+v, want a then b (Ironic's created_at read as UTC)", name, evs)
		}
	}
}

// A history with a null or a non-object among its events (a malformed
// answer) loses those and keeps the rest; nothing panics.
func TestNodeEventsSkipsWhatIsNotAnEvent(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"events":[null,"x",7,[],{"event":"deploy","time":"2026-01-01T00:00:01Z"}]}`))
	}))
	defer srv.Close()
	r := &runner{api: ironic.Dial(srv.URL, "1.78", nil), uuids: map[string]string{"a": "uuid-a"}}
	h := r.nodeEvents(context.Background(), "a")
	if !h.read || len(h.lines) != 1 || string(h.lines[0].line) != `{"node":"a","event":"deploy","time":"2026-01-01T00:00:01Z"}` {
		t.Errorf("history of null, \"x\", 7, [] and one event: %+v, want the one event, tagged", h)
	}
}

// A stage slower than progressEvery (stopping a 10,000-node lab takes
// seconds) says what it is doing while it goes and when it is done; a
// quick one prints nothing.
func TestTimedSaysWhatTakesLong(t *testing.T) {
	old := progressEvery
	progressEvery = 10 * time.Millisecond
	defer func() { progressEvery = old }()
	out := new(labtest.SyncBuffer)
	r := &runner{out: out}
	if err := r.timed("stopping the lab (3 nodes)", func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if out.String() != "" {
		t.Errorf("a quick stage printed %q", out.String())
	}
	want := errors.New("driver did not stop")
	err := r.timed("stopping the lab (3 nodes)", func() error { time.Sleep(100 * time.Millisecond); return want })
	if err != want {
		t.Errorf("timed returned %v, want the stage's error", err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("a 100 ms stage printed %q, want a line every 10 ms and a last one", out.String())
	}
	for _, l := range lines {
		if !regexp.MustCompile(`^   stopping the lab \(3 nodes\)  \d+\.\ds$`).MatchString(l) {
			t.Errorf("progress line %q", l)
		}
	}
	var r2 runner
	r2.opts.DriverURL = "http://127.0.0.1:6385"
	if got := r2.cleanupWhat(); got != "cleaning up" {
		t.Errorf("cleanupWhat of a runner with nothing to stop = %q", got)
	}
}

func TestCheckFirstFailures(t *testing.T) {
	c := &Check{Failures: []string{"a", "b", "c", "d", "e"}}
	if shown, more := c.FirstFailures(3); strings.Join(shown, ",") != "a,b,c" || more != 2 {
		t.Errorf("FirstFailures(3) of 5 = %v, %d more", shown, more)
	}
	if shown, more := c.FirstFailures(5); len(shown) != 5 || more != 0 {
		t.Errorf("FirstFailures(5) of 5 = %v, %d more", shown, more)
	}
	if shown, more := (&Check{}).FirstFailures(3); len(shown) != 0 || more != 0 {
		t.Errorf("FirstFailures of none = %v, %d more", shown, more)
	}
}
