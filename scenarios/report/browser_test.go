package report_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/ironlab/ironlab/scenarios"
	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/scenarios/labtest/minilab"
	"github.com/ironlab/ironlab/scenarios/report"
	"github.com/ironlab/ironlab/simulator/lab"
)

const chromiumPath = "/usr/bin/chromium"

// TestMain removes the ironlab binary the tests build: runs play their
// scenario against the built-in driver as a child process (the scenarios
// package links no driver).
func TestMain(m *testing.M) { labtest.Main(m) }

// stepTimeout bounds each group of browser steps (a wait for a state).
// They are bounds for a loaded shared machine, not timing targets.
const stepTimeout = time.Minute

// browser starts a headless Chromium with a fresh profile for tb and
// returns a context that drives its first tab. Without Chromium the test
// skips (fails under CI=true), as every tier's tool does.
func browser(tb testing.TB) context.Context {
	tb.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		labtest.Missing(tb, chromiumPath, "apt-get install -y --no-install-recommends chromium")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.WindowSize(1280, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	tab, cancelTab := chromedp.NewContext(actx)
	// The first call starts the browser: it must have no timeout, or the
	// timeout would end the browser; the test's steps get one. A browser
	// that does not come up is bounded all the same.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(tab, chromedp.Navigate("about:blank")) }()
	select {
	case err := <-started:
		if err != nil {
			cancelTab()
			cancelAlloc()
			tb.Fatalf("start %s: %v", chromiumPath, err)
		}
	case <-time.After(2 * time.Minute):
		cancelTab()
		cancelAlloc()
		tb.Fatalf("%s did not open a tab within 2 minutes", chromiumPath)
	}
	ctx, cancelTimeout := context.WithTimeout(tab, 5*time.Minute)
	tb.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc()
	})
	return ctx
}

// do runs browser steps, failing the test on the first error.
func do(tb testing.TB, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.Fatal(err)
	}
}

// get runs one browser action that returns a value.
func get[T any](tb testing.TB, ctx context.Context, a chromedp.Action[T]) T {
	tb.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

func text(tb testing.TB, ctx context.Context, sel string) string {
	tb.Helper()
	return get(tb, ctx, chromedp.Text(chromedp.CSS(sel)))
}

func visible(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.WaitVisible(chromedp.CSS(sel))
}
func click(sel string) chromedp.Action[chromedp.Void] { return chromedp.Click(chromedp.CSS(sel)) }

// until waits for a JavaScript condition on the page.
func until(js string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(stepTimeout))
}

// screenshot saves the page under the test's temp folder.
func screenshot(tb testing.TB, ctx context.Context, name string) string {
	tb.Helper()
	png := get(tb, ctx, chromedp.FullScreenshot(100))
	p := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("screenshot: %s", p)
	// The temp folder goes with the test; IRONLAB_SCREENSHOTS keeps a copy.
	if keep := os.Getenv("IRONLAB_SCREENSHOTS"); keep != "" {
		if err := os.MkdirAll(keep, 0o755); err == nil {
			os.WriteFile(filepath.Join(keep, name), png, 0o644)
		}
	}
	return p
}

// watchRequests records every URL the page asks for that is not the
// report itself: a self-contained report asks for none.
func watchRequests(tb testing.TB, ctx context.Context, self string) func() []string {
	var mu sync.Mutex
	var urls []string
	err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok && e.Request.URL != self {
			mu.Lock()
			urls = append(urls, e.Request.URL)
			mu.Unlock()
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), urls...)
	}
}

// failingScenario deploys three fake_agent nodes and then expects one of
// them to be available, which fails: the report must show that check.
const failingScenario = `name: failcheck
description: Deploy 3 fake_agent nodes; one expectation fails on fa-1.
seed: 1
lab:
  backend: fake
  heartbeat_timeout: 4s
  automated_clean: false
  images: [{id: demo-os, size: 2MiB}]
  groups: [{name: fa, count: 3, driver: fake_agent, dialect: v1, disk_size: 8MiB}]
steps:
  - enroll: {}
  - manage: {}
  - provide: {}
  - wait: {state: available, timeout: 60s}
  - deploy: {image: demo-os}
  - wait: {state: active, timeout: 60s}
  - expect: {state: active, last_error: ""}
  - expect: {nodes: [fa-1], state: available}
`

// runFailing plays failingScenario and returns its results folder.
func runFailing(t *testing.T) (string, *scenarios.Result) {
	t.Helper()
	s, err := scenarios.Parse("failcheck.yaml", []byte(failingScenario))
	if err != nil {
		t.Fatal(err)
	}
	results, state := t.TempDir(), t.TempDir()
	var out strings.Builder
	res, err := scenarios.Run(context.Background(), s, scenarios.Options{
		ResultsDir: results, StateDir: state, ImageCache: filepath.Join(state, "images"),
		StartDriver: scenarios.ProcessDriver(labtest.Binary(t)), Out: &out,
	})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if res.Passed {
		t.Fatalf("the scenario passed; it must fail one check:\n%s", out.String())
	}
	return filepath.Join(results, s.Name), res
}

// The report of a run with a failed check, opened in Chromium: the verdict,
// the failed check linked to its node, every node with its state, the
// timeline; clicking the node shows its events and console.
func TestReportInBrowser(t *testing.T) {
	ctx := browser(t)
	dir, res := runFailing(t)
	page := "file://" + filepath.Join(dir, "report.html")
	requests := watchRequests(t, ctx, page)

	do(t, ctx, chromedp.Navigate(page), visible(`body[data-ready="1"]`))
	verdict := text(t, ctx, `#verdict`)
	failedCheck := text(t, ctx, `li.check.fail`)
	nodeStates := get(t, ctx, chromedp.Evaluate[map[string]string](`Object.fromEntries([...document.querySelectorAll("table.nodes tr[data-node]")].map(r => [r.dataset.node, r.querySelector(".state").textContent]))`))
	lanesHeight := get(t, ctx, chromedp.Evaluate[int](`document.getElementById("lanes").height`))
	if verdict != "FAILED" {
		t.Errorf("verdict %q, want FAILED", verdict)
	}
	if !strings.Contains(failedCheck, "expect state available") || !strings.Contains(failedCheck, "fa-1") {
		t.Errorf("failed check reads %q: want the check and its node fa-1", failedCheck)
	}
	if len(nodeStates) != len(res.Nodes) {
		t.Errorf("nodes on the page: %v, want %d", nodeStates, len(res.Nodes))
	}
	for _, n := range res.Nodes {
		if nodeStates[n.Name] != "active" {
			t.Errorf("%s shows state %q, want active", n.Name, nodeStates[n.Name])
		}
	}
	if lanesHeight == 0 {
		t.Error("the timeline canvas is empty")
	}

	// Hover the end of fa-1's lane (the second): the tooltip names the
	// node and its state then. The page scrolls the timeline into view
	// first and lets that scroll's event go by (it hides the tooltip, as
	// a user's scroll does) before the mouse moves: on a loaded machine
	// the event came after the hover and the tooltip read "".
	tooltip := get(t, ctx, chromedp.Evaluate[string](`(async () => {
		const c = document.getElementById("lanes"), tip = document.getElementById("tooltip");
		c.scrollIntoView();
		for (let i = 0; i < 3; i++) await new Promise(r => requestAnimationFrame(r));
		const r = c.getBoundingClientRect();
		c.dispatchEvent(new MouseEvent("mousemove", {clientX: r.left + 130 + (r.width - 138) * 0.995, clientY: r.top + 16 * 1.5, bubbles: true}));
		return tip.hidden ? "(hidden) " + tip.textContent : tip.innerText;
	})()`, chromedp.EvalAwaitPromise))
	if !strings.Contains(tooltip, "fa-1") || !strings.Contains(tooltip, "state: active") || strings.HasPrefix(tooltip, "(hidden)") {
		t.Errorf("tooltip over the end of fa-1's lane: %q", tooltip)
	}

	// The failed check's node link opens the node: its events and console.
	do(t, ctx, click(`li.check.fail a.node-link[data-node="fa-1"]`), visible(`#node`))
	name := text(t, ctx, `#node-name`)
	lastState := text(t, ctx, `#node-facts .fact-final-state`)
	events := get(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#node-events tbody tr").length`))
	console := text(t, ctx, `#node-console`)
	if name != "fa-1" || lastState != "active" {
		t.Errorf("node page: %q in %q, want fa-1 in active", name, lastState)
	}
	if events < 10 {
		t.Errorf("fa-1's page lists %d events: want its whole history", events)
	}
	if !strings.Contains(console, "ironlab fake BIOS") {
		t.Errorf("fa-1's console: %q", console)
	}
	screenshot(t, ctx, "report.png")
	if got := requests(); len(got) > 0 {
		t.Errorf("the report fetched %v: it must be self-contained", got)
	}
}

// The live dashboard of a running lab: the nodes and their states, a
// node's timeline on click, and verbs that move the node through the
// driver's API.
func TestDashboardInBrowser(t *testing.T) {
	ctx := browser(t)
	l := minilab.Start(t, minilab.Options{Groups: []lab.GroupSpec{minilab.Class("n", 3, "fake_agent")}})
	l.Enroll(l.MustNode("n-0"), "disk")
	l.Enroll(l.MustNode("n-1"), "disk")
	dctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := report.NewDashboard(nil, 200*time.Millisecond)
	d.SetTarget(scenarios.DashboardTarget("browser test", l.URL, l.Lab))
	url, err := d.Listen(dctx, "")
	if err != nil {
		t.Fatal(err)
	}

	tile := func(name string) string { return fmt.Sprintf(`.tile[data-node=%q]`, name) }
	waitState := func(name, state string) chromedp.Action[chromedp.Void] {
		return visible(fmt.Sprintf(`.tile[data-node=%q][data-state=%q]`, name, state))
	}
	do(t, ctx, chromedp.Navigate(url), visible(`body[data-ready="1"]`), waitState("n-0", "enroll"))
	states := get(t, ctx, chromedp.Evaluate[map[string]string](`Object.fromEntries([...document.querySelectorAll(".tile")].map(e => [e.dataset.node, e.dataset.state]))`))
	want := map[string]string{"n-0": "enroll", "n-1": "enroll", "n-2": "not enrolled"}
	for n, s := range want {
		if states[n] != s {
			t.Errorf("tile %s: state %q, want %q (all: %v)", n, states[n], s, states)
		}
	}

	// Click n-0: its timeline and events; press manage, then provide.
	do(t, ctx, click(tile("n-0")), visible(`#node`), visible(`#node-events tbody tr`))
	events := get(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#node-events tbody tr").length`))
	do(t, ctx,
		click(`#verbs button[data-verb="manage"]`), waitState("n-0", "manageable"),
		click(`#verbs button[data-verb="provide"]`), waitState("n-0", "available"),
		// The node page follows the node.
		visible(`#node-state[data-state="available"]`))
	if events == 0 {
		t.Error("n-0's timeline lists no events")
	}
	if got := l.Get("n-0").ProvisionState; got != "available" {
		t.Errorf("the driver says n-0 is %q after manage and provide from the dashboard", got)
	}
	rows := text(t, ctx, `#node-events tbody`)
	if !strings.Contains(rows, "provide") {
		t.Errorf("n-0's events after provide: %q", rows)
	}
	// Deploy with the image the page offers: the node goes active and its
	// disk holds the image.
	do(t, ctx, click(`#verbs button[data-verb="active"]`), waitState("n-0", "active"))
	if n := l.Get("n-0"); n.ProvisionState != "active" || n.Error() != "" {
		t.Errorf("after deploy from the dashboard the driver says n-0 is %q (%s)", n.ProvisionState, n.Error())
	}
	_, _, image := l.Image("disk")
	if disk, err := os.ReadFile(l.MustNode("n-0").DiskPath()); err != nil || !bytes.HasPrefix(disk, image) {
		t.Errorf("n-0's disk does not hold the image after the dashboard's deploy (%v)", err)
	}
	screenshot(t, ctx, "dashboard.png")

	// A node the driver does not know yet: enroll it from the page.
	do(t, ctx, click(tile("n-2")), click(`#verbs button[data-verb="enroll"]`), waitState("n-2", "enroll"))
	if got := l.Get("n-2").ProvisionState; got != "enroll" {
		t.Errorf("the driver says n-2 is %q after enroll from the dashboard", got)
	}
}

// A large run's report lists groups and states instead of every node; a
// group and state link narrows the chart and the timeline to those nodes,
// and a click on a lane opens the node.
func TestReportDrillDownInBrowser(t *testing.T) {
	ctx := browser(t)
	d := benchData(250)
	for i := 0; i < 250; i += 25 {
		n := &d.Nodes[i]
		n.FinalState, n.LastError = "deploy failed", "image checksum mismatch"
		d.Events = append(d.Events, report.Event{Node: n.Name, Time: d.Start.Add(9 * time.Second), Kind: "error",
			Event: "fail", From: "active", To: "deploy failed", Message: n.LastError})
	}
	path := filepath.Join(t.TempDir(), "report.html")
	if err := report.WriteFile(path, d); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, chromedp.Navigate("file://"+path), visible(`body[data-ready="1"]`))
	if got := text(t, ctx, `#lane-count`); got != "250 of 250 nodes" {
		t.Errorf("lanes before the drill-down: %q", got)
	}
	// The link changes the URL's fragment; the page narrows on hashchange.
	do(t, ctx, click(`a.group-link[data-state="deploy failed"]`))
	if err := chromedp.Do(ctx, until(`document.getElementById("lane-count").textContent === "10 of 250 nodes"`)); err != nil {
		t.Errorf("lanes of group n in deploy failed: %q (%v)", text(t, ctx, `#lane-count`), err)
	}
	// The first lane is now n-0, a failed node.
	do(t, ctx, chromedp.ScrollIntoView(chromedp.CSS(`#lanes`)),
		chromedp.Evaluate[chromedp.Void](`(() => { const c = document.getElementById("lanes"), r = c.getBoundingClientRect();
			c.dispatchEvent(new MouseEvent("click", {clientX: r.left + 300, clientY: r.top + 5, bubbles: true})); })()`),
		visible(`#node`))
	if name, errText := text(t, ctx, `#node-name`), text(t, ctx, `#node-facts .fact-last_error`); name != "n-0" || errText != "image checksum mismatch" {
		t.Errorf("node page %q with last_error %q, want n-0's", name, errText)
	}
	screenshot(t, ctx, "drilldown.png")
}

// BenchmarkReport1000Nodes measures how long Chromium takes to open the
// report of a bench-sized run (1000 nodes, each with a deploy's events and
// heartbeats) until the page says it is ready.
func BenchmarkReport1000Nodes(b *testing.B) {
	ctx := browser(b)
	d := benchData(1000)
	path := filepath.Join(b.TempDir(), "report.html")
	if err := report.WriteFile(path, d); err != nil {
		b.Fatal(err)
	}
	st, _ := os.Stat(path)
	var readyMS float64
	for b.Loop() {
		do(b, ctx, chromedp.Navigate("about:blank"), chromedp.Navigate("file://"+path), visible(`body[data-ready="1"]`))
		readyMS += get(b, ctx, chromedp.Evaluate[float64](`Number(document.body.dataset.readyMs)`))
	}
	// ns/op includes the test's round trips; ready-ms is the page's own
	// time from navigation to its ready marker.
	b.ReportMetric(readyMS/float64(b.N), "ready-ms")
	b.ReportMetric(float64(st.Size())/(1<<20), "MiB")
}

// benchData is what `ironlab bench --nodes n` records: every node
// enrolled, cleaned, deployed, heartbeating, in waves.
func benchData(n int) *report.Data {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := &report.Data{Title: fmt.Sprintf("bench %d nodes", n), Scenario: "bench", Backend: "fake", Passed: true, Start: start}
	path := [][3]string{{"create", "", "enroll"}, {"manage", "enroll", "verifying"}, {"done", "verifying", "manageable"},
		{"provide", "manageable", "cleaning"}, {"done", "cleaning", "available"}, {"deploy", "available", "deploying"},
		{"wait", "deploying", "wait call-back"}}
	for i := range n {
		name := fmt.Sprintf("n-%d", i)
		t := start.Add(time.Duration(i) * 20 * time.Millisecond)
		ev := func(kind, e, from, to, msg string) {
			d.Events = append(d.Events, report.Event{Node: name, Time: t, Kind: kind, Event: e, From: from, To: to, Message: msg})
			t = t.Add(150 * time.Millisecond)
		}
		for _, p := range path {
			ev("provision", p[0], p[1], p[2], "")
		}
		ev("power", "power on", "power off", "power on", "")
		ev("lookup", "lookup", "wait call-back", "wait call-back", "")
		for range 10 {
			ev("heartbeat", "heartbeat", "wait call-back", "wait call-back", "agent heartbeat")
		}
		for _, c := range []string{"deploy.get_deploy_steps", "deploy.execute_deploy_step", "standby.power_off"} {
			ev("agent_command", c, "deploying", "deploying", "")
		}
		ev("provision", "resume", "wait call-back", "deploying", "")
		ev("provision", "done", "deploying", "active", "")
		d.Nodes = append(d.Nodes, report.Node{Name: name, UUID: fmt.Sprintf("uuid-%d", i), Group: "n", Driver: "fake_agent",
			FinalState: "active", PowerState: "power on", DeployS: 3 + float64(i%7)/10,
			Console: "ironlab fake BIOS: boot #1 from network\nagent: looking up\nboot #2 from disk: bench-os\n"})
	}
	d.Checks = []report.Check{{Name: "step 4: wait for available", Passed: true}, {Name: "step 6: wait for active", Passed: true},
		{Name: "step 7: expect state active", Passed: true}}
	d.Figures.Deploy = report.DeployStats(d.Nodes)
	d.DurationS = float64(n)*0.02 + 4
	return d
}
