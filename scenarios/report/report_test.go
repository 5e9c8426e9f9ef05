package report

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDeployStats(t *testing.T) {
	for name, tc := range map[string]struct {
		deploys []float64
		want    Stats
	}{
		"none":         {nil, Stats{}},
		"undeployed":   {[]float64{0, 0}, Stats{}},
		"odd":          {[]float64{3, 1, 2}, Stats{N: 3, Min: 1, Median: 2, Max: 3}},
		"even":         {[]float64{4, 1, 3, 2}, Stats{N: 4, Min: 1, Median: 2.5, Max: 4}},
		"skips zeroes": {[]float64{0, 5, 0, 7}, Stats{N: 2, Min: 5, Median: 6, Max: 7}},
	} {
		t.Run(name, func(t *testing.T) {
			var nodes []Node
			for _, d := range tc.deploys {
				nodes = append(nodes, Node{DeployS: d})
			}
			if diff := cmp.Diff(tc.want, DeployStats(nodes)); diff != "" {
				t.Error(diff)
			}
		})
	}
}

func TestFailedNodes(t *testing.T) {
	nodes := []Node{{Name: "fa-1"}, {Name: "fa-10"}, {Name: "ip-0"}}
	got := FailedNodes([]string{
		`fa-1: provision_state "active"`, `fa-10: in "deploy failed", not "active": last_error: x: y`,
		`fa-1: again`, "list nodes: connection refused", `other: not a node of the run`,
	}, nodes)
	if diff := cmp.Diff([]string{"fa-1", "fa-10"}, got); diff != "" {
		t.Error(diff)
	}
}

func sample() *Data {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &Data{
		Title: "deploy", Scenario: "deploy", Backend: "fake", DurationS: 3,
		Checks: []Check{{Name: "wait for active", Passed: true},
			{Name: "expect state active", Failures: []string{`n-1: provision_state "deploy failed" </script><b>`}}},
		Nodes: []Node{{Name: "n-0", Group: "n", FinalState: "active", DeployS: 2},
			{Name: "n-1", Group: "n", FinalState: "deploy failed", LastError: "image <corrupt> & checksum", Console: strings.Repeat("x", consoleTail+10)}},
		Events: []Event{
			{Node: "n-1", Time: t0.Add(2 * time.Second), Kind: "provision", Event: "fail", From: "deploying", To: "deploy failed"},
			{Node: "n-0", Time: t0, Kind: "provision", Event: "deploy", From: "available", To: "deploying"},
			{Node: "n-1", Time: t0.Add(time.Second), Kind: "fault", Event: "image corrupt"},
			{Node: "gone", Time: t0, Kind: "provision", Event: "create"},
		},
		Figures: Figures{ImageBytesServed: 64 << 20, ConductorImageBytes: map[string]int64{"pxe_ipmitool": 128 << 20, "fake_agent": 0}},
	}
}

// The report is one file: nothing it loads comes from elsewhere, and what
// the run wrote (an error with markup in it) cannot break out of the page.
func TestWriteSelfContained(t *testing.T) {
	var b strings.Builder
	if err := Write(&b, sample()); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	if m := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//`).FindString(html); m != "" {
		t.Errorf("the report loads something from elsewhere: %s", m)
	}
	if strings.Count(html, "</script>") != 2 {
		t.Errorf("%d </script> tags: the run's text closed a script", strings.Count(html, "</script>"))
	}
	for _, want := range []string{"FAILED", "1/2 checks passed", "expect state active",
		`href="#node=n-1"`, "image &lt;corrupt&gt; &amp; checksum", "128.0 MiB", `id="report-data"`} {
		if !strings.Contains(html, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}

func TestCompactData(t *testing.T) {
	d := sample()
	got := compact(d)
	// Events in time order, from the first one; unknown nodes left out.
	var ms []any
	for _, e := range got.Events {
		ms = append(ms, e[0], e[1])
	}
	if diff := cmp.Diff([]any{0, int64(0), 1, int64(1000), 1, int64(2000)}, ms); diff != "" {
		t.Errorf("events (node, ms): %s", diff)
	}
	if got.EndMS != 3000 {
		t.Errorf("end %d ms, want the run's 3 s", got.EndMS)
	}
	if c := got.Nodes[1].Console; len(c) > consoleTail+200 || !strings.Contains(c, "console/n-1.log") {
		t.Errorf("a long console is kept whole (%d bytes) or without a pointer to the full log", len(c))
	}
	// Many nodes share the budget.
	big := &Data{}
	for i := range 1000 {
		big.Nodes = append(big.Nodes, Node{Name: fmt.Sprint("n-", i), Console: strings.Repeat("y", consoleTail)})
	}
	total := 0
	for _, n := range compact(big).Nodes {
		total += len(n.Console)
	}
	if total > consoleBudget+1000*100 {
		t.Errorf("1000 consoles take %d bytes of the report, over the %d budget", total, consoleBudget)
	}
}

func TestMerge(t *testing.T) {
	a, b := sample(), sample()
	a.Scenario, b.Scenario = "one", "two"
	a.Passed, b.Passed = true, false
	a.Checks[1].Nodes = []string{"n-1"}
	m := Merge("run", []*Data{a, b})
	if m.Passed || len(m.Nodes) != 4 || len(m.Checks) != 4 || m.Nodes[2].Name != "two/n-0" {
		t.Fatalf("merged: passed %v, %d nodes, %d checks, third node %q", m.Passed, len(m.Nodes), len(m.Checks), m.Nodes[2].Name)
	}
	if diff := cmp.Diff([]string{"one/n-1"}, m.Checks[1].Nodes); diff != "" {
		t.Error(diff)
	}
	if m.Figures.ConductorImageBytes["pxe_ipmitool"] != 256<<20 || m.Figures.ImageBytesServed != 128<<20 {
		t.Errorf("figures not summed: %+v", m.Figures)
	}
	if one := Merge("run", []*Data{a}); one.Title != "deploy" || len(one.Nodes) != 2 {
		t.Errorf("a single part changed: %q, %d nodes", one.Title, len(one.Nodes))
	}
}

func TestNaturalOrder(t *testing.T) {
	got := []string{"n-10", "n-2", "a", "n-1", "n-02x"}
	slicesSort(got)
	if diff := cmp.Diff([]string{"a", "n-1", "n-2", "n-02x", "n-10"}, got); diff != "" {
		t.Error(diff)
	}
}

func slicesSort(s []string) {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if naturalCmp(s[j], s[i]) < 0 {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
}

// The dashboard's event stream: a snapshot first, then each change the
// driver reports, and requests to /v1 reach the driver.
func TestDashboardStream(t *testing.T) {
	states := make(chan string, 1)
	states <- "enroll"
	cur := "enroll"
	proxied := make(chan string, 4)
	drv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/nodes/detail" {
			proxied <- r.Method + " " + r.URL.Path + " " + r.Header.Get("X-OpenStack-Ironic-API-Version")
			w.WriteHeader(http.StatusAccepted)
			return
		}
		select {
		case cur = <-states:
		default:
		}
		json.NewEncoder(w).Encode(map[string]any{"nodes": []map[string]any{
			{"uuid": "u-0", "name": "n-0", "driver": "fake_agent", "provision_state": cur, "power_state": "power off"}}})
	}))
	defer drv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := NewDashboard(nil, 50*time.Millisecond)
	d.SetTarget(&Target{Title: "t", DriverURL: drv.URL, Nodes: []LabNode{{Name: "n-0", UUID: "u-0", Group: "n"}, {Name: "n-1", UUID: "u-1"}}})
	url, err := d.Listen(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Errorf("dashboard at %s, want loopback", url)
	}
	if _, err := d.Listen(ctx, "0.0.0.0:0"); err == nil {
		t.Error("the dashboard listened on all interfaces")
	}

	resp, err := http.Get(url + "events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	msgs := make(chan [2]string, 64)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var ev string
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				ev = v
			} else if v, ok := strings.CutPrefix(line, "data: "); ok {
				msgs <- [2]string{ev, v}
			}
		}
		close(msgs)
	}()
	var back *[2]string // a message read ahead
	next := func(want string) NodeView {
		t.Helper()
		deadline := time.After(time.Minute)
		for {
			var m [2]string
			ok := true
			if back != nil {
				m, back = *back, nil
			} else {
				select {
				case m, ok = <-msgs:
				case <-deadline:
					t.Fatalf("no event for n-0 in %q", want)
				}
			}
			if !ok {
				t.Fatal("the event stream ended")
			}
			// The state shows in a snapshot (when the dashboard saw it
			// before the page connected) or in a node event.
			var views []NodeView
			switch m[0] {
			case "snapshot":
				var s struct{ Nodes []NodeView }
				json.Unmarshal([]byte(m[1]), &s)
				views = s.Nodes
			case "node":
				var v NodeView
				json.Unmarshal([]byte(m[1]), &v)
				views = []NodeView{v}
			}
			for _, v := range views {
				if v.Name == "n-0" && v.State == want {
					return v
				}
			}
		}
	}
	m := <-msgs
	if m[0] != "snapshot" || !strings.Contains(m[1], `"n-1"`) {
		t.Fatalf("first message %v: want a snapshot with every lab node", m)
	}
	back = &m
	if v := next("enroll"); !v.Enrolled || v.Group != "n" || v.Power != "power off" {
		t.Errorf("n-0: %+v", v)
	}
	states <- "manageable"
	next("manageable")

	req, _ := http.NewRequest(http.MethodPut, url+"v1/nodes/u-0/states/provision", strings.NewReader(`{"target":"provide"}`))
	req.Header.Set("X-OpenStack-Ironic-API-Version", "latest")
	pr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	pr.Body.Close()
	select {
	case got := <-proxied:
		if got != "PUT /v1/nodes/u-0/states/provision latest" || pr.StatusCode != http.StatusAccepted {
			t.Errorf("proxied %q, answer %d", got, pr.StatusCode)
		}
	case <-time.After(time.Minute):
		t.Fatal("the request did not reach the driver")
	}
}
