package scenarios

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// expectation is one kind of clause of an expect step, such as
// `state: active`: its value as the scenario file gives it (the clause's
// YAML value decodes into it), how that value is validated, and how it is
// checked on one node. Each kind lives in its own expect_<key>.go and
// registers itself at init, so adding an expectation is adding one file.
type expectation interface {
	// validate reports a bad value at p, its YAML path.
	validate(v *validator, p string, l *Lab)
	// name names the check, e.g. `state active`.
	name() string
	// check says what is wrong with one node, or "" when the clause holds.
	check(ctx context.Context, r *runner, n *lab.Node, an ironic.Node) string
}

// unset is for clauses whose zero value means "not stated", e.g.
// `disk_zeroed: false`: such a clause is dropped.
type unset interface{ unset() bool }

// expectations maps an expect key to a maker of its empty clause; filled
// by the expect_<key>.go files' init functions only.
var expectations = map[string]func() expectation{}

func registerExpectation(key string, mk func() expectation) {
	if _, dup := expectations[key]; dup {
		panic("scenarios: expectation " + key + " registered twice")
	}
	expectations[key] = mk
}

func expectationKeys() string {
	var ks []string
	for k := range expectations {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

// Expect states what must hold for every selected node; each clause other
// than nodes is one expectation (one JUnit test case), checked in the
// order the file gives them. The keys are those of the expect_<key>.go
// files (see the README).
type Expect struct {
	Nodes []string

	clauses []expectClause
}

type expectClause struct {
	key string
	e   expectation
}

// UnmarshalYAML decodes nodes and each clause through its kind; an
// unknown key is an error at its line and column.
func (e *Expect) UnmarshalYAML(node ast.Node) error {
	m, ok := node.(*ast.MappingNode)
	if !ok {
		if _, null := node.(*ast.NullNode); null {
			return nil
		}
		return &yaml.UnknownFieldError{Message: "expect wants a mapping of expectations", Token: node.GetToken()}
	}
	for _, kv := range m.Values {
		key := kv.Key.String()
		if key == "nodes" {
			if err := yaml.NodeToValue(kv.Value, &e.Nodes, yaml.DisallowUnknownField()); err != nil {
				return err
			}
			continue
		}
		mk, ok := expectations[key]
		if !ok {
			return &yaml.UnknownFieldError{Message: fmt.Sprintf("unknown expectation %q (one of nodes, %s)", key, expectationKeys()), Token: kv.Key.GetToken()}
		}
		c := mk()
		if err := yaml.NodeToValue(kv.Value, c, yaml.DisallowUnknownField()); err != nil {
			return err
		}
		if u, ok := c.(unset); ok && u.unset() {
			continue
		}
		e.clauses = append(e.clauses, expectClause{key, c})
	}
	return nil
}

// MarshalJSON writes the expect step as the file states it.
func (e Expect) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	if len(e.Nodes) > 0 {
		m["nodes"] = e.Nodes
	}
	for _, c := range e.clauses {
		m[c.key] = c.e
	}
	return json.Marshal(m)
}

// MarshalYAML writes the expect step as the file states it, clauses in
// their order, so a marshalled scenario parses back to the same checks.
func (e Expect) MarshalYAML() (any, error) {
	var m yaml.MapSlice
	if len(e.Nodes) > 0 {
		m = append(m, yaml.MapItem{Key: "nodes", Value: e.Nodes})
	}
	for _, c := range e.clauses {
		m = append(m, yaml.MapItem{Key: c.key, Value: c.e})
	}
	return m, nil
}

// validate checks every clause of an expect step at path p.
func (v *validator) expect(p string, e *Expect, l *Lab) {
	if len(e.clauses) == 0 {
		v.at(p, "expects nothing: set one of %s", expectationKeys())
	}
	for _, c := range e.clauses {
		c.e.validate(v, p+"."+c.key, l)
	}
}

// expect checks each clause of an expect step on every selected node;
// each clause is one check.
func (r *runner) expect(ctx context.Context, label string, i int, st *Step) {
	e := st.Expect
	nodes := r.selected(e.Nodes)
	r.printf("%s expect on %d nodes\n", label, len(nodes))
	all, err := r.api.Nodes(ctx)
	byName := map[string]ironic.Node{}
	for _, n := range all {
		byName[n.Name] = n
	}
	for _, cl := range e.clauses {
		start := time.Now()
		c := Check{Name: fmt.Sprintf("step %d: expect %s", i+1, cl.e.name()), Step: i + 1, Line: st.line}
		if err != nil {
			c.Failures = append(c.Failures, "list nodes: "+err.Error())
		}
		var mu sync.Mutex
		forEach(nodes, func(n *lab.Node) error {
			an, ok := byName[n.Name]
			msg := "not enrolled on the driver"
			if ok {
				msg = cl.e.check(ctx, r, n, an)
			}
			if msg != "" {
				mu.Lock()
				c.Failures = append(c.Failures, n.Name+": "+msg)
				mu.Unlock()
			}
			return nil
		})
		sort.Strings(c.Failures)
		c.Passed = len(c.Failures) == 0
		c.DurationS = time.Since(start).Seconds()
		r.report(label, &c)
	}
}
