package bmc

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
)

// The interfaces ipmitool reaches a BMC with: lanplus with each cipher suite,
// with none (ipmitool 1.8.19 discovers it with Get Channel Cipher Suites),
// and IPMI 1.5 lan.
var ipmitoolInterfaces = map[string][]string{
	"lanplus-C3":  {"-I", "lanplus", "-C", "3"},
	"lanplus-C17": {"-I", "lanplus", "-C", "17"},
	"lanplus":     {"-I", "lanplus"},
	"lan":         {"-I", "lan"},
}

var (
	offDisk  = simulator.BootConfig{Device: simulator.BootDisk, Persistent: true}
	powerRe  = regexp.MustCompile(`(?m)^Chassis Power is (on|off)$`)
	sysPower = regexp.MustCompile(`(?m)^System Power\s+: (on|off)$`)
)

func TestIpmitoolConformance(t *testing.T) {
	path := labtest.Require(t, "ipmitool")
	for name, iface := range ipmitoolInterfaces {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := bmctest.New("node-0")
			c := ipmitool{path: path, b: startBMC(t, m, Options{}), iface: iface, user: "admin", pass: "password"}

			// reported is what ipmitool says the power is, checked against the machine.
			reported := func(t *testing.T, want simulator.PowerState) {
				t.Helper()
				out := c.must(t, "power", "status")
				got := powerRe.FindStringSubmatch(out)
				if got == nil {
					t.Fatalf("power status printed %q, want \"Chassis Power is on|off\"", out)
				}
				p, _, _ := m.State()
				if simulator.PowerState(got[1]) != p || p != want {
					t.Fatalf("ipmitool reports %s, machine is %s, want %s", got[1], p, want)
				}
			}

			tests := []struct {
				name      string
				start     simulator.PowerState
				startBoot simulator.BootConfig
				args      []string
				wantOut   []string // substrings of ipmitool's output
				wantPower simulator.PowerState
				wantBoot  simulator.BootConfig
				wantActs  []simulator.PowerAction
			}{
				{name: "power status off", start: simulator.PowerOff, args: []string{"power", "status"},
					wantOut: []string{"Chassis Power is off\n"}, wantPower: simulator.PowerOff},
				{name: "power status on", start: simulator.PowerOn, args: []string{"power", "status"},
					wantOut: []string{"Chassis Power is on\n"}, wantPower: simulator.PowerOn},
				{name: "power on", start: simulator.PowerOff, args: []string{"power", "on"},
					wantOut: []string{"Chassis Power Control: Up/On"}, wantPower: simulator.PowerOn,
					wantActs: []simulator.PowerAction{simulator.ActionOn}},
				{name: "power off", start: simulator.PowerOn, args: []string{"power", "off"},
					wantOut: []string{"Chassis Power Control: Down/Off"}, wantPower: simulator.PowerOff,
					wantActs: []simulator.PowerAction{simulator.ActionOff}},
				{name: "power soft", start: simulator.PowerOn, args: []string{"power", "soft"},
					wantOut: []string{"Chassis Power Control: Soft"}, wantPower: simulator.PowerOff,
					wantActs: []simulator.PowerAction{simulator.ActionSoftOff}},
				{name: "power reset", start: simulator.PowerOn, args: []string{"power", "reset"},
					wantOut: []string{"Chassis Power Control: Reset"}, wantPower: simulator.PowerOn,
					wantActs: []simulator.PowerAction{simulator.ActionReset}},
				{name: "power cycle", start: simulator.PowerOn, args: []string{"power", "cycle"},
					wantOut: []string{"Chassis Power Control: Cycle"}, wantPower: simulator.PowerOn,
					wantActs: []simulator.PowerAction{simulator.ActionCycle}},
				{name: "chassis status", start: simulator.PowerOn, args: []string{"chassis", "status"},
					wantOut: []string{"System Power         : on"}, wantPower: simulator.PowerOn},
				{name: "bootdev pxe", start: simulator.PowerOff, args: []string{"chassis", "bootdev", "pxe"},
					wantOut: []string{"Set Boot Device to pxe"}, wantPower: simulator.PowerOff,
					wantBoot: simulator.BootConfig{Device: simulator.BootNetwork}},
				{name: "bootdev disk persistent efiboot", start: simulator.PowerOff,
					startBoot: simulator.BootConfig{Device: simulator.BootNetwork},
					args:      []string{"chassis", "bootdev", "disk", "options=persistent,efiboot"},
					wantOut:   []string{"Set Boot Device to disk"}, wantPower: simulator.PowerOff,
					wantBoot: simulator.BootConfig{Device: simulator.BootDisk, Persistent: true, UEFI: true}},
				{name: "bootparam get 5 disk", start: simulator.PowerOff,
					startBoot: simulator.BootConfig{Device: simulator.BootDisk, Persistent: true, UEFI: true},
					args:      []string{"chassis", "bootparam", "get", "5"},
					wantOut:   []string{"Boot Flag Valid", "Options apply to all future boots", "BIOS EFI boot", "Force Boot from default Hard-Drive"},
					wantPower: simulator.PowerOff, wantBoot: simulator.BootConfig{Device: simulator.BootDisk, Persistent: true, UEFI: true}},
				{name: "bootparam get 5 pxe once", start: simulator.PowerOff,
					startBoot: simulator.BootConfig{Device: simulator.BootNetwork},
					args:      []string{"chassis", "bootparam", "get", "5"},
					wantOut:   []string{"Boot Flag Valid", "Options apply to only next boot", "BIOS PC Compatible (legacy) boot", "Force PXE"},
					wantPower: simulator.PowerOff, wantBoot: simulator.BootConfig{Device: simulator.BootNetwork}},
				{name: "raw disable boot timeout", start: simulator.PowerOff, args: []string{"raw", "0x00", "0x08", "0x03", "0x08"},
					wantPower: simulator.PowerOff},
				{name: "raw uefi pxe persistent", start: simulator.PowerOff,
					args:      []string{"raw", "0x00", "0x08", "0x05", "0xe0", "0x04", "0x00", "0x00", "0x00"},
					wantPower: simulator.PowerOff, wantBoot: simulator.BootConfig{Device: simulator.BootNetwork, Persistent: true, UEFI: true}},
				{name: "raw uefi disk once", start: simulator.PowerOff,
					args:      []string{"raw", "0x00", "0x08", "0x05", "0xa0", "0x08", "0x00", "0x00", "0x00"},
					wantPower: simulator.PowerOff, wantBoot: simulator.BootConfig{Device: simulator.BootDisk, UEFI: true}},
				{name: "raw uefi supermicro disk", start: simulator.PowerOff,
					args:      []string{"raw", "0x00", "0x08", "0x05", "0xe0", "0x24", "0x00", "0x00", "0x00"},
					wantPower: simulator.PowerOff, wantBoot: simulator.BootConfig{Device: simulator.BootDisk, Persistent: true, UEFI: true}},
				{name: "mc info", start: simulator.PowerOff, args: []string{"mc", "info"},
					wantOut:   []string{"Device ID                 : 32", "IPMI Version              : 2.0", "Chassis Device"},
					wantPower: simulator.PowerOff},
				{name: "mc guid", start: simulator.PowerOff, args: []string{"mc", "guid"},
					wantOut: []string{"System GUID   : " + bmctest.UUID}, wantPower: simulator.PowerOff},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					startBoot := tc.startBoot
					if startBoot == (simulator.BootConfig{}) {
						startBoot = offDisk
					}
					m.SetState(tc.start, startBoot)
					out := c.must(t, tc.args...)
					for _, w := range tc.wantOut {
						if !strings.Contains(out, w) {
							t.Errorf("ipmitool %s: output lacks %q:\n%s", strings.Join(tc.args, " "), w, out)
						}
					}
					wantBoot := tc.wantBoot
					if wantBoot == (simulator.BootConfig{}) {
						wantBoot = startBoot
					}
					p, boot, acts := m.State()
					if p != tc.wantPower {
						t.Errorf("machine power %s, want %s", p, tc.wantPower)
					}
					if d := cmp.Diff(wantBoot, boot); d != "" {
						t.Errorf("machine boot config (-want +got):\n%s", d)
					}
					if d := cmp.Diff(tc.wantActs, bmctest.Collapsed(acts)); d != "" { // resends repeat an action
						t.Errorf("machine power actions (-want +got):\n%s", d)
					}
					if tc.args[0] == "power" || tc.args[0] == "chassis" && tc.args[1] == "status" {
						reported(t, tc.wantPower)
					}
					if tc.args[0] == "chassis" && tc.args[1] == "status" {
						if got := sysPower.FindStringSubmatch(out); got == nil || simulator.PowerState(got[1]) != p {
							t.Errorf("chassis status says %v, machine is %s", got, p)
						}
					}
				})
			}

			t.Run("boot timeout param read back", func(t *testing.T) {
				c.must(t, "raw", "0x00", "0x08", "0x03", "0x08")
				out := c.must(t, "raw", "0x00", "0x09", "0x03", "0x00", "0x00")
				if got := strings.TrimSpace(out); got != "01 03 08" {
					t.Errorf("get boot option 3 = %q, want \"01 03 08\"", got)
				}
			})
			t.Run("unsupported command answers 0xC1", func(t *testing.T) {
				out, err := c.run(t, "raw", "0x06", "0x04") // Get Self Test Results
				if err == nil || !strings.Contains(out, "rsp=0xc1") {
					t.Errorf("Get Self Test Results: err=%v out=%q, want completion code 0xc1", err, out)
				}
			})
		})
	}
}

func TestIpmitoolWrongPassword(t *testing.T) {
	path := labtest.Require(t, "ipmitool")
	for name, iface := range ipmitoolInterfaces {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := bmctest.New("node-0")
			b := startBMC(t, m, Options{})
			for _, tc := range []struct {
				name, user, pass string
				faults           Faults
			}{
				{name: "wrong password", user: "admin", pass: "passw0rd"},
				{name: "wrong user", user: "root", pass: "password"},
				{name: "refused by fault", user: "admin", pass: "password", faults: Faults{RefuseCredentials: true}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					b.SetFaults(tc.faults)
					defer b.SetFaults(Faults{})
					c := ipmitool{path: path, b: b, iface: iface, user: tc.user, pass: tc.pass, extra: []string{"-R", "1", "-N", "1"}}
					for _, args := range [][]string{{"power", "on"}, {"chassis", "bootdev", "pxe"}} {
						out, err := c.run(t, args...)
						if err == nil {
							t.Errorf("ipmitool %s with %s/%s succeeded:\n%s", strings.Join(args, " "), tc.user, tc.pass, out)
						}
					}
					p, boot, acts := m.State()
					if p != simulator.PowerOff || boot != offDisk || len(acts) != 0 {
						t.Errorf("machine changed: power %s boot %+v actions %v", p, boot, acts)
					}
				})
			}
			// And the right password works again once the fault is cleared.
			c := ipmitool{path: path, b: b, iface: iface, user: "admin", pass: "password"}
			c.must(t, "power", "on")
			if p, _, _ := m.State(); p != simulator.PowerOn {
				t.Errorf("after faults cleared: power %s, want on", p)
			}
		})
	}
}

func TestIpmitoolFaults(t *testing.T) {
	path := labtest.Require(t, "ipmitool")
	t.Parallel()
	m := bmctest.New("node-0")
	b := startBMC(t, m, Options{})
	c := ipmitool{path: path, b: b, iface: []string{"-I", "lanplus"}, user: "admin", pass: "password", extra: []string{"-R", "1", "-N", "1"}}

	b.SetFaults(Faults{NoAnswer: true})
	if out, err := c.run(t, "power", "on"); err == nil {
		t.Errorf("power on against a BMC that does not answer succeeded:\n%s", out)
	}
	b.SetFaults(Faults{Delay: Duration(100 * time.Millisecond)})
	c.extra = []string{"-R", "3", "-N", "2"}
	c.must(t, "power", "on")
	if p, _, acts := m.State(); p != simulator.PowerOn || !slices.Equal(bmctest.Collapsed(acts), []simulator.PowerAction{simulator.ActionOn}) {
		t.Errorf("slow BMC: power %s actions %v, want on once", p, acts)
	}
	b.SetFaults(Faults{})
	c.must(t, "power", "status")
}

// BenchmarkIpmitoolPowerStatus runs whole `ipmitool -I lanplus -C 3 power
// status` processes against one BMC and reports their median wall time.
// "as-installed" is ipmitool as a user runs it: before its first packet,
// ipmitool 1.8.19 loads the IANA enterprise-number registry
// (/usr/share/misc/enterprise-numbers.txt, 4.7 MB on Debian 12), about 17 of
// its ~24 ms here; "small-registry" points HOME at a registry of one entry
// (ipmitool reads $HOME/.local/usr/share/misc/enterprise-numbers.txt first),
// which leaves process start (~3 ms) and the session (11 round trips, ~4 ms).
// "no-bmc" is the floor of the first: the same command as installed with no
// -H, which loads the registry and exits with "No hostname specified!"
// before any packet; no BMC can answer ipmitool faster than that.
func BenchmarkIpmitoolPowerStatus(b *testing.B) {
	path := labtest.Require(b, "ipmitool")
	small := b.TempDir()
	reg := filepath.Join(small, ".local", "usr", "share", "misc")
	if err := os.MkdirAll(reg, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(reg, "enterprise-numbers.txt"), []byte("0\n  Reserved\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Run("no-bmc", func(b *testing.B) {
		var took []time.Duration
		for range b.N {
			t0 := time.Now()
			out, err := exec.Command(path, "-I", "lanplus", "-U", "admin", "-P", "password", "power", "status").CombinedOutput()
			took = append(took, time.Since(t0))
			if err == nil || !strings.Contains(string(out), "No hostname specified") {
				b.Fatalf("ipmitool power status without -H: %v\n%s", err, out)
			}
		}
		b.StopTimer()
		slices.Sort(took)
		b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "median-ms")
	})
	for _, c := range []struct{ name, home string }{{"as-installed", ""}, {"small-registry", small}} {
		b.Run(c.name, func(b *testing.B) {
			bmc := startBMC(b, bmctest.New("bench"), Options{})
			args := []string{"-I", "lanplus", "-C", "3", "-H", bmc.Addr().Addr().String(), "-p", strconv.Itoa(int(bmc.Addr().Port())),
				"-U", "admin", "-P", "password", "power", "status"}
			var took []time.Duration
			b.ResetTimer()
			for range b.N {
				cmd := exec.Command(path, args...)
				if c.home != "" {
					cmd.Env = append(os.Environ(), "HOME="+c.home)
				}
				t0 := time.Now()
				out, err := cmd.CombinedOutput()
				took = append(took, time.Since(t0))
				if err != nil || !strings.Contains(string(out), "Chassis Power is off") {
					b.Fatalf("ipmitool power status: %v\n%s", err, out)
				}
			}
			b.StopTimer()
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "median-ms")
		})
	}
}
