package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ironlab/ironlab/scenarios"
	"github.com/ironlab/ironlab/scenarios/ironic"
)

func init() {
	register("bench", "measure the real provisioning path of many nodes and write bench.json/bench.md", benchCmd)
}

// benchStep is one step of the bench scenario and the phase it times.
type benchStep struct {
	yaml  string
	phase string
}

// benchPhases are the phases in the order they run.
var benchPhases = []string{"enroll", "manage", "provide", "heartbeats", "heartbeat_load", "ipmi_load", "compare", "power_off", "deploy", "deploy_verify", "undeploy", "undeploy_verify"}

// benchSteps is what `ironlab bench` plays: provide cleans (metadata erase
// only) and, with fast track, leaves the agents running, so that the
// heartbeat window sees every agent heartbeat as an idle fleet does; the
// nodes are powered off before the deploy so that it takes the whole cold
// path (power on over the BMC, ramdisk boot, image write, reboot). The
// bench's own checks of every disk (the image byte for byte, the erased
// metadata) are phases of their own: they read the disks after the last node
// reached its state, and are no part of the lab's time to get there.
// Without clean (FakePower: see benchCleans) undeploy's check is of the state
// alone.
func benchSteps(image, checksum string, window, timeout time.Duration, clean bool) []benchStep {
	t := timeout.String()
	erased := ""
	if clean {
		erased = ", disk_metadata_erased: true"
	}
	return []benchStep{
		{`enroll: {}`, "enroll"},
		{`manage: {}`, "manage"},
		{`wait: {state: manageable, timeout: ` + t + `}`, "manage"},
		{`provide: {}`, "provide"},
		{`wait: {state: available, timeout: ` + t + `}`, "provide"},
		{`sleep: ` + window.String(), "heartbeats"},
		{`power: {target: power off}`, "power_off"},
		{`deploy: {image: ` + image + `, checksum: ` + checksum + `}`, "deploy"},
		{`wait: {state: active, timeout: ` + t + `}`, "deploy"},
		{`expect: {state: active, last_error: "", disk_image: ` + image + `}`, "deploy_verify"},
		{`undeploy: {}`, "undeploy"},
		{`wait: {state: available, timeout: ` + t + `}`, "undeploy"},
		{`expect: {state: available, last_error: ""` + erased + `}`, "undeploy_verify"},
	}
}

const benchLab = `name: bench
description: ironlab bench, %[1]d %[2]s nodes.
seed: 1
lab:
  heartbeat_timeout: %[3]s
  automated_clean: %[6]t
  fast_track: true
  driver_process: true
  images: [{id: bench-os, size: %[4]s}]
  groups: [{name: n, count: %[1]d, driver: %[2]s, dialect: v1, disk_size: %[5]d}]
steps:
`

func benchCmd(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	nodes := fs.Int("nodes", 200, fmt.Sprintf("nodes, each with its own BMC (1 to %d)", scenarios.MaxNodes))
	power := fs.String("power", "native", "power path: native (agent_pyghmi: the driver's own IPMI client), ipmitool (agent_ipmitool) or fake (fake_agent: no BMC)")
	bmcKind := fs.String("bmc", "ipmi", "BMC kind: ipmi, or redfish (agent_redfish; --power must be native)")
	image := fs.String("image-size", "1MiB", "image size (disks are sparse files of twice that, at least 2 MiB)")
	checksum := fs.String("checksum", "sha256", "the image checksum the deploy sends and every agent verifies as it writes: sha256 or sha512 (Glance's default os_hash_algo); all agents hash on the lab's cores, where sha256 is ~4x faster")
	hb := fs.Duration("heartbeat-timeout", 4*time.Second, "agent.heartbeat_timeout (agents heartbeat every 0.3-0.6 of it; keep it over 3.4s: the driver records heartbeats in whole seconds)")
	window := fs.Duration("heartbeat-window", 10*time.Second, "how long the steady-state heartbeat phase lasts")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up on a phase after this long")
	results := fs.String("results", "results", "results folder")
	loadNodes := fs.Int("load-nodes", 100, "nodes the closed heartbeat loop enrolls (in enroll, fast track) and heartbeats")
	loadClients := fs.Int("load-clients", 16, "workers of the closed heartbeat loop (at most --load-nodes: one heartbeat per node at a time)")
	ipmiClients := fs.Int("ipmi-clients", 8, "sessions in flight in the closed IPMI loops against one BMC, each from its own client port")
	loadWindow := fs.Duration("load-window", 5*time.Second, "how long each closed loop runs (0: no loops)")
	compare := fs.Bool("compare", false, "also play the closed loops against the peers: a real Ironic (scripts/ironic.sh) and pyghmi's BMC")
	cpuProfile := fs.String("cpuprofile", "", "write CPU profiles (pprof) into folder `DIR`, one piece per phase: lab.<phase>.cpu (this process: lab, BMCs, agents, runner) and driver.<phase>.cpu (the driver process), lab.after-<phase>.cpu and driver.after-<phase>.cpu from a phase's end to the next one's start, lab.cpu and driver.cpu before the first; go tool pprof DIR/lab*.cpu merges them into the whole run")
	ironicScript := fs.String("ironic-script", "scripts/ironic.sh", "scripts/ironic.sh of this repository, which --compare starts Ironic with")
	scaleFrom := fs.String("scale-from", "", "bench.json of a run of fewer nodes with the same other flags: bench.json and bench.md get each phase's CPU per node at both sizes, and the goal \"every phase linear in N\" is judged")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: ironlab bench [flags]

Measures the real provisioning path of --nodes nodes, all in one lab on
loopback: one virtual BMC per node (real IPMI over UDP, or Redfish over
HTTPS), the built-in driver as a child process (its HTTP API, SQLite), fake
agents writing real bytes to sparse disks. Phases: enroll, manage, provide
(automated clean: erase_devices_metadata), steady-state heartbeats for
--heartbeat-window (fast track keeps the agents running), power off, deploy,
undeploy (automated clean: erase_devices_metadata; --power fake cleans
neither: FakePower never powers the machine on again after the deploy, so
no agent would run the erase). After the heartbeat
window, two closed loops for --load-window each: heartbeat_load (the API's
heartbeats of --load-nodes nodes from --load-clients workers, each checked
persisted) and ipmi_load (whole lanplus sessions, then requests in open
sessions, against one BMC). --compare plays the same loops against a real
Ironic (scripts/ironic.sh) and pyghmi's BMC, where they are installed,
right after ours while the lab runs (phase compare).
Bounded: every wait gives up after --timeout.

Writes results/<run>/bench.json and bench.md (and the scenario's report.html
under results/<run>/bench/).

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *nodes < 1 || *nodes > scenarios.MaxNodes {
		fmt.Fprintf(os.Stderr, "ironlab bench: --nodes must be 1 to %d\n", scenarios.MaxNodes)
		return 2
	}
	class, err := benchClass(*power, *bmcKind)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ironlab bench:", err)
		return 2
	}
	if *loadNodes < 1 || *loadClients < 1 || *ipmiClients < 1 || *loadWindow < 0 {
		fmt.Fprintln(os.Stderr, "ironlab bench: --load-nodes, --load-clients and --ipmi-clients must be at least 1, --load-window not negative")
		return 2
	}
	if *compare && *loadWindow == 0 {
		fmt.Fprintln(os.Stderr, "ironlab bench: --compare plays the closed loops: give --load-window above 0")
		return 2
	}
	if *window <= 0 || *timeout <= 0 || *hb <= 0 {
		fmt.Fprintln(os.Stderr, "ironlab bench: --heartbeat-window, --heartbeat-timeout and --timeout must be positive")
		return 2
	}
	switch *checksum {
	case "sha256", "sha512":
	case "md5":
		// The agents refuse md5 unless the driver allows it, as IPA does.
		fmt.Fprintln(os.Stderr, "ironlab bench: --checksum md5: the driver disables md5 image checksums by default (the agents would refuse them), so every deploy would fail; use sha256 or sha512")
		return 2
	default:
		fmt.Fprintf(os.Stderr, "ironlab bench: --checksum must be sha256 or sha512, got %q\n", *checksum)
		return 2
	}
	size, err := scenarios.ParseSize(*image)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ironlab bench: --image-size:", err)
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ironlab bench: find the ironlab binary:", err)
		return 1
	}
	settings := benchSettings{Power: *power, BMC: *bmcKind, ImageSize: *image, Checksum: *checksum,
		HeartbeatTimeout: hb.String(), HeartbeatWindow: window.String(), LoadWindow: loadWindow.String(),
		LoadNodes: *loadNodes, LoadClients: *loadClients, IPMIClients: *ipmiClients, Compare: *compare}
	var scaleBase *benchReport
	if *scaleFrom != "" {
		if scaleBase, err = readScaleBase(*scaleFrom, *nodes, class, settings); err != nil {
			fmt.Fprintln(os.Stderr, "ironlab bench:", err)
			return 2
		}
	}
	clean := benchCleans(class)
	steps := benchSteps("bench-os", *checksum, *window, *timeout, clean)
	var text strings.Builder
	fmt.Fprintf(&text, benchLab, *nodes, class, hb.String(), *image, max(size*2, 2<<20), clean)
	for _, st := range steps {
		text.WriteString("  - " + st.yaml + "\n")
	}
	s, err := scenarios.Parse("bench", []byte(text.String()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "ironlab bench:", err)
		return 2
	}

	if _, err := raiseFDLimit(*nodes); err != nil {
		fmt.Fprintln(os.Stderr, "ironlab bench: warning:", err)
	}
	var labProfile *cpuProfiler
	if *cpuProfile != "" {
		if err := os.MkdirAll(*cpuProfile, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "ironlab bench: --cpuprofile:", err)
			return 1
		}
		var err error
		if labProfile, err = startCPUProfile(filepath.Join(*cpuProfile, "lab.cpu")); err != nil {
			fmt.Fprintln(os.Stderr, "ironlab bench:", err)
			return 1
		}
		defer labProfile.Stop()
		// The runner starts the driver process with this environment.
		os.Setenv(driverProfileEnv, filepath.Join(*cpuProfile, "driver.cpu"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	runID := time.Now().Format("20060102-150405")
	dir := filepath.Join(*results, runID)
	load := benchLoadOpts{nodes: *loadNodes, clients: min(*loadClients, *loadNodes), ipmiClients: *ipmiClients, window: *loadWindow}
	m := newBenchMeter(*nodes, class, steps, *timeout, load)
	m.image = *image + ", " + *checksum
	m.prof = labProfile
	m.settings, m.scaleBase, m.scaleFrom = settings, scaleBase, *scaleFrom
	if *compare {
		m.compare = &compareOpts{script: *ironicScript, dir: dir}
	}
	m.selfBefore = readProcStatus(os.Getpid())
	fmt.Printf("bench: %d %s nodes (image %s, %s, heartbeat window %s) ...\n", *nodes, class, *image, *checksum, *window)
	res, err := scenarios.Run(ctx, s, scenarios.Options{
		ResultsDir: dir, ImageCache: defaultCache("images"), DriverBinary: self,
		Out: os.Stdout, Logger: slog.New(slog.DiscardHandler),
		FailOnMissingTools:  os.Getenv("CI") == "true",
		LookupInterval:      time.Second,
		HTTPClient:          m.client(),
		CleanStepPriorities: map[string]int{"erase_devices": 0, "erase_devices_metadata": 99},
		Started:             m.started,
		StepHook:            m.step,
	})
	if res == nil {
		fmt.Fprintln(os.Stderr, "ironlab bench:", err)
		return 1
	}
	if len(res.Skipped) > 0 {
		fmt.Fprintf(os.Stderr, "ironlab bench: groups skipped (%s): nothing measured\n", strings.Join(res.Skipped, "; "))
		return 1
	}
	rep := m.report(res)
	if *compare && rep.Compare == nil {
		// The lab failed before its loops: the peers are still measured.
		rep.Compare = runCompare(ctx, *ironicScript, dir, load, rep, nil)
	}
	if werr := writeBench(dir, rep); werr != nil {
		fmt.Fprintln(os.Stderr, "ironlab bench:", werr)
		return 1
	}
	fmt.Println()
	fmt.Print(rep.markdown())
	fmt.Printf("\n  results: %s (bench.json, bench.md; open %s)\n", dir, filepath.Join(dir, s.Name, "report.html"))
	if labProfile != nil {
		fmt.Printf("  CPU profiles: %s, a piece per phase and process (go tool pprof %s; %s for the whole run)\n",
			*cpuProfile, filepath.Join(*cpuProfile, "driver.deploy.cpu"), filepath.Join(*cpuProfile, "driver*.cpu"))
	}
	if err != nil || !res.Passed {
		if err != nil {
			fmt.Fprintln(os.Stderr, "ironlab bench:", err)
		}
		for _, c := range res.Checks {
			if !c.Passed {
				fmt.Fprintf(os.Stderr, "ironlab bench: %s failed: %s\n", c.Name, firstFailures(&c, filepath.Join(dir, s.Name, "result.json")))
			}
		}
		return 1
	}
	return 0
}

// firstFailures is a failed check's first ten failures on one line, and
// how many more the results hold.
func firstFailures(c *scenarios.Check, results string) string {
	shown, more := c.FirstFailures(10)
	if more == 0 {
		return strings.Join(shown, "; ")
	}
	return fmt.Sprintf("%s; ... and %d more (all in %s)", strings.Join(shown, "; "), more, results)
}

// benchClass maps --power and --bmc to the nodes' driver class.
func benchClass(power, bmcKind string) (string, error) {
	switch bmcKind {
	case "ipmi":
	case "redfish":
		if power != "native" {
			return "", fmt.Errorf("--bmc redfish powers through Redfish: leave --power at native, not %q", power)
		}
		return "agent_redfish", nil
	default:
		return "", fmt.Errorf("--bmc: want ipmi or redfish, got %q", bmcKind)
	}
	switch power {
	case "native":
		return "agent_pyghmi", nil
	case "ipmitool":
		return "agent_ipmitool", nil
	case "fake":
		return "fake_agent", nil
	}
	return "", fmt.Errorf("--power: want native, ipmitool or fake, got %q", power)
}

// benchCleans says whether the bench's nodes are cleaned (automated clean:
// erase_devices_metadata) on provide and undeploy. fake_agent nodes are not:
// FakePower reaches no machine, so once the deploy's standby.power_off has
// powered the machine off nothing turns it back on, and an undeploy's clean
// would wait for an agent that never comes (as scenarios/mixed.yaml leaves
// its fake_agent nodes out of the erase). automated_clean is one setting
// for provide and undeploy alike, so their provide is not cleaned either.
func benchCleans(class string) bool { return class != "fake_agent" }

// writeBench writes bench.json and bench.md into dir.
func writeBench(dir string, rep *benchReport) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("results folder %s: %w", dir, err)
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode bench.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write bench.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.md"), []byte(rep.markdown()), 0o644); err != nil {
		return fmt.Errorf("write bench.md: %w", err)
	}
	return nil
}

// benchAPI is the driver API as the meter reads it (its own requests,
// not timed with the runner's).
func benchAPI(ctx context.Context, url string) (*ironic.Client, error) {
	return ironic.New(ctx, url, &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}})
}
