package redfish

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bmc"
	"github.com/ironlab/ironlab/simulator/fake"
	rfsim "github.com/ironlab/ironlab/simulator/redfish"
)

type bmcLab struct {
	svc      *rfsim.Service
	machines []*fake.Machine
	ca       string
}

// startBMC serves n fake machines from one https Redfish service (the
// test's peer: the driver reaches it over HTTP only).
func startBMC(t *testing.T, n int) *bmcLab {
	t.Helper()
	svc, err := rfsim.New(rfsim.Options{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	l := &bmcLab{svc: svc}
	for i := range n {
		m, err := fake.New(fake.Options{Name: "node-" + string(rune('0'+i)), UUID: "11111111-2222-4333-8444-00000000000" + string(rune('0'+i)),
			Hardware: simulator.Hardware{Disks: []simulator.Disk{{Name: "sda", SizeBytes: 1 << 20, Path: filepath.Join(t.TempDir(), "sda")}}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		if _, err := svc.Add(m); err != nil {
			t.Fatal(err)
		}
		l.machines = append(l.machines, m)
	}
	if err := svc.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	l.ca = filepath.Join(t.TempDir(), "bmc-ca.pem")
	if err := os.WriteFile(l.ca, svc.CACertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *bmcLab) info(i int, extra ...string) power.DriverInfo {
	di := power.DriverInfo{
		"redfish_address":   l.svc.URL(),
		"redfish_system_id": "/redfish/v1/Systems/" + l.machines[i].UUID(),
		"redfish_username":  "admin",
		"redfish_password":  "password",
		"redfish_verify_ca": l.ca,
	}
	for j := 0; j+1 < len(extra); j += 2 {
		di[extra[j]] = extra[j+1]
	}
	return di
}

func machinePower(t *testing.T, m simulator.Machine) simulator.PowerState {
	p, err := m.Power(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPowerAndBootThroughRedfish(t *testing.T) {
	l := startBMC(t, 2)
	ctx := context.Background()
	for _, auth := range []string{"basic", "session", "auto"} {
		t.Run(auth, func(t *testing.T) {
			p := New(Config{PollInterval: 10 * time.Millisecond})
			di := l.info(1, "redfish_auth_type", auth)
			m := l.machines[1]
			for _, step := range []struct {
				target power.State
				want   simulator.PowerState
			}{
				{power.On, simulator.PowerOn},
				{power.Reboot, simulator.PowerOn},
				{power.SoftOff, simulator.PowerOff},
				{power.Reboot, simulator.PowerOn}, // off: reboot powers on
				{power.Off, simulator.PowerOff},
			} {
				before := m.Boots()
				if err := p.SetPowerState(ctx, di, step.target); err != nil {
					t.Fatalf("%s: %v", step.target, err)
				}
				if got := machinePower(t, m); got != step.want {
					t.Fatalf("after %s the machine is %s", step.target, got)
				}
				if step.target == power.Reboot && m.Boots() != before+1 {
					t.Fatalf("reboot did not boot the machine (%d -> %d boots)", before, m.Boots())
				}
				st, err := p.GetPowerState(ctx, di)
				if err != nil || st != map[simulator.PowerState]power.State{simulator.PowerOn: power.On, simulator.PowerOff: power.Off}[step.want] {
					t.Fatalf("GetPowerState after %s: %s %v", step.target, st, err)
				}
			}
			for _, c := range []struct {
				dev  power.Device
				opts power.BootOptions
				want simulator.BootConfig
			}{
				{power.PXE, power.BootOptions{UEFI: true}, simulator.BootConfig{Device: simulator.BootNetwork, UEFI: true}},
				{power.Disk, power.BootOptions{Persistent: true}, simulator.BootConfig{Device: simulator.BootDisk, Persistent: true}},
				{power.PXE, power.BootOptions{Persistent: true, UEFI: true}, simulator.BootConfig{Device: simulator.BootNetwork, Persistent: true, UEFI: true}},
			} {
				if err := p.SetBootDevice(ctx, di, c.dev, c.opts); err != nil {
					t.Fatal(err)
				}
				if got, _ := m.BootConfig(ctx); got != c.want {
					t.Fatalf("SetBootDevice %s %+v: machine %+v, want %+v", c.dev, c.opts, got, c.want)
				}
			}
			if got := machinePower(t, l.machines[0]); got != simulator.PowerOff {
				t.Fatalf("the other system changed: %s", got)
			}
		})
	}
}

func TestLatePowerChangeIsWaitedFor(t *testing.T) {
	l := startBMC(t, 1)
	sys := l.svc.System(l.machines[0].UUID())
	sys.SetFaults(rfsim.Faults{PowerLate: bmc.Duration(300 * time.Millisecond)})
	p := New(Config{PollInterval: 20 * time.Millisecond})
	if err := p.SetPowerState(context.Background(), l.info(0), power.On); err != nil {
		t.Fatal(err)
	}
	if got := machinePower(t, l.machines[0]); got != simulator.PowerOn {
		t.Fatalf("SetPowerState returned with the machine %s", got)
	}
	// A change later than the power timeout is an error naming the BMC.
	sys.SetFaults(rfsim.Faults{PowerLate: bmc.Duration(5 * time.Second)})
	p = New(Config{PollInterval: 20 * time.Millisecond, PowerStateTimeout: 200 * time.Millisecond})
	err := p.SetPowerState(context.Background(), l.info(0), power.Off)
	if !errors.Is(err, ErrRedfish) || !strings.Contains(err.Error(), "still \"power on\"") || !strings.Contains(err.Error(), l.svc.URL()) {
		t.Fatalf("late change past the timeout: %v", err)
	}
}

func TestErrorsNameTheBMC(t *testing.T) {
	l := startBMC(t, 2)
	p := New(Config{PollInterval: 10 * time.Millisecond})
	ctx := context.Background()
	cases := map[string]struct {
		info   power.DriverInfo
		faults rfsim.Faults
		want   string
	}{
		"wrong password":      {info: l.info(0, "redfish_password", "nope", "redfish_auth_type", "basic"), want: "401"},
		"refused credentials": {info: l.info(0), faults: rfsim.Faults{RefuseCredentials: true}, want: "401"},
		"5xx":                 {info: l.info(0), faults: rfsim.Faults{ServerError: 503}, want: "503"},
		"unknown system":      {info: l.info(0, "redfish_system_id", "/redfish/v1/Systems/nope"), want: "404"},
		"no system id, two":   {info: l.info(0, "redfish_system_id", ""), want: "set redfish_system_id"},
		"unverified https":    {info: l.info(0, "redfish_verify_ca", "true"), want: "certificate"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			sys := l.svc.System(l.machines[0].UUID())
			sys.SetFaults(c.faults)
			defer sys.SetFaults(rfsim.Faults{})
			_, err := p.GetPowerState(ctx, c.info)
			if !errors.Is(err, ErrRedfish) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), l.svc.URL()) {
				t.Fatalf("error %v, want ErrRedfish naming %s and %q", err, l.svc.URL(), c.want)
			}
		})
	}
}

func TestParseInfo(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, []byte("x"), 0o644)
	good := []struct {
		in   power.DriverInfo
		want Info
	}{
		{power.DriverInfo{"redfish_address": "127.0.0.1:8443"}, Info{Address: "https://127.0.0.1:8443", VerifyCA: "true", AuthType: "auto"}},
		{power.DriverInfo{"redfish_address": "http://127.0.0.1:8000/", "redfish_verify_ca": false, "redfish_system_id": "/redfish/v1/Systems/a"}, Info{Address: "http://127.0.0.1:8000", SystemID: "/redfish/v1/Systems/a", VerifyCA: "false", AuthType: "auto"}},
		{power.DriverInfo{"redfish_address": "https://127.0.0.1", "redfish_verify_ca": ca, "redfish_auth_type": "session"}, Info{Address: "https://127.0.0.1", VerifyCA: ca, AuthType: "session"}},
	}
	for _, g := range good {
		got, err := ParseInfo(g.in)
		if err != nil || got != g.want {
			t.Errorf("ParseInfo(%v) = %+v, %v; want %+v", g.in, got, err, g.want)
		}
	}
	bad := map[string]power.DriverInfo{
		"no address":      {},
		"ftp":             {"redfish_address": "ftp://127.0.0.1"},
		"address number":  {"redfish_address": 5},
		"system id":       {"redfish_address": "127.0.0.1", "redfish_system_id": "Systems/1"},
		"verify ca file":  {"redfish_address": "127.0.0.1", "redfish_verify_ca": "/no/such/ca.pem"},
		"auth type":       {"redfish_address": "127.0.0.1", "redfish_auth_type": "kerberos"},
		"password number": {"redfish_address": "127.0.0.1", "redfish_password": 12},
	}
	for name, in := range bad {
		if _, err := ParseInfo(in); err == nil {
			t.Errorf("%s: ParseInfo(%v) accepted", name, in)
		}
	}
	if _, err := ParseInfo(power.DriverInfo{}); !errors.Is(err, power.ErrMissingInfo) {
		t.Errorf("no address: %v, want ErrMissingInfo", err)
	}
}
