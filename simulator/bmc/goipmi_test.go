package bmc

import (
	"testing"

	goipmi "github.com/vmware/goipmi"

	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
)

// vmware/goipmi's IPMI 1.5 client is an implementation independent of the
// library this BMC is built on; it checks the lan (1.5) path.
func goipmiClient(t *testing.T, b *BMC, user, pass string) (*goipmi.Client, error) {
	t.Helper()
	c, err := goipmi.NewClient(&goipmi.Connection{
		Hostname:  b.Addr().Addr().String(),
		Port:      int(b.Addr().Port()),
		Username:  user,
		Password:  pass,
		Interface: "lan",
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, c.Open()
}

func goipmiStatus(t *testing.T, c *goipmi.Client) bool {
	t.Helper()
	res := &goipmi.ChassisStatusResponse{}
	if err := c.Send(&goipmi.Request{NetworkFunction: goipmi.NetworkFunctionChassis, Command: goipmi.CommandChassisStatus, Data: &goipmi.ChassisStatusRequest{}}, res); err != nil {
		t.Fatalf("chassis status: %v", err)
	}
	if res.CompletionCode != goipmi.CommandCompleted {
		t.Fatalf("chassis status: completion code %v", res.CompletionCode)
	}
	return res.IsSystemPowerOn()
}

func goipmiBootDevice(t *testing.T, c *goipmi.Client) goipmi.BootDevice {
	t.Helper()
	res := &goipmi.SystemBootOptionsResponse{}
	if err := c.Send(&goipmi.Request{NetworkFunction: goipmi.NetworkFunctionChassis, Command: goipmi.CommandGetSystemBootOptions, Data: &goipmi.SystemBootOptionsRequest{Param: goipmi.BootParamBootFlags}}, res); err != nil {
		t.Fatalf("get boot options: %v", err)
	}
	if res.CompletionCode != goipmi.CommandCompleted {
		t.Fatalf("get boot options: completion code %v", res.CompletionCode)
	}
	return res.BootDeviceSelector()
}

func TestGoipmiLanClient(t *testing.T) {
	m := bmctest.New("node-0")
	b := startBMC(t, m, Options{})
	c, err := goipmiClient(t, b, "admin", "password")
	if err != nil {
		t.Fatalf("open 1.5 session: %v", err)
	}
	defer c.Close()

	id, err := c.DeviceID()
	if err != nil || id.IPMIVersion != 0x02 {
		t.Fatalf("device id: %+v, %v", id, err)
	}
	if goipmiStatus(t, c) {
		t.Fatal("power on at start, machine is off")
	}
	if err := c.Control(goipmi.ControlPowerUp); err != nil {
		t.Fatal(err)
	}
	if p, _, _ := m.State(); p != simulator.PowerOn || !goipmiStatus(t, c) {
		t.Fatalf("after power up: machine %s", p)
	}
	if err := c.SetBootDevice(goipmi.BootDevicePxe); err != nil {
		t.Fatal(err)
	}
	if _, boot, _ := m.State(); boot != (simulator.BootConfig{Device: simulator.BootNetwork}) {
		t.Fatalf("after set boot pxe: machine boots %+v", boot)
	}
	if got := goipmiBootDevice(t, c); got != goipmi.BootDevicePxe {
		t.Errorf("boot device read back %v, want pxe", got)
	}
	if err := c.SetBootDevice(goipmi.BootDeviceDisk); err != nil {
		t.Fatal(err)
	}
	if got := goipmiBootDevice(t, c); got != goipmi.BootDeviceDisk {
		t.Errorf("boot device read back %v, want disk", got)
	}
	if err := c.Control(goipmi.ControlPowerDown); err != nil {
		t.Fatal(err)
	}
	p, boot, acts := m.State()
	if p != simulator.PowerOff || boot.Device != simulator.BootDisk || len(acts) != 2 {
		t.Errorf("machine: %s %+v %v; want off, disk, [on off]", p, boot, acts)
	}
}

func TestGoipmiWrongPassword(t *testing.T) {
	m := bmctest.New("node-0")
	b := startBMC(t, m, Options{})
	c, err := goipmiClient(t, b, "admin", "wrong")
	if err == nil {
		c.Control(goipmi.ControlPowerUp)
		c.Close()
		t.Error("1.5 session with a wrong password was activated")
	} else {
		t.Logf("refused: %v", err)
	}
	if p, _, acts := m.State(); p != simulator.PowerOff || len(acts) != 0 {
		t.Errorf("machine changed: %s %v", p, acts)
	}
}
