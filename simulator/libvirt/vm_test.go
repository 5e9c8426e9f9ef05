package libvirtvm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"

	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator"
)

// connect reaches libvirt or skips; under CI=true an unreachable libvirt
// fails the test, since scripts/vm-deps.sh must have started it.
func connect(t testing.TB) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Connect(ctx, ConnOptions{})
	if err != nil {
		labtest.Missing(t, fmt.Sprintf("libvirtd (%v)", err), "scripts/vm-deps.sh as root (libvirt-daemon-system, qemu-system-x86; starts libvirtd)")
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// vmDir is a temp folder libvirt's qemu user can traverse.
func vmDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	for _, p := range []string{filepath.Dir(d), d} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// newFleet makes a TCG fleet whose teardown the test checks.
func newFleet(t testing.TB, c *Conn, pxe PXEMode) *Fleet {
	t.Helper()
	dir := vmDir(t)
	lab := fmt.Sprintf("t%d", time.Now().UnixNano()%1e9)
	f, err := NewFleet(context.Background(), c, FleetConfig{
		Lab: lab, StateDir: filepath.Join(dir, "state"), BootDir: filepath.Join(dir, "boot"),
		Accel: AccelTCG, PXE: pxe, // 256 MiB: the initramfs unpacks a ~30 MB binary into RAM
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(context.Background()) })
	return f
}

// waitConsole waits until the machine's serial log contains want.
func waitConsole(t testing.TB, m *Machine, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		log, err := m.ConsoleLog()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(log, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q on the serial console after %v; console:\n%s", m.DomainName(), want, timeout, tail(log, 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// writeImage puts a test image onto a machine's disk file, as the agent would.
func writeImage(t testing.TB, m *Machine, id string) images.Info {
	t.Helper()
	f, err := os.OpenFile(m.DiskPath(), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := images.Build(f, images.Spec{ID: id, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// TestDiskBootShowsMarkerAndTeardownLeavesNothing defines a domain, boots a
// test image from its disk, reads the image's marker on the serial console,
// then tears the lab down and checks no domain and no disk file is left.
func TestDiskBootShowsMarkerAndTeardownLeavesNothing(t *testing.T) {
	c := connect(t)
	f := newFleet(t, c, PXEDirect)
	ctx := context.Background()
	m, err := f.Add(ctx, NodeSpec{Name: "node-0", UUID: "8f7c1b4e-0000-4000-8000-000000000001", MAC: "52:54:00:10:00:01",
		Boot: simulator.BootConfig{Device: simulator.BootDisk, Persistent: true}})
	if err != nil {
		t.Fatal(err)
	}
	if a, why := f.Accel(); a != AccelTCG {
		t.Fatalf("accel %s (%s), want tcg", a, why)
	}
	info := writeImage(t, m, "disk-boot")
	if err := m.SetPower(ctx, simulator.ActionOn); err != nil {
		t.Fatal(err)
	}
	if p, err := m.Power(ctx); err != nil || p != simulator.PowerOn {
		t.Fatalf("Power = %v, %v; want on", p, err)
	}
	waitConsole(t, m, info.Marker(), 60*time.Second)

	disk, name := m.DiskPath(), m.DomainName()
	if err := f.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(disk); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("disk file %s still there after teardown (stat: %v)", disk, err)
	}
	if _, err := c.lv.DomainLookupByName(name); !libvirt.IsNotFound(err) {
		t.Errorf("domain %s still defined after teardown (lookup: %v)", name, err)
	}
	if _, err := os.Stat(m.ConsolePath()); err != nil {
		t.Errorf("console log should stay for the results: %v", err)
	}
}

// TestAccelAuto: auto settles on KVM only when a probe boot works, and says
// why; without /dev/kvm it is TCG without any probe.
func TestAccelAuto(t *testing.T) {
	c := connect(t)
	dir := vmDir(t)
	f, err := NewFleet(context.Background(), c, FleetConfig{
		Lab: "accel", StateDir: filepath.Join(dir, "s"), BootDir: filepath.Join(dir, "b"), Accel: AccelAuto,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close(context.Background())
	a, why := f.Accel()
	t.Logf("accel auto -> %s (%s)", a, why)
	if why == "" || (a != AccelKVM && a != AccelTCG) {
		t.Fatalf("accel %q (%q)", a, why)
	}
	if _, err := os.Stat("/dev/kvm"); err != nil && a != AccelTCG {
		t.Fatalf("no /dev/kvm but accel %s", a)
	}
}

// TestCleanStaleRemovesCrashedRuns: a domain whose owner process is gone is
// removed with its disk at the next start; a live owner's is kept.
func TestCleanStaleRemovesCrashedRuns(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	dir := vmDir(t)
	disk := filepath.Join(dir, "stale.raw")
	if err := createSparse(disk, 1<<20); err != nil {
		t.Fatal(err)
	}
	s := testSpec()
	s.Name = fmt.Sprintf("ironlab-stale%d-node-0", os.Getpid())
	s.Disk, s.Console = disk, filepath.Join(dir, "stale.log")
	s.Meta = nodeMeta{UUID: "u", Lab: "stale", Node: "node-0", PID: 1 << 30, Disk: disk} // no such pid
	x, _ := newDomain(s).Marshal()
	if _, err := c.lv.DomainDefineXML(x); err != nil {
		t.Fatal(err)
	}
	live := s
	live.Name += "-live"
	live.Meta.PID, live.Meta.Disk = os.Getpid(), ""
	x, _ = newDomain(live).Marshal()
	dom, err := c.lv.DomainDefineXML(x)
	if err != nil {
		t.Fatal(err)
	}
	defer removeDomain(ctx, c, dom, "")

	removed, err := CleanStale(ctx, c, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, s.Name) || slices.Contains(removed, live.Name) {
		t.Fatalf("CleanStale removed %v; want %s and not %s", removed, s.Name, live.Name)
	}
	if _, err := os.Stat(disk); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale disk still there: %v", err)
	}
	if _, err := c.lv.DomainLookupByName(live.Name); err != nil {
		t.Errorf("live owner's domain removed: %v", err)
	}
}
