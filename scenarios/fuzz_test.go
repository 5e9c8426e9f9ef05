package scenarios

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ironlab/ironlab/simulator/lab/enroll"
)

// FuzzParseAll feeds scenario files to the parser. The seed corpus
// (testdata/fuzz/FuzzParseAll) holds the built-in scenarios, the README's
// example and the error cases of parse_test.go. A bad file must give an
// error that wraps ErrBadScenario and points at a line of the file or a
// field; a good one must satisfy the validator's promises and survive a
// marshal and re-parse unchanged.
func FuzzParseAll(f *testing.F) {
	for _, name := range Builtin() {
		b, err := builtin.ReadFile(name + ".yaml")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		all, err := parseWithin(t, 10*time.Second, data)
		if err != nil {
			checkScenarioError(t, data, err)
			return
		}
		for _, s := range all {
			checkScenarioInvariants(t, s)
		}
		// A parsed scenario written back out must parse to the same thing:
		// the defaults the validator filled in are themselves valid.
		var docs [][]byte
		for _, s := range all {
			b, err := yaml.Marshal(s)
			if err != nil {
				t.Fatalf("marshal parsed scenario %q: %v", s.Name, err)
			}
			docs = append(docs, b)
		}
		again, err := ParseAll("f.yaml", bytes.Join(docs, []byte("---\n")))
		if err != nil {
			t.Fatalf("re-parse of the marshalled scenarios failed: %v\n%s", err, bytes.Join(docs, []byte("---\n")))
		}
		if len(again) != len(all) {
			t.Fatalf("%d scenarios, %d after a round trip", len(all), len(again))
		}
		for i := range all {
			if diff := cmp.Diff(all[i], again[i], cmp.Exporter(func(reflect.Type) bool { return true }), cmp.FilterPath(isStepLine, cmp.Ignore()), cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("scenario %q changed in a round trip (-first +second):\n%s", all[i].Name, diff)
			}
		}
	})
}

// parseWithin fails an input that the parser takes too long over (a file
// a user can write must not wedge "ironlab run").
func parseWithin(t *testing.T, limit time.Duration, data []byte) ([]*Scenario, error) {
	t.Helper()
	type result struct {
		all []*Scenario
		err error
	}
	done := make(chan result, 1)
	go func() {
		all, err := ParseAll("f.yaml", data)
		done <- result{all, err}
	}()
	select {
	case r := <-done:
		return r.all, r.err
	case <-time.After(limit):
		t.Fatalf("ParseAll took over %s on a %d-byte file", limit, len(data))
		return nil, nil
	}
}

// isStepLine: a step's line number depends on the layout, not the content.
func isStepLine(p cmp.Path) bool {
	sf, ok := p.Last().(cmp.StructField)
	return ok && sf.Name() == "line" && p.Index(-2).Type() == reflect.TypeOf(Step{})
}

func checkScenarioError(t *testing.T, data []byte, err error) {
	t.Helper()
	if !errors.Is(err, ErrBadScenario) {
		t.Fatalf("error %v does not wrap ErrBadScenario", err)
	}
	// YAML breaks lines at \n, \r\n and a lone \r.
	lines := bytes.Count(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")), []byte("\n")) + bytes.Count(data, []byte("\r")) - bytes.Count(data, []byte("\r\n")) + 1
	var leaves []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		leaves = j.Unwrap()
	} else {
		leaves = []error{err}
	}
	for _, e := range leaves {
		var se *Error
		if !errors.As(e, &se) {
			t.Fatalf("error %v is not a *scenarios.Error", e)
		}
		if se.File != "f.yaml" || !strings.HasPrefix(se.Error(), "f.yaml") {
			t.Fatalf("error %q does not name the file", se.Error())
		}
		if se.Line < 0 || se.Line > lines {
			t.Fatalf("error %q names line %d of a %d-line file", se.Error(), se.Line, lines)
		}
		if se.Line == 0 && !wholeFileError(se.Msg) {
			t.Fatalf("error %q names neither a line nor a field", se.Error())
		}
		if se.Msg == "" {
			t.Fatalf("error at %s:%d has no message", se.File, se.Line)
		}
	}
}

// wholeFileError: messages that are about the file as a whole, or name the
// field they are about.
func wholeFileError(msg string) bool {
	if msg == "no scenario in the file" || strings.HasPrefix(msg, "want one scenario") {
		return true
	}
	field, _, ok := strings.Cut(msg, ": ")
	return ok && (field == "name" || field == "steps" || strings.HasPrefix(field, "lab") || strings.HasPrefix(field, "steps["))
}

func checkScenarioInvariants(t *testing.T, s *Scenario) {
	t.Helper()
	if !nameRe.MatchString(s.Name) {
		t.Fatalf("accepted scenario name %q", s.Name)
	}
	l := s.Lab
	if l.Backend != "fake" && l.Backend != "libvirt" {
		t.Fatalf("accepted backend %q", l.Backend)
	}
	if l.heartbeatTimeout <= 0 || l.deployCallbackTimeout <= 0 || l.cleanCallbackTimeout <= 0 || l.ipmiMinInterval < 0 {
		t.Fatalf("accepted timeouts heartbeat %s deploy %s clean %s ipmi %s", l.heartbeatTimeout, l.deployCallbackTimeout, l.cleanCallbackTimeout, l.ipmiMinInterval)
	}
	if l.BMCBasePort < 0 || l.BMCBasePort > 65535 {
		t.Fatalf("accepted bmc_base_port %d", l.BMCBasePort)
	}
	total := 0
	for _, g := range l.Groups {
		c, known := enroll.Lookup(g.Driver)
		if g.Count < 1 || !nameRe.MatchString(g.Name) || !known || string(c.BMC) != g.BMC || string(c.Deploy) != g.Deploy {
			t.Fatalf("accepted group %+v", g)
		}
		if g.diskSize < 1<<20 || g.diskSize%512 != 0 || g.postTime < 0 {
			t.Fatalf("group %s: accepted disk size %d, POST time %s", g.Name, g.diskSize, g.postTime)
		}
		total += g.Count
	}
	if len(l.Groups) == 0 || total > MaxNodes || total < 1 {
		t.Fatalf("accepted a lab of %d groups, %d nodes", len(l.Groups), total)
	}
	for _, im := range l.Images {
		if im.size < 1024 || im.size%512 != 0 {
			t.Fatalf("image %s: accepted size %d", im.ID, im.size)
		}
	}
	if len(s.Steps) == 0 {
		t.Fatal("accepted a scenario without steps")
	}
	for i, st := range s.Steps {
		if st.line < 1 {
			t.Fatalf("step %d has no line", i)
		}
		if st.sleep < 0 || st.Wait != nil && st.Wait.timeout <= 0 {
			t.Fatalf("step %d: accepted a negative duration: %+v", i, st)
		}
		if st.Expect != nil {
			if len(st.Expect.clauses) == 0 {
				t.Fatalf("step %d: accepted an expect step that expects nothing", i)
			}
			for _, c := range st.Expect.clauses {
				if hb, ok := c.e.(*expectHeartbeatWithin); ok {
					if d, err := hb.within(); err != nil || d <= 0 {
						t.Fatalf("step %d: accepted heartbeat_within %q", i, string(*hb))
					}
				}
			}
		}
		if st.Fault != nil && (st.Fault.after < 0 || st.Fault.Conductor != nil && st.Fault.Conductor.restartAfter < 0) {
			t.Fatalf("step %d: accepted a negative fault delay", i)
		}
	}
}
