package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ironlab/ironlab/images/ramdisk"
	"github.com/ironlab/ironlab/scenarios"
	"github.com/ironlab/ironlab/scenarios/report"
	"github.com/ironlab/ironlab/simulator/lab"
	"github.com/ironlab/ironlab/simulator/lab/enroll"
)

func init() {
	register("run", "run scenario files (or built-in scenarios by name) and write results", runCmd)
}

func runCmd(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	results := fs.String("results", "results", "folder for results; each run writes <folder>/<run-id>/")
	stateDir := fs.String("state-dir", "", "keep the labs' disks and databases here (default: a temporary folder removed after the run)")
	imageCache := fs.String("image-cache", defaultCache("images"), "folder where built test images are kept between runs")
	driverURL := fs.String("driver-url", "", "run against this driver API (e.g. a real Ironic) instead of the built-in driver")
	targetFlag := fs.String("target", "", "enroll nodes as builtin (the spec's classes) or ironic (hardware types and interfaces, deploy_kernel/deploy_ramdisk); default: builtin, or with --driver-url what its driver list says")
	verbose := fs.Bool("v", false, "log the lab's and driver's work to stderr")
	backend := fs.String("backend", "", "override the scenarios' lab backend: fake or libvirt (real QEMU VMs; needs libvirtd, see scripts/vm-deps.sh)")
	accel := fs.String("accel", "", "libvirt backend: override the accelerator, auto|kvm|tcg")
	pxe := fs.String("pxe", "", "libvirt backend: override the network boot, direct (kernel boot) or ipxe (real iPXE over QEMU's TFTP)")
	quiet := fs.Bool("quiet", false, "no progress lines: print each scenario's verdict and failed checks, and where the results are")
	jsonOut := fs.Bool("json", false, "print one JSON object a line on stdout (progress, check, node_event, scenario, run) instead of text")
	ui := fs.Bool("ui", false, "serve the live dashboard of each scenario's lab while it runs (prints dashboard: URL)")
	uiAddr := fs.String("ui-addr", "127.0.0.1:0", "with --ui: the dashboard's loopback address (default: a free port)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: ironlab run [flags] SCENARIO...

Runs each scenario: builds its lab, starts the built-in driver (unless
--driver-url), plays its steps and checks its expectations. SCENARIO is a
YAML file or the name of a built-in scenario (%s).

Results go to <results>/<run-id>/: junit.xml, report.html (open it in a
browser), and per scenario result.json, events.jsonl, console/<node>.log,
report.html and, on the libvirt backend, lab.log (the lab's and driver's log).
A failed scenario prints the end of the consoles of the nodes it names.

Output: progress lines and a summary per scenario; --quiet prints only the
verdicts and failed checks; --json prints one JSON object a line (for CI).

Exit status: 0 when every expectation holds, 1 when one fails, 2 for bad input.

Flags:
`, strings.Join(scenarios.Builtin(), ", "))
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	var list []*scenarios.Scenario
	bad := false
	for _, name := range fs.Args() {
		all, err := scenarios.LoadAll(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			bad = true
			continue
		}
		list = append(list, all...)
	}
	if bad {
		return 2
	}
	if err := checkVMFlags(*backend, *accel, *pxe); err != nil {
		fmt.Fprintln(os.Stderr, "ironlab run:", err)
		return 2
	}
	var target enroll.Target
	if *targetFlag != "" {
		t, err := enroll.ParseTarget(*targetFlag)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ironlab run: --target:", err)
			return 2
		}
		target = t
	}
	if *quiet && *jsonOut {
		fmt.Fprintln(os.Stderr, "ironlab run: --quiet and --json exclude each other")
		return 2
	}
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	self, _ := os.Executable() // conductor faults run the driver as a child: this binary
	runID := time.Now().Format("20060102-150405")
	dir := filepath.Join(*results, runID)
	var all []*scenarios.Result
	failed := false
	var jl *jsonLines
	if *jsonOut {
		jl = newJSONLines(os.Stdout)
	}
	var dash *report.Dashboard
	if *ui {
		dash = report.NewDashboard(logger, 0)
		url, err := dash.Listen(ctx, *uiAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ironlab run:", err)
			return 2
		}
		if jl != nil {
			jl.emit(map[string]any{"type": "dashboard", "url": url})
		} else {
			fmt.Printf("dashboard: %s\n", url)
		}
	}
	for _, s := range list {
		var out io.Writer = os.Stdout
		switch {
		case *quiet:
			out = io.Discard
		case jl != nil:
			out = jl.progress(s.Name)
		}
		var started func(string, *lab.Lab)
		if dash != nil {
			started = func(driverURL string, l *lab.Lab) { dash.SetTarget(scenarios.DashboardTarget(s.Name, driverURL, l)) }
		}
		res, err := scenarios.Run(ctx, s, scenarios.Options{
			ResultsDir: dir, StateDir: *stateDir, KeepState: *stateDir != "", ImageCache: *imageCache,
			DriverURL: *driverURL, Target: target, StartDriver: builtinDriver, DriverBinary: self, Out: out, Logger: logger,
			Backend: *backend, Accel: *accel, PXE: *pxe, AgentBinary: agentBinary(), RamdiskCache: ramdiskCache(),
			// CI must run every group: a missing tool there is an error.
			FailOnMissingTools: os.Getenv("CI") == "true", Started: started,
		})
		if res != nil {
			all = append(all, res)
			switch {
			case *quiet:
				printQuiet(os.Stdout, res)
			case jl != nil:
				jl.result(dir, res)
			default:
				scenarios.PrintSummary(os.Stdout, res)
			}
			failed = failed || !res.Passed
		}
		if err != nil {
			failed = true
			if jl != nil && res == nil {
				jl.emit(map[string]any{"type": "scenario", "scenario": s.Name, "passed": false, "error": err.Error()})
			}
		}
	}
	if err := scenarios.WriteJUnit(filepath.Join(dir, "junit.xml"), all); err != nil {
		fmt.Fprintln(os.Stderr, "write junit.xml:", err)
		return 1
	}
	report := filepath.Join(dir, "report.html")
	if err := scenarios.WriteRunReport(dir, "ironlab run "+runID, all); err != nil {
		fmt.Fprintln(os.Stderr, "write report.html:", err)
		return 1
	}
	if jl != nil {
		jl.emit(map[string]any{"type": "run", "passed": !failed, "scenarios": len(all), "results": dir,
			"junit": filepath.Join(dir, "junit.xml"), "report": report})
	} else {
		fmt.Printf("\nresults: %s (open %s)\n", dir, report)
	}
	if failed {
		return 1
	}
	return 0
}

// checkVMFlags validates the backend overrides of `ironlab run`.
func checkVMFlags(backend, accel, pxe string) error {
	for _, f := range []struct{ name, val, allowed string }{
		{"--backend", backend, " fake libvirt "}, {"--accel", accel, " auto kvm tcg "}, {"--pxe", pxe, " direct ipxe "},
	} {
		if f.val != "" && !strings.Contains(f.allowed, " "+f.val+" ") {
			return fmt.Errorf("%s %q: want one of%s", f.name, f.val, strings.TrimRight(f.allowed, " "))
		}
	}
	return nil
}

// The environment the libvirt backend's agent ramdisk takes (read here:
// the library packages read no environment).
func ramdiskCache() string {
	if d := os.Getenv("IRONLAB_CACHE"); d != "" {
		return d
	}
	return ramdisk.DefaultCacheDir()
}

func agentBinary() string { return os.Getenv("IRONLAB_AGENT_BINARY") }

// defaultCache is a folder under the user's cache directory.
func defaultCache(name string) string {
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "ironlab", name)
}
