package native

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/driver/power"
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
		"ipmi_port":     float64(b.Addr().Port()),
		"ipmi_username": "admin",
		"ipmi_password": "password",
	}
	for k, v := range extra {
		info[k] = v
	}
	return info
}

var fast = Config{Timeout: time.Second, PollInterval: 10 * time.Millisecond, PowerStateTimeout: 5 * time.Second}

func TestNativeAgainstBMC(t *testing.T) {
	for name, extra := range map[string]map[string]any{
		"lanplus":  nil,
		"suite 3":  {"ipmi_cipher_suite": "3"},
		"suite 17": {"ipmi_cipher_suite": "17"},
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
				got, _, acts := m.State()
				if d := cmp.Diff(step.acts, bmctest.Collapsed(acts)); d != "" { // resends repeat an action
					t.Errorf("%s: machine power actions (-want +got):\n%s", step.target, d)
				}
				st, err := p.GetPowerState(ctx, info)
				if err != nil {
					t.Fatal(err)
				}
				if got != step.want || string(st) != "power "+string(step.want) {
					t.Errorf("%s: driver says %q, machine is %s, want %s", step.target, st, got, step.want)
				}
			}
			for _, tc := range []struct {
				dev  power.Device
				opts power.BootOptions
				want simulator.BootConfig
			}{
				{power.PXE, power.BootOptions{}, simulator.BootConfig{Device: simulator.BootNetwork}},
				{power.Disk, power.BootOptions{Persistent: true}, simulator.BootConfig{Device: simulator.BootDisk, Persistent: true}},
				{power.PXE, power.BootOptions{UEFI: true, Persistent: true}, simulator.BootConfig{Device: simulator.BootNetwork, Persistent: true, UEFI: true}},
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

func TestNativeWrongPassword(t *testing.T) {
	for name, extra := range map[string]map[string]any{"lanplus": nil, "lan 1.5": {"ipmi_protocol_version": "1.5"}} {
		t.Run(name, func(t *testing.T) {
			m := bmctest.New("node-1")
			bad := map[string]any{"ipmi_password": "wrong"}
			for k, v := range extra {
				bad[k] = v
			}
			info := infoFor(startBMC(t, m), bad)
			err := New(fast).SetPowerState(context.Background(), info, power.On)
			if !errors.Is(err, ErrIPMI) {
				t.Fatalf("wrong password: %v, want ErrIPMI", err)
			}
			if p, boot, acts := m.State(); p != simulator.PowerOff || boot.Device != simulator.BootDisk || len(acts) != 0 {
				t.Errorf("machine changed: %s %+v %v", p, boot, acts)
			}
		})
	}
}

func TestNativeDeadBMC(t *testing.T) {
	b := startBMC(t, bmctest.New("node-2"))
	b.SetFaults(bmc.Faults{NoAnswer: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := New(Config{Timeout: 200 * time.Millisecond, Retries: 1}).GetPowerState(ctx, infoFor(b, nil))
	if !errors.Is(err, ErrIPMI) || !strings.Contains(err.Error(), b.Addr().String()) {
		t.Fatalf("dead BMC: %v; want ErrIPMI naming %s", err, b.Addr())
	}
	if ctx.Err() != nil {
		t.Fatal("took the whole context deadline")
	}
}
