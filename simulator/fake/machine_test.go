package fake

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/simulator"
)

type countingBoot struct{ running, boots atomic.Int32 }

func (c *countingBoot) NetBoot(ctx context.Context, m simulator.Machine) error {
	c.boots.Add(1)
	c.running.Add(1)
	defer c.running.Add(-1)
	<-ctx.Done()
	return nil
}

func newMachine(t *testing.T, nb simulator.NetBooter) *Machine {
	t.Helper()
	disk := filepath.Join(t.TempDir(), "disk0")
	m, err := New(Options{Name: "n0", UUID: "u0", NetBoot: nb, Hardware: simulator.Hardware{
		Disks: []simulator.Disk{{Name: "vda", SizeBytes: 1 << 20, Path: disk}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestDiskIsSparseFileOfSize(t *testing.T) {
	m := newMachine(t, nil)
	st, err := os.Stat(m.Hardware().Disks[0].Path)
	if err != nil || st.Size() != 1<<20 {
		t.Fatalf("disk file: %v size %d", err, st.Size())
	}
}

func TestNetworkBootRunsUntilPowerOff(t *testing.T) {
	nb := &countingBoot{}
	m := newMachine(t, nb)
	ctx := context.Background()
	m.SetBootConfig(ctx, simulator.BootConfig{Device: simulator.BootNetwork})
	if err := m.SetPower(ctx, simulator.ActionOn); err != nil {
		t.Fatal(err)
	}
	if st, _ := m.Power(ctx); st != simulator.PowerOn {
		t.Fatalf("power %s after on", st)
	}
	if err := m.SetPower(ctx, simulator.ActionOff); err != nil {
		t.Fatal(err)
	}
	if nb.boots.Load() != 1 || nb.running.Load() != 0 {
		t.Errorf("net boots %d, still running %d; want 1 boot that stopped at power off", nb.boots.Load(), nb.running.Load())
	}
	// One-time network boot is spent: the next boot is from disk.
	if b, _ := m.BootConfig(ctx); b.Device != simulator.BootDisk {
		t.Errorf("boot device after a one-time network boot = %s, want disk", b.Device)
	}
}

func TestPersistentNetworkBootAndReset(t *testing.T) {
	nb := &countingBoot{}
	m := newMachine(t, nb)
	ctx := context.Background()
	m.SetBootConfig(ctx, simulator.BootConfig{Device: simulator.BootNetwork, Persistent: true})
	m.SetPower(ctx, simulator.ActionOn)
	m.SetPower(ctx, simulator.ActionReset)
	m.SetPower(ctx, simulator.ActionOff)
	if nb.boots.Load() != 2 {
		t.Errorf("net boots = %d, want 2 (on, then reset)", nb.boots.Load())
	}
}

func TestDiskBootPrintsImageMarker(t *testing.T) {
	m := newMachine(t, nil)
	ctx := context.Background()
	var img bytes.Buffer
	info, err := images.Build(&img, images.Spec{ID: "os-1", Size: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.Hardware().Disks[0].Path, img.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	m.SetPower(ctx, simulator.ActionOn)
	log, _ := m.ConsoleLog()
	if !strings.Contains(log, info.Marker()) {
		t.Errorf("console %q lacks marker %q", log, info.Marker())
	}
}

func TestBlankDiskDoesNotBoot(t *testing.T) {
	m := newMachine(t, nil)
	m.SetPower(context.Background(), simulator.ActionOn)
	log, _ := m.ConsoleLog()
	if strings.Contains(log, "IRONLAB-IMAGE") || !strings.Contains(log, "not bootable") {
		t.Errorf("console of a blank disk: %q", log)
	}
}

func TestFailBootFault(t *testing.T) {
	nb := &countingBoot{}
	m := newMachine(t, nb)
	ctx := context.Background()
	m.SetFaults(Faults{FailBoot: true})
	m.SetBootConfig(ctx, simulator.BootConfig{Device: simulator.BootNetwork, Persistent: true})
	m.SetPower(ctx, simulator.ActionOn)
	if nb.boots.Load() != 0 {
		t.Errorf("a machine that fails to boot ran its network boot")
	}
}

// A CD boot fetches the inserted image (loopback only) and runs what the
// lab boots; a failed fetch is a boot failure on the console; setup stops.
func TestVirtualCDBoot(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/agent.iso" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("CD001"))
	}))
	defer srv.Close()
	nb := &countingBoot{}
	m := newMachine(t, nb)
	ctx := context.Background()
	if err := m.InsertMedia(ctx, "http://192.0.2.1/agent.iso"); err == nil {
		t.Fatal("a non-loopback image URL was accepted")
	}
	if err := m.SetBootConfig(ctx, simulator.BootConfig{Device: simulator.BootCD}); err != nil {
		t.Fatal(err)
	}
	m.SetPower(ctx, simulator.ActionOn)
	if log, _ := m.ConsoleLog(); !strings.Contains(log, "boot failed: virtual CD: no media inserted") {
		t.Fatalf("empty drive: console %q", log)
	}
	m.SetPower(ctx, simulator.ActionOff)

	for _, c := range []struct {
		url, want string
		boots     int32
	}{
		{srv.URL + "/agent.iso", "virtual CD: booting " + srv.URL + "/agent.iso (5 bytes, sha256 ", 1},
		{srv.URL + "/gone.iso", "boot failed: virtual CD " + srv.URL + "/gone.iso: fetch: HTTP 404 Not Found", 1},
	} {
		if err := m.InsertMedia(ctx, c.url); err != nil {
			t.Fatal(err)
		}
		m.SetBootConfig(ctx, simulator.BootConfig{Device: simulator.BootCD})
		m.SetPower(ctx, simulator.ActionOn)
		deadline := time.Now().Add(10 * time.Second)
		for {
			log, _ := m.ConsoleLog()
			if strings.Contains(log, c.want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("console %q lacks %q", log, c.want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if got := nb.boots.Load(); got != c.boots {
			t.Fatalf("%s: the lab's system ran %d times, want %d", c.url, got, c.boots)
		}
		if bc, _ := m.BootConfig(ctx); bc.Device != simulator.BootDisk {
			t.Fatalf("the one-time CD boot did not revert: %+v", bc)
		}
		m.SetPower(ctx, simulator.ActionOff)
	}
	m.EjectMedia(ctx)
	if m.Media() != "" {
		t.Fatalf("after eject: %q", m.Media())
	}
	m.SetBootConfig(ctx, simulator.BootConfig{Device: simulator.BootSetup, Persistent: true})
	m.SetPower(ctx, simulator.ActionOn)
	if log, _ := m.ConsoleLog(); !strings.HasSuffix(log, "firmware setup: waiting at the setup menu\n") {
		t.Fatalf("setup boot: console %q", log)
	}
}
