package scenarios

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ironlab/ironlab/scenarios/report"
)

// eventFields are the parts of a driver event that the results and the
// report read.
type eventFields struct {
	eventLine
	Detail json.RawMessage `json:"detail"`
}

// taggedEvent is one line of events.jsonl, the time it sorts by, and the
// event as the report shows it (ok false: its time does not parse, and
// the report leaves it out).
type taggedEvent struct {
	at   time.Time
	line []byte
	ev   report.Event
	ok   bool
}

// tag is the taggedEvent of line, whose fields are m. It sorts by its time
// parsed (parseEventTime), as the text alone misorders (RFC3339Nano drops
// trailing zeros: "05Z" sorts after "05.5Z"); none, or one unparsed, is
// the zero time and sorts first.
func tag(line []byte, m *eventLine) taggedEvent {
	ev, ok := m.reportEvent()
	return taggedEvent{at: ev.Time, line: line, ev: ev, ok: ok}
}

// resultWorkers is how many nodes' events the results fetch at once.
const resultWorkers = 8

// progressEvery is how often a results stage that is still going says so
// (a variable for the tests).
var progressEvery = 2 * time.Second

// writeEvents writes every node's events, one JSON object a line, each
// tagged with the node's name, in time order, and fills in each node's
// deploy timing from them. It returns the events as the report shows
// them, in the same order (readEvents of the file). The nodes' histories
// are fetched resultWorkers at a time; a stage longer than progressEvery
// prints how far it got.
func (r *runner) writeEvents(ctx context.Context, path string) ([]report.Event, error) {
	nodes := r.result.Nodes
	got := make([]nodeHistory, len(nodes))
	var next, done atomic.Int64
	start := time.Now()
	stop := r.slowProgress(func() string {
		return fmt.Sprintf("   results: events of %d/%d nodes  %.1fs\n", done.Load(), len(nodes), time.Since(start).Seconds())
	})
	var wg sync.WaitGroup
	for range min(resultWorkers, len(nodes)) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(nodes); i = int(next.Add(1)) - 1 {
				got[i] = r.nodeEvents(ctx, nodes[i].Name)
				done.Add(1)
			}
		})
	}
	wg.Wait()
	total := 0
	for _, h := range got {
		total += len(h.lines)
	}
	all := make([]taggedEvent, 0, total)
	for i, h := range got {
		if !h.read {
			continue
		}
		nr := &r.result.Nodes[i]
		nr.DeploySeconds, nr.FastTrack = deployTiming(h.fields)
		r.countConductorBytes(nr.Driver, h.fields)
		all = append(all, h.lines...)
	}
	for _, m := range r.faults.events() {
		b, _ := json.Marshal(m)
		var f eventLine
		_ = json.Unmarshal(b, &f)
		all = append(all, tag(b, &f))
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].at.Before(all[j].at) })
	evs := make([]report.Event, 0, len(all))
	for _, l := range all {
		if l.ok {
			evs = append(evs, l.ev)
		}
	}
	err := writeLines(path, all)
	stop()
	r.result.FastTrack = fastTrackReport(r.result.Nodes)
	return evs, err
}

// nodeHistory is one node's history as events.jsonl lines and the fields
// the results read; read is false for a node the run did not enroll, or
// whose history could not be read.
type nodeHistory struct {
	lines  []taggedEvent
	fields []eventFields
	read   bool
}

func (r *runner) nodeEvents(ctx context.Context, name string) nodeHistory {
	uuid, ok := r.enrolled(name)
	if !ok {
		return nodeHistory{}
	}
	evs, err := r.api.Events(ctx, uuid)
	if err != nil {
		return nodeHistory{}
	}
	quoted, _ := json.Marshal(name)
	h := nodeHistory{lines: make([]taggedEvent, 0, len(evs)), fields: make([]eventFields, 0, len(evs)), read: true}
	for _, ev := range evs {
		// An event is an object: a null, which decodes into no fields
		// without an error, is not one.
		var f eventFields
		if obj := bytes.TrimSpace(ev); len(obj) == 0 || obj[0] != '{' || json.Unmarshal(obj, &f) != nil {
			continue
		}
		f.Node = name // the line's "node", as withNode writes it
		h.fields = append(h.fields, f)
		h.lines = append(h.lines, tag(withNode(ev, quoted), &f.eventLine))
	}
	return h
}

// withNode is the event object ev (nodeEvents passes objects only) with
// "node" (quoted: the name as JSON) first. An event that has a "node" of
// its own gets it replaced, as a decoded and re-encoded one would.
func withNode(ev json.RawMessage, quoted []byte) []byte {
	ev = bytes.TrimSpace(ev)
	if bytes.Contains(ev, []byte(`"node"`)) {
		var m map[string]json.RawMessage
		if json.Unmarshal(ev, &m) != nil || m == nil {
			return ev
		}
		m["node"] = quoted
		b, _ := json.Marshal(m)
		return b
	}
	rest := bytes.TrimSpace(ev[1:])
	line := append(make([]byte, 0, len(ev)+len(quoted)+9), `{"node":`...)
	line = append(line, quoted...)
	if rest[0] != '}' {
		line = append(line, ',')
	}
	return append(line, rest...)
}

func writeLines(path string, lines []taggedEvent) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for _, l := range lines {
		w.Write(l.line)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// slowProgress prints line() every progressEvery until stop is called: a
// stage done sooner prints nothing, one that took longer ends with a last
// line.
func (r *runner) slowProgress(line func() string) (stop func()) {
	quit := make(chan struct{})
	exited := make(chan bool)
	go func() {
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		printed := false
		for {
			select {
			case <-quit:
				exited <- printed
				return
			case <-t.C:
				r.printf("%s", line())
				printed = true
			}
		}
	}()
	return func() {
		close(quit)
		if <-exited {
			r.printf("%s", line())
		}
	}
}

// deployTiming is the time from the node's last deploy request (available
// -> deploying) to active, and whether that deploy used the running agent.
func deployTiming(evs []eventFields) (float64, bool) {
	var start time.Time
	fast := false
	secs := 0.0
	for _, ev := range evs {
		t, err := time.Parse(time.RFC3339Nano, ev.Time)
		if err != nil {
			continue
		}
		switch {
		case ev.Event == "deploy" && ev.To == "deploying":
			start, fast = t, false
		case ev.Event == "fast track" && !start.IsZero():
			fast = true
		case ev.To == "active" && ev.From != "active" && !start.IsZero():
			secs = t.Sub(start).Seconds()
			start = time.Time{}
		}
	}
	return secs, fast
}
