package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ironlab/ironlab/simulator/bmc/ipmiload"
	"github.com/ironlab/ironlab/simulator/bmc/pyghmipeer"
)

// benchCompare is bench.json's compare: the bench's closed loops against
// the peers, in the same run.
type benchCompare struct {
	Ironic *ironicPeer `json:"ironic"`
	Pyghmi *pyghmiPeer `json:"pyghmi"`
}

// peerSkip says why a peer was not measured and how to get it.
type peerSkip struct {
	Skipped bool   `json:"skipped,omitempty"`
	Why     string `json:"why,omitempty"`
	Install string `json:"install,omitempty"`
}

// ironicPeer is a real Ironic (scripts/ironic.sh) on the heartbeat load.
type ironicPeer struct {
	peerSkip
	Version  string `json:"version,omitempty"`
	Measured string `json:"measured,omitempty"`
	*HeartbeatLoad
	// ProcessedAfterWindow are heartbeats accepted in the window that the
	// conductor recorded only after it; SkippedLocked the ones it dropped
	// because the node was locked ("skipping heartbeat processing").
	ProcessedAfterWindow int `json:"processed_after_window"`
	SkippedLocked        int `json:"skipped_locked"`
	// Ratio is ours / Ironic's heartbeats persisted per second.
	Ratio float64 `json:"ratio,omitempty"`
}

// pyghmiPeer is pyghmi's BMC on the IPMI load.
type pyghmiPeer struct {
	peerSkip
	Version  string `json:"version,omitempty"`
	Measured string `json:"measured,omitempty"`
	*IPMILoad
	// Ours is our BMC on the very same loops (each session from its own
	// port, as pyghmi needs), run right before pyghmi's.
	Ours *IPMILoad `json:"ours_same_client,omitempty"`
	// Ratio is Ours / pyghmi's requests per second in open sessions,
	// SessionsRatio the same for whole sessions.
	Ratio         float64 `json:"ratio,omitempty"`
	SessionsRatio float64 `json:"sessions_ratio,omitempty"`
}

// debVersion is a Debian package's installed version, or "".
func debVersion(pkg string) string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", pkg).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func freePort(network string) (int, error) {
	if network == "udp" {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// runCompare measures both peers, one after the other, on the loads the
// bench played against ours; ourBMC (nil: none) is played again with
// pyghmi's client settings.
func runCompare(ctx context.Context, script, dir string, load benchLoadOpts, ours *benchReport, ourBMC *ipmiTarget) *benchCompare {
	c := &benchCompare{}
	fmt.Println("   bench: compare: real Ironic on the heartbeat load")
	c.Ironic = compareIronic(ctx, script, filepath.Join(dir, "ironic"), load)
	if c.Ironic.HeartbeatLoad != nil && ours.HeartbeatLoad != nil && c.Ironic.HeartbeatsPerS > 0 {
		c.Ironic.Ratio = round3(ours.HeartbeatLoad.HeartbeatsPerS / c.Ironic.HeartbeatsPerS)
	}
	if c.Ironic.Skipped {
		fmt.Printf("   bench: compare: Ironic skipped: %s\n", c.Ironic.Why)
	}
	fmt.Println("   bench: compare: pyghmi's BMC on the IPMI load")
	c.Pyghmi = comparePyghmi(ctx, load, ourBMC)
	if p := c.Pyghmi; p.IPMILoad != nil && p.Ours != nil {
		if p.RequestsPerS > 0 {
			p.Ratio = round3(p.Ours.RequestsPerS / p.RequestsPerS)
		}
		if p.SessionsPerS > 0 {
			p.SessionsRatio = round3(p.Ours.SessionsPerS / p.SessionsPerS)
		}
	}
	if c.Pyghmi.Skipped {
		fmt.Printf("   bench: compare: pyghmi skipped: %s\n", c.Pyghmi.Why)
	}
	return c
}

const ironicInstall = "bash scripts/ironic.sh install"

func compareIronic(ctx context.Context, script, dir string, load benchLoadOpts) *ironicPeer {
	p := &ironicPeer{}
	skip := func(format string, a ...any) *ironicPeer {
		p.peerSkip = peerSkip{Skipped: true, Why: fmt.Sprintf(format, a...), Install: ironicInstall}
		return p
	}
	if _, err := os.Stat(script); err != nil {
		return skip("%s not found (run from the repository root, or give --ironic-script): %v", script, err)
	}
	for _, tool := range []string{"ironic-api", "ironic-conductor", "ironic-dbsync"} {
		if _, err := exec.LookPath(tool); err != nil {
			return skip("%s is not installed", tool)
		}
	}
	p.Version = "ironic-api " + debVersion("ironic-api") + " (Debian)"
	api, err := freePort("tcp")
	if err != nil {
		return skip("no free port: %v", err)
	}
	rpc, err := freePort("tcp")
	if err != nil {
		return skip("no free port: %v", err)
	}
	// The web server ironic.sh starts for [deploy]http_root (unused by the
	// heartbeat load, but it must not collide with another Ironic's).
	web, err := freePort("tcp")
	if err != nil {
		return skip("no free port: %v", err)
	}
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(startCtx, "bash", script, "start", dir, "--api-port", strconv.Itoa(api),
		"--rpc-port", strconv.Itoa(rpc), "--http-port", strconv.Itoa(web), "--callback-timeout", "600").CombinedOutput()
	defer exec.Command("bash", script, "stop", dir).Run()
	if err != nil {
		return skip("%s start: %v: %s", script, err, lastLine(out))
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", api)
	hc := loadClient(load.clients)
	runCtx, cancelRun := context.WithTimeout(ctx, 5*time.Minute)
	defer cancelRun()
	targets, err := enrollLoadNodes(runCtx, hc, base, load.nodes, func(i int) map[string]any {
		return map[string]any{"name": fmt.Sprintf("hbload-%d", i), "driver": "fake-hardware",
			"deploy_interface": "direct", "boot_interface": "fake", "power_interface": "fake",
			"management_interface": "fake", "driver_info": map[string]any{"fast_track": "true"}}
	})
	if err != nil {
		return skip("enroll in Ironic: %v", err)
	}
	logPath := filepath.Join(dir, "log", "ironic-conductor.log")
	count := func() (recorded, locked int) {
		b, _ := os.ReadFile(logPath)
		return bytes.Count(b, []byte("recorded to identify the node as on-line")),
			bytes.Count(b, []byte("currently locked, skipping heartbeat processing"))
	}
	rec0, lock0 := count()
	r := heartbeatLoad(runCtx, base, targets, load.clients, load.window)
	rec1, _ := count()
	// Ironic answers 202 and records in a conductor worker: wait (bounded)
	// for the backlog, counted apart.
	last := rec1
	for range 20 {
		time.Sleep(500 * time.Millisecond)
		n, _ := count()
		if n == last {
			break
		}
		last = n
	}
	rec2, lock2 := count()
	r.Persisted = rec1 - rec0
	if r.Seconds > 0 {
		r.HeartbeatsPerS = round3(float64(r.Persisted) / r.Seconds)
	}
	p.HeartbeatLoad = &r
	p.ProcessedAfterWindow = rec2 - rec1
	p.SkippedLocked = lock2 - lock0
	db := "its database"
	if conf, err := os.ReadFile(filepath.Join(dir, "ironic.conf")); err == nil {
		switch {
		case bytes.Contains(conf, []byte("connection = postgresql")):
			db = "PostgreSQL"
		case bytes.Contains(conf, []byte("connection = sqlite")):
			db = "SQLite"
		}
	}
	p.Measured = fmt.Sprintf("scripts/ironic.sh start (%s, json-rpc, noauth; state in %s); %d fake-hardware nodes "+
		"(deploy direct, driver_info fast_track) in enroll, each looked up for its agent token; the bench's closed "+
		"heartbeat loop (%d clients, %s); persisted = the conductor's \"recorded to identify the node as on-line\" "+
		"debug lines written in the window", db, dir, r.Nodes, r.Clients, load.window)
	fmt.Printf("   bench: compare: Ironic: %.1f heartbeats/s persisted, p50 %.2f ms, p99 %.2f ms (%d accepted, %d busy, %d errors)\n",
		r.HeartbeatsPerS, r.P50Ms, r.P99Ms, r.Accepted, r.Busy, r.Errors)
	return p
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

const pyghmiPython = "/usr/bin/python3"

func comparePyghmi(ctx context.Context, load benchLoadOpts, ourBMC *ipmiTarget) *pyghmiPeer {
	p := &pyghmiPeer{}
	skip := func(format string, a ...any) *pyghmiPeer {
		p.peerSkip = peerSkip{Skipped: true, Why: fmt.Sprintf(format, a...), Install: "apt-get install python3-pyghmi"}
		return p
	}
	if err := exec.Command(pyghmiPython, "-c", "import pyghmi.ipmi.bmc").Run(); err != nil {
		return skip("%s cannot import pyghmi.ipmi.bmc: %v", pyghmiPython, err)
	}
	p.Version = "python3-pyghmi " + debVersion("python3-pyghmi") + " (Debian)"
	tmp, err := os.MkdirTemp("", "ironlab-pyghmi-")
	if err != nil {
		return skip("temp folder: %v", err)
	}
	defer os.RemoveAll(tmp)
	port, err := freePort("udp")
	if err != nil {
		return skip("no free port: %v", err)
	}
	runCtx, cancel := context.WithTimeout(ctx, 2*load.window+time.Minute)
	defer cancel()
	stop, err := pyghmipeer.Start(runCtx, pyghmiPython, tmp, port)
	if err != nil {
		return skip("%v", err)
	}
	defer stop()
	if ourBMC != nil {
		o := ipmiLoad(runCtx, ourBMC.addr, ourBMC.user, ourBMC.pass, load.ipmiClients, load.window, true)
		p.Ours = &o
		fmt.Printf("   bench: compare: ours with pyghmi's client settings: %.0f sessions/s, %.0f requests/s (%d errors)\n", o.SessionsPerS, o.RequestsPerS, o.Errors)
	}
	r := ipmiLoad(runCtx, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port)), "admin", "password", load.ipmiClients, load.window, true)
	p.IPMILoad = &r
	p.Measured = fmt.Sprintf("pyghmi.ipmi.bmc.Bmc in %s (power and boot device in memory), one process; the bench's "+
		"closed IPMI loops (the lean lanplus client simulator/bmc/ipmiload, cipher suite 3, %d sessions "+
		"in flight, each from its own client port, as pyghmi needs, %s each): whole sessions (Open Session, RAKP 1-4, Close Session; at most %d, "+
		"as pyghmi never answers a client port twice), then Get Chassis Status in open sessions; ratio against ours on the same loops right before",
		pyghmiPython, r.Clients, load.window, ipmiload.FreshPorts*2/3)
	fmt.Printf("   bench: compare: pyghmi: %.0f sessions/s, %.0f requests/s (%d errors)\n", r.SessionsPerS, r.RequestsPerS, r.Errors)
	return p
}

// benchGoal is one of issue 13's goals on this machine, judged from the
// run's figures.
type benchGoal struct {
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	// Status: "met", "not met" or "not judged: <why>".
	Status string `json:"status"`
}

func judge(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

func (r *benchReport) goals() []benchGoal {
	var g []benchGoal
	deploy := benchGoal{Goal: "1000 IPMI nodes: first deploy request to last active under 15 s",
		Measured: fmt.Sprintf("%.2f s for %d nodes", r.DeployWallS, r.Nodes)}
	switch {
	case r.Driver == "agent_redfish" || r.Driver == "fake_agent":
		deploy.Status = "not judged: the goal is for IPMI nodes"
	case r.Nodes < 1000:
		deploy.Status = "not judged: needs --nodes 1000"
	case !r.Passed || r.DeployWallS == 0:
		deploy.Status = "not met"
	case r.Nodes > 1000 && r.DeployWallS >= 15:
		deploy.Status = "not judged: the goal is for 1000 nodes"
	default:
		deploy.Status = judge(r.DeployWallS < 15)
	}
	g = append(g, deploy, r.linearGoal())
	scale := benchGoal{Goal: "10,000 nodes: enroll to active under 3 minutes",
		Measured: fmt.Sprintf("%.1f s for %d nodes (enroll + manage + provide + deploy)", r.EnrollToActiveS, r.Nodes)}
	switch {
	case r.Nodes < 10000:
		scale.Status = "not judged: needs --nodes 10000"
	case !r.Passed || r.EnrollToActiveS == 0:
		scale.Status = "not met"
	default:
		scale.Status = judge(r.EnrollToActiveS < 180)
	}
	g = append(g, scale)
	hb := benchGoal{Goal: "at least 20,000 heartbeats/s persisted, p99 under 20 ms", Status: "not judged: no heartbeat load"}
	if l := r.HeartbeatLoad; l != nil {
		hb.Measured = fmt.Sprintf("%.0f/s, p99 %.2f ms", l.HeartbeatsPerS, l.P99Ms)
		hb.Status = judge(l.HeartbeatsPerS >= 20000 && l.P99Ms < 20)
	}
	g = append(g, hb)
	ipmi := benchGoal{Goal: "at least 60,000 IPMI requests/s and 20,000 sessions/s from one BMC", Status: "not judged: no IPMI load"}
	if r.Driver == "fake_agent" {
		ipmi.Status = "not judged: fake_agent nodes have no BMC"
	}
	if l := r.IPMILoad; l != nil {
		ipmi.Measured = fmt.Sprintf("%.0f requests/s, %.0f sessions/s", l.RequestsPerS, l.SessionsPerS)
		ipmi.Status = judge(l.RequestsPerS >= 60000 && l.SessionsPerS >= 20000 && l.Errors == 0)
	}
	g = append(g, ipmi)
	rss := benchGoal{Goal: "under 64 KiB of RSS per idle node (lab + driver, disks aside)",
		Measured: fmt.Sprintf("%.1f KiB at %d nodes (enrolled, manageable, off)", r.RSSPerIdleNodeKiB, r.Nodes)}
	switch {
	case r.RSSPerIdleNodeKiB == 0:
		rss.Status = "not judged: memory not measured"
	case r.Nodes < 1000:
		// The processes' fixed costs dominate a small lab.
		rss.Status = "not judged: needs --nodes 1000 or more"
	default:
		rss.Status = judge(r.RSSPerIdleNodeKiB < 64)
	}
	return append(g, rss)
}

// markdownLoads is bench.md's part on the closed loops, the peers and the
// goals.
func (r *benchReport) markdownLoads(b *strings.Builder) {
	if l := r.HeartbeatLoad; l != nil || r.IPMILoad != nil {
		b.WriteString("\n| closed loop | ironlab |")
		if r.Compare != nil {
			b.WriteString(" peer | ratio |")
		}
		b.WriteString("\n|---|---:|")
		if r.Compare != nil {
			b.WriteString("---:|---:|")
		}
		b.WriteString("\n")
		row := func(name string, ours float64, unit string, peer *float64, ratio float64) {
			fmt.Fprintf(b, "| %s | %.1f%s |", name, ours, unit)
			if r.Compare != nil {
				if peer == nil {
					b.WriteString(" skipped | |")
				} else if ratio > 0 {
					fmt.Fprintf(b, " %.1f%s | %.1fx |", *peer, unit, ratio)
				} else {
					fmt.Fprintf(b, " %.1f%s | |", *peer, unit)
				}
			}
			b.WriteString("\n")
		}
		// own is a row of ours alone.
		own := func(name string, v float64, unit string) {
			fmt.Fprintf(b, "| %s | %.1f%s |", name, v, unit)
			if r.Compare != nil {
				b.WriteString(" | |")
			}
			b.WriteString("\n")
		}
		var ir *ironicPeer
		var py *pyghmiPeer
		if r.Compare != nil {
			ir, py = r.Compare.Ironic, r.Compare.Pyghmi
		}
		if l != nil {
			var v, p50, p99 *float64
			var ratio float64
			if ir != nil && ir.HeartbeatLoad != nil {
				v, p50, p99, ratio = &ir.HeartbeatsPerS, &ir.P50Ms, &ir.P99Ms, ir.Ratio
			}
			row(fmt.Sprintf("heartbeats persisted / s (%d nodes, %d clients)", l.Nodes, l.Clients), l.HeartbeatsPerS, "", v, ratio)
			row("heartbeat latency p50", l.P50Ms, " ms", p50, 0)
			row("heartbeat latency p99", l.P99Ms, " ms", p99, 0)
			if l.DriverCPUUs > 0 {
				own("CPU per heartbeat, driver process", l.DriverCPUUs, " us")
				own("CPU per heartbeat, bench process (load client, lab idling)", l.ClientCPUUs, " us")
			}
		}
		if l := r.IPMILoad; l != nil {
			// The peer's figures are on the loops pyghmi can take (below).
			own(fmt.Sprintf("IPMI whole sessions / s, one BMC (%d in flight)", l.Clients), l.SessionsPerS, "")
			own("IPMI requests / s in open sessions, one BMC", l.RequestsPerS, "")
		}
		if py != nil && py.IPMILoad != nil && py.Ours != nil {
			row(fmt.Sprintf("IPMI whole sessions / s, each from its own port (%d in flight)", py.Ours.Clients), py.Ours.SessionsPerS, "", &py.SessionsPerS, py.SessionsRatio)
			row("IPMI requests / s, each session from its own port", py.Ours.RequestsPerS, "", &py.RequestsPerS, py.Ratio)
		}
	}
	if c := r.Compare; c != nil {
		b.WriteString("\nPeers (--compare):\n\n")
		peer := func(name string, s peerSkip, version, how string) {
			if s.Skipped {
				fmt.Fprintf(b, "- %s: skipped: %s (install: `%s`)\n", name, s.Why, s.Install)
				return
			}
			fmt.Fprintf(b, "- %s: %s; %s\n", name, version, how)
		}
		if c.Ironic != nil {
			peer("Ironic", c.Ironic.peerSkip, c.Ironic.Version, c.Ironic.Measured)
			if c.Ironic.HeartbeatLoad != nil {
				fmt.Fprintf(b, "  (%d heartbeats accepted, %d persisted in the window, %d after it, %d skipped as locked, %d answered 503 busy: no free conductor worker, %d errors)\n",
					c.Ironic.Accepted, c.Ironic.Persisted, c.Ironic.ProcessedAfterWindow, c.Ironic.SkippedLocked, c.Ironic.Busy, c.Ironic.Errors)
			}
		}
		if c.Pyghmi != nil {
			peer("pyghmi", c.Pyghmi.peerSkip, c.Pyghmi.Version, c.Pyghmi.Measured)
		}
	}
	if len(r.Goals) > 0 {
		b.WriteString("\n| goal (issue 13, this machine) | measured | status |\n|---|---|---|\n")
		for _, g := range r.Goals {
			fmt.Fprintf(b, "| %s | %s | %s |\n", g.Goal, g.Measured, g.Status)
		}
	}
}
