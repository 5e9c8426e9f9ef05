package ssh

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/fake"
	"github.com/ironlab/ironlab/simulator/sshpower"
)

const vmUUID = "33333333-3333-4333-8333-333333333333"

// host is the lab's SSH virtualization host with one fake VM, "vm-0".
func host(t *testing.T) (*sshpower.Server, *fake.Machine, string) {
	t.Helper()
	m, err := fake.New(fake.Options{Name: "vm-0", UUID: vmUUID, Hardware: simulator.Hardware{
		CPUs: 1, MemoryMB: 512, NICs: []simulator.NIC{{Name: "eth0", MAC: "52:54:00:00:00:01"}},
		Disks: []simulator.Disk{{Name: "vda", SizeBytes: 1 << 20, Path: filepath.Join(t.TempDir(), "vm-0.raw")}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sshpower.New(sshpower.Config{
		Users:    []sshpower.User{{Name: "admin", Password: "secret"}, {Name: "stack", Keys: []ssh.PublicKey{signer.PublicKey()}}},
		Machines: func() []simulator.Machine { return []simulator.Machine{m} },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Close() })
	return srv, m, string(pem.EncodeToMemory(block))
}

func TestPowerAndBootDeviceOverSSH(t *testing.T) {
	srv, m, key := host(t)
	ctx := context.Background()
	p := New(Config{PollInterval: 10 * time.Millisecond})
	for name, info := range map[string]power.DriverInfo{
		"password, domain by uuid": {"ssh_address": "127.0.0.1", "ssh_port": srv.Addr().Port, "ssh_username": "admin",
			"ssh_password": "secret", "ssh_virt_type": "virsh", power.NodeUUIDKey: vmUUID},
		"key, ssh_domain": {"ssh_address": "127.0.0.1", "ssh_port": float64(srv.Addr().Port), "ssh_username": "stack",
			"ssh_key_contents": key, "ssh_virt_type": "virsh", "ssh_domain": "vm-0"},
	} {
		t.Run(name, func(t *testing.T) {
			if err := p.Validate(info); err != nil {
				t.Fatal(err)
			}
			check := func(step string, want simulator.PowerState, wantAPI power.State) {
				t.Helper()
				if st, _ := m.Power(ctx); st != want {
					t.Errorf("%s: machine is %s, want %s", step, st, want)
				}
				if got, err := p.GetPowerState(ctx, info); err != nil || got != wantAPI {
					t.Errorf("%s: GetPowerState = %q, %v; want %q", step, got, err, wantAPI)
				}
			}
			if err := p.SetBootDevice(ctx, info, power.PXE, power.BootOptions{}); err != nil {
				t.Fatal(err)
			}
			if bc, _ := m.BootConfig(ctx); bc.Device != simulator.BootNetwork {
				t.Errorf("boot device %s after SetBootDevice(pxe)", bc.Device)
			}
			if err := p.SetPowerState(ctx, info, power.On); err != nil {
				t.Fatal(err)
			}
			check("on", simulator.PowerOn, power.On)
			boots := m.Boots()
			if err := p.SetPowerState(ctx, info, power.Reboot); err != nil {
				t.Fatal(err)
			}
			check("reboot", simulator.PowerOn, power.On)
			if m.Boots() != boots+1 {
				t.Errorf("reboot: %d boots, want %d", m.Boots(), boots+1)
			}
			if err := p.SetBootDevice(ctx, info, power.Disk, power.BootOptions{Persistent: true}); err != nil {
				t.Fatal(err)
			}
			if bc, _ := m.BootConfig(ctx); bc.Device != simulator.BootDisk || !bc.Persistent {
				t.Errorf("boot config %+v after SetBootDevice(disk)", bc)
			}
			if err := p.SetPowerState(ctx, info, power.Off); err != nil {
				t.Fatal(err)
			}
			check("off", simulator.PowerOff, power.Off)
			if err := p.SetPowerState(ctx, info, power.Off); err != nil {
				t.Errorf("off when off: %v", err)
			}
			if err := p.SetPowerState(ctx, info, power.On); err != nil {
				t.Fatal(err)
			}
			if err := p.SetPowerState(ctx, info, power.SoftOff); err != nil {
				t.Fatal(err)
			}
			check("soft off", simulator.PowerOff, power.Off)
		})
	}
}

func TestErrorsNameTheCause(t *testing.T) {
	srv, _, _ := host(t)
	ctx := context.Background()
	p := New(Config{})
	good := power.DriverInfo{"ssh_address": "127.0.0.1", "ssh_port": srv.Addr().Port, "ssh_username": "admin",
		"ssh_password": "secret", "ssh_virt_type": "virsh", "ssh_domain": "vm-0"}
	with := func(k string, v any) power.DriverInfo {
		i := power.DriverInfo{}
		for kk, vv := range good {
			i[kk] = vv
		}
		if v == nil {
			delete(i, k)
		} else {
			i[k] = v
		}
		return i
	}
	for name, c := range map[string]struct {
		info    power.DriverInfo
		want    string
		missing bool
	}{
		"wrong password":  {with("ssh_password", "nope"), "unable to authenticate", false},
		"unknown domain":  {with("ssh_domain", "vm-9"), `VM "vm-9" (ssh_domain) is not among the VMs`, false},
		"no address":      {with("ssh_address", nil), "ssh_address", true},
		"two credentials": {with("ssh_key_contents", "x"), "one and only one", true},
		"vbox":            {with("ssh_virt_type", "vbox"), "virsh", false},
		"bad port":        {with("ssh_port", "x"), "ssh_port", false},
	} {
		_, err := p.GetPowerState(ctx, c.info)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
		if errors.Is(err, power.ErrMissingInfo) != c.missing {
			t.Errorf("%s: errors.Is(ErrMissingInfo) = %v", name, !c.missing)
		}
	}
}
