package interop_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

// TestMain lets the four Ironics of TestRealIronicRunsBuiltinScenarios run
// at once: go test runs GOMAXPROCS parallel tests by default (2 here), and
// these mostly wait for heartbeats. An explicit -parallel is kept.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		if err := flag.Set("test.parallel", "4"); err != nil {
			panic(err)
		}
	}
	labtest.Main(m)
}

// ironic is one running Ironic (API + conductor, and the web server of its
// [deploy]http_root) of scripts/ironic.sh.
type ironic struct {
	URL string
	dir string
}

// runLimit bounds one `ironlab run` of a subtest, so that it ends (and the
// cleanups stop Ironic) well before go test's -timeout, whose panic would
// skip them. Measured: the longest subtest takes about 3 minutes here.
const runLimit = 8 * time.Minute

// freeTCPPort is a port on 127.0.0.1 that nothing listens on now.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	for range portSpan {
		p := portBase + int(nextPort.Add(1))%portSpan
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		return p
	}
	t.Fatalf("no free TCP port on 127.0.0.1 in %d-%d", portBase, portBase+portSpan-1)
	return 0
}

// The ports handed to Ironic come from below Linux's ephemeral range
// (32768-60999), one after another from a random start: a port taken from
// ":0" is an ephemeral one, which an outgoing connection of any process may
// take as its source port before Ironic binds it (a run failed on that:
// "Could not bind to 127.0.0.1:33627: Address already in use").
const (
	portBase = 20000
	portSpan = 12000
)

var nextPort = func() *atomic.Int64 {
	var n atomic.Int64
	n.Store(int64(os.Getpid()*7919) % portSpan)
	return &n
}()

// startIronic starts a standalone Ironic in a temp folder; cleanup stops it
// and, when the test failed, prints the conductor's errors. A start that
// fails because a port was taken in the meantime is tried again on other
// ports (three tries).
func startIronic(t *testing.T, requireTLS bool) *ironic {
	t.Helper()
	labtest.Require(t, "ironic-conductor")
	labtest.Require(t, "ironic-api")
	labtest.Require(t, "ipmitool")
	script, err := filepath.Abs("../../scripts/ironic.sh")
	if err != nil {
		t.Fatal(err)
	}
	for try := 1; ; try++ {
		dir := t.TempDir()
		port := freeTCPPort(t)
		args := []string{script, "start", dir, "--api-port", fmt.Sprint(port), "--rpc-port", fmt.Sprint(freeTCPPort(t)),
			"--http-port", fmt.Sprint(freeTCPPort(t)), "--callback-timeout", "90"}
		if requireTLS {
			args = append(args, "--require-tls")
		}
		ir := &ironic{URL: fmt.Sprintf("http://127.0.0.1:%d", port), dir: dir}
		out, err := exec.Command("bash", args...).CombinedOutput()
		if err != nil && try < 3 && ir.portTaken() {
			exec.Command("bash", script, "stop", dir).Run()
			t.Logf("scripts/ironic.sh start (try %d): a port was taken before Ironic bound it; trying other ports", try)
			continue
		}
		t.Cleanup(func() {
			if t.Failed() {
				ir.dumpErrors(t)
			}
			exec.Command("bash", script, "stop", dir).Run()
		})
		if err != nil {
			t.Fatalf("scripts/ironic.sh start: %v\n%s", err, out)
		}
		t.Logf("%s", bytes.TrimSpace(out))
		return ir
	}
}

// portTaken says whether Ironic's logs show it could not bind its port.
func (ir *ironic) portTaken() bool {
	for _, name := range []string{"ironic-conductor.log", "ironic-api.log", "http.out"} {
		b, _ := os.ReadFile(filepath.Join(ir.dir, "log", name))
		if bytes.Contains(b, []byte("Address already in use")) {
			return true
		}
	}
	return false
}

// dumpErrors logs the conductor's ERROR and WARNING lines (the reasons a
// node failed in Ironic's own words).
func (ir *ironic) dumpErrors(t *testing.T) {
	for _, name := range []string{"ironic-conductor.log", "ironic-api.log", "http.out"} {
		b, err := os.ReadFile(filepath.Join(ir.dir, "log", name))
		if err != nil {
			continue
		}
		var keep []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, " ERROR ") || strings.Contains(l, " WARNING ") || strings.Contains(l, "code 404") {
				if len(l) > 400 {
					l = l[:400] + "..."
				}
				keep = append(keep, l)
			}
		}
		if len(keep) > 60 {
			keep = keep[len(keep)-60:]
		}
		t.Logf("%s (errors and warnings, last %d):\n%s", name, len(keep), strings.Join(keep, "\n"))
	}
}

// run plays built-in scenarios with `ironlab run --driver-url` against ir.
// Past runLimit it is interrupted (SIGINT: it removes its nodes and stops
// its lab), then killed.
func run(t *testing.T, ir *ironic, scenarios ...string) string {
	t.Helper()
	results := t.TempDir()
	args := append([]string{"run", "--driver-url", ir.URL, "--results", results}, scenarios...)
	ctx, cancel := context.WithTimeout(context.Background(), runLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, labtest.Binary(t), args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 20 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("ironlab %s (%s):\n%s", strings.Join(args, " "), time.Since(start).Round(time.Second), out.String())
	if err != nil {
		t.Fatalf("ironlab run %s against Ironic: %v", strings.Join(scenarios, " "), err)
	}
	return out.String()
}

// The built-in scenarios, enrolled as a real Ironic needs (hardware types,
// deploy_kernel/deploy_ramdisk from the lab's image server) with nothing
// edited, pass against Debian's Ironic 21.4: with plain http agents, and
// with [agent]require_tls = True, where the fake agent's auto-TLS is what
// gets its heartbeats accepted.
//
// missed-heartbeat is the spec's watchdog, which Ironic does not have: the
// scenario says so (only: builtin) and is reported as not run.
//
// Four Ironics run in parallel (all mostly wait for heartbeats), the
// scenarios spread so that each takes about 3 minutes here; rescue runs
// with require_tls off (alone) and on (after redfish+qcow2).
func TestRealIronicRunsBuiltinScenarios(t *testing.T) {
	for _, tls := range []bool{false, true} {
		t.Run(fmt.Sprintf("require_tls=%v", tls), func(t *testing.T) {
			t.Parallel()
			ir := startIronic(t, tls)
			out := run(t, ir, "deploy", "erase", "missed-heartbeat")
			for _, want := range []string{
				"enrolled as ironic",
				"\ndeploy PASSED", "\nerase PASSED", "\nerase-metadata PASSED",
				"\nmissed-heartbeat NOT RUN: only for ironlab's driver",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("ironlab run's output lacks %q", want)
				}
			}
		})
	}
	t.Run("rescue,require_tls=false", func(t *testing.T) {
		t.Parallel()
		ir := startIronic(t, false)
		out := run(t, ir, "rescue")
		for _, want := range []string{"\nrescue PASSED", "\nrescue-failed PASSED"} {
			if !strings.Contains(out, want) {
				t.Errorf("ironlab run's output lacks %q", want)
			}
		}
	})
	// Redfish nodes enrolled as driver redfish (redfish_address, _system_id,
	// _username, _password, _verify_ca): the redfish scenario's PXE boots
	// through Redfish power and boot-override calls, with a late-power and
	// a 503 BMC; virtual-media's nodes boot the agent from a virtual CD:
	// Ironic builds the ISO (genisoimage, isolinux), serves it from its
	// http_root and inserts it, for cleaning, the deploy and cleaning again.
	//
	// qcow2 (here, where the runs are shortest) deploys a qcow2 image with a
	// config drive: Ironic passes the image on as disk_format qcow2 and
	// builds the config-2 ISO from the deploy request's meta_data and
	// user_data; the disk holds the raw image and the config drive reads
	// back.
	t.Run("redfish+qcow2+rescue,require_tls=true", func(t *testing.T) {
		t.Parallel()
		ir := startIronic(t, true)
		out := run(t, ir, "redfish", "virtual-media", "qcow2", "rescue")
		for _, want := range []string{"\nredfish PASSED", "\nvirtual-media PASSED", "\nqcow2 PASSED", "\nrescue PASSED", "\nrescue-failed PASSED"} {
			if !strings.Contains(out, want) {
				t.Errorf("ironlab run's output lacks %q", want)
			}
		}
		log := ir.log(t, "ironic-conductor.log")
		if n := strings.Count(log, "Inserted boot media http://127.0.0.1:"); n < 6 {
			t.Errorf("the conductor inserted boot media %d times, want 6 (2 nodes: clean, deploy, clean)", n)
		}
		if n := strings.Count(ir.log(t, "http.out"), `"GET /redfish/boot-`); n < 6 {
			t.Errorf("the boot ISOs were fetched from Ironic's http_root %d times, want 6", n)
		}
		// The agent, not Ironic, converted the image: Ironic handed it
		// the qcow2 URL as such.
		if !strings.Contains(log, "'disk_format': 'qcow2'") || !strings.Contains(log, "/images/demo-os.qcow2") {
			t.Errorf("the conductor's log shows no image_info with disk_format qcow2 and the .qcow2 URL")
		}
	})
}

// log is one of ir's log files.
func (ir *ironic) log(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ir.dir, "log", name))
	if err != nil {
		t.Errorf("read Ironic's %s: %v", name, err)
	}
	return string(b)
}
