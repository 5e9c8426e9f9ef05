package ipmitool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bmc"
	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
)

func startBMC(t *testing.T, m simulator.Machine) *bmc.BMC {
	t.Helper()
	b, err := bmc.New(m, "127.0.0.1:0", bmc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b.Start(context.Background())
	t.Cleanup(func() { b.Close() })
	return b
}

func infoFor(b *bmc.BMC, extra map[string]any) power.DriverInfo {
	info := power.DriverInfo{
		"ipmi_address":  b.Addr().Addr().String(),
		"ipmi_port":     float64(b.Addr().Port()), // as decoded from JSON
		"ipmi_username": "admin",
		"ipmi_password": "password",
	}
	for k, v := range extra {
		info[k] = v
	}
	return info
}

var fast = Config{MinCommandInterval: 10 * time.Millisecond, PollInterval: 10 * time.Millisecond, PowerStateTimeout: 5 * time.Second, CommandRetryTimeout: 3 * time.Second}

func TestPowerAgainstBMC(t *testing.T) {
	labtest.Require(t, "ipmitool")
	for name, extra := range map[string]map[string]any{
		"lanplus":  nil,
		"suite 3":  {"ipmi_cipher_suite": "3"},
		"suite 17": {"ipmi_cipher_suite": float64(17)},
		"lan 1.5":  {"ipmi_protocol_version": "1.5"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			m := bmctest.New("node-1")
			info := infoFor(startBMC(t, m), extra)
			p := New(fast)
			if err := p.Validate(info); err != nil {
				t.Fatal(err)
			}
			check := func(want simulator.PowerState, wantState power.State) {
				t.Helper()
				st, err := p.GetPowerState(ctx, info)
				if err != nil {
					t.Fatal(err)
				}
				got, _, _ := m.State()
				if got != want || st != wantState {
					t.Fatalf("driver says %q, machine is %s; want %s", st, got, want)
				}
			}
			check(simulator.PowerOff, power.Off)
			for _, step := range []struct {
				target power.State
				want   simulator.PowerState
				acts   []simulator.PowerAction
			}{
				{power.On, simulator.PowerOn, []simulator.PowerAction{simulator.ActionOn}},
				{power.Reboot, simulator.PowerOn, []simulator.PowerAction{simulator.ActionOff, simulator.ActionOn}},
				{power.SoftOff, simulator.PowerOff, []simulator.PowerAction{simulator.ActionSoftOff}},
				{power.Reboot, simulator.PowerOn, []simulator.PowerAction{simulator.ActionOn}},
				{power.Off, simulator.PowerOff, []simulator.PowerAction{simulator.ActionOff}},
			} {
				p0, b0, _ := m.State()
				m.SetState(p0, b0)
				if err := p.SetPowerState(ctx, info, step.target); err != nil {
					t.Fatalf("%s: %v", step.target, err)
				}
				_, _, acts := m.State()
				if d := cmp.Diff(step.acts, bmctest.Collapsed(acts)); d != "" { // resends repeat an action
					t.Errorf("%s: machine power actions (-want +got):\n%s", step.target, d)
				}
				check(step.want, map[simulator.PowerState]power.State{simulator.PowerOn: power.On, simulator.PowerOff: power.Off}[step.want])
			}
			for _, tc := range []struct {
				dev  power.Device
				opts power.BootOptions
				want simulator.BootConfig
			}{
				{power.PXE, power.BootOptions{}, simulator.BootConfig{Device: simulator.BootNetwork}},
				{power.Disk, power.BootOptions{Persistent: true}, simulator.BootConfig{Device: simulator.BootDisk, Persistent: true}},
				{power.PXE, power.BootOptions{UEFI: true}, simulator.BootConfig{Device: simulator.BootNetwork, UEFI: true}},
				{power.Disk, power.BootOptions{UEFI: true, Persistent: true}, simulator.BootConfig{Device: simulator.BootDisk, Persistent: true, UEFI: true}},
			} {
				if err := p.SetBootDevice(ctx, info, tc.dev, tc.opts); err != nil {
					t.Fatal(err)
				}
				if _, got, _ := m.State(); got != tc.want {
					t.Errorf("boot device %s %+v: machine boots %+v, want %+v", tc.dev, tc.opts, got, tc.want)
				}
			}
		})
	}
}

func TestArgsAsIronic(t *testing.T) {
	p := New(Config{})
	for name, tc := range map[string]struct {
		info power.DriverInfo
		want string
	}{
		"lanplus": {power.DriverInfo{"ipmi_address": "127.0.0.1", "ipmi_port": "6231", "ipmi_username": "admin"},
			"-I lanplus -H 127.0.0.1 -L ADMINISTRATOR -p 6231 -U admin -R 1 -N 5 -f /pw power status"},
		"lan and default port": {power.DriverInfo{"ipmi_address": "127.0.0.5", "ipmi_protocol_version": "1.5"},
			"-I lan -H 127.0.0.5 -L ADMINISTRATOR -p 623 -R 1 -N 5 -f /pw power status"},
		"cipher suite": {power.DriverInfo{"ipmi_address": "127.0.0.1", "ipmi_cipher_suite": 3},
			"-I lanplus -H 127.0.0.1 -L ADMINISTRATOR -p 623 -C 3 -R 1 -N 5 -f /pw power status"},
	} {
		t.Run(name, func(t *testing.T) {
			bi, err := ParseInfo(tc.info)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(p.Args(bi, "/pw", "power", "status"), " "); got != tc.want {
				t.Errorf("args\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	p := New(Config{})
	if err := p.Validate(power.DriverInfo{"ipmi_port": 623}); !errors.Is(err, power.ErrMissingInfo) {
		t.Errorf("no address: %v, want ErrMissingInfo", err)
	}
	for _, bad := range []power.DriverInfo{
		{"ipmi_address": "127.0.0.1", "ipmi_port": "http"},
		{"ipmi_address": "127.0.0.1", "ipmi_protocol_version": "3"},
		{"ipmi_address": "127.0.0.1", "ipmi_cipher_suite": "aes"},
	} {
		if err := p.Validate(bad); err == nil {
			t.Errorf("Validate(%v) accepted", bad)
		}
	}
}

// A BMC that does not answer is an error that names it, within the command's
// bounds, never a hang.
func TestDeadBMC(t *testing.T) {
	labtest.Require(t, "ipmitool")
	m := bmctest.New("node-2")
	b := startBMC(t, m)
	b.SetFaults(bmc.Faults{NoAnswer: true})
	p := New(Config{MinCommandInterval: time.Second, CommandRetryTimeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := p.GetPowerState(ctx, infoFor(b, nil))
	if err == nil || !strings.Contains(err.Error(), b.Addr().String()) || !errors.Is(err, ErrCommand) {
		t.Fatalf("GetPowerState of a dead BMC: %v; want ErrCommand naming %s", err, b.Addr())
	}
	if ctx.Err() != nil {
		t.Fatal("took the whole context deadline")
	}
	// A cancelled context ends a command at once.
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := p.SetPowerState(ctx2, infoFor(b, nil), power.On); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v, want context.Canceled", err)
	}
}

// Commands to one BMC are MinCommandInterval apart.
func TestMinCommandInterval(t *testing.T) {
	labtest.Require(t, "ipmitool")
	b := startBMC(t, bmctest.New("node-3"))
	p := New(Config{MinCommandInterval: 300 * time.Millisecond})
	info := infoFor(b, nil)
	var starts []time.Time
	for range 3 {
		if _, err := p.GetPowerState(context.Background(), info); err != nil {
			t.Fatal(err)
		}
		starts = append(starts, p.slot(b.Addr().String()).last)
	}
	if !slices.IsSortedFunc(starts, func(a, b time.Time) int { return a.Compare(b) }) {
		t.Fatal("commands out of order")
	}
	for i := 1; i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < 300*time.Millisecond {
			t.Errorf("commands %d and %d to one BMC %s apart, want >= 300ms", i-1, i, gap)
		}
	}
}

// TestSmallRegistry: ipmitool runs with a HOME whose IANA registry is one
// entry (it loads that instead of the system's 4.7 MB), and with the
// caller's HOME under FullRegistry.
func TestSmallRegistry(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "ipmitool")
	script := `#!/bin/sh
f="$HOME/.local/usr/share/misc/enterprise-numbers.txt"
if [ -f "$f" ] && [ "$(wc -c < "$f")" -lt 100 ]; then echo "Chassis Power is on"; else echo "Chassis Power is off"; fi
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	info := power.DriverInfo{"ipmi_address": "127.0.0.1", "ipmi_port": float64(6230), "ipmi_username": "admin", "ipmi_password": "password"}
	t.Setenv("HOME", dir) // the caller's: no registry there
	for _, tc := range []struct {
		full bool
		want power.State
	}{{false, power.On}, {true, power.Off}} {
		cfg := fast
		cfg.Binary, cfg.FullRegistry = fake, tc.full
		st, err := New(cfg).GetPowerState(context.Background(), info)
		if err != nil || st != tc.want {
			t.Errorf("FullRegistry %v: power %q, %v; want %q (%q: a small registry in HOME)", tc.full, st, err, tc.want, power.On)
		}
	}
}

// BenchmarkGetPowerState is one "power status" through the interface (a
// whole real ipmitool run) against one BMC, with the small registry and
// with ipmitool's whole one.
func BenchmarkGetPowerState(b *testing.B) {
	labtest.Require(b, "ipmitool")
	for _, full := range []bool{false, true} {
		b.Run(map[bool]string{false: "small-registry", true: "full-registry"}[full], func(b *testing.B) {
			br, err := bmc.New(bmctest.New("node-1"), "127.0.0.1:0", bmc.Options{})
			if err != nil {
				b.Fatal(err)
			}
			br.Start(context.Background())
			defer br.Close()
			cfg := fast
			cfg.MinCommandInterval, cfg.FullRegistry = time.Nanosecond, full
			p := New(cfg)
			info := infoFor(br, nil)
			b.ResetTimer()
			for range b.N {
				if st, err := p.GetPowerState(context.Background(), info); err != nil || st != power.Off {
					b.Fatalf("power %q, %v", st, err)
				}
			}
		})
	}
}
