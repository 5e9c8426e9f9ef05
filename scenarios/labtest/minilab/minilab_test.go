package minilab_test

import (
	"bytes"
	"os"
	"slices"
	"testing"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/scenarios/labtest/minilab"
	"github.com/ironlab/ironlab/simulator/lab"
)

func TestMain(m *testing.M) { labtest.Main(m) }

// A node powered through its virtual BMC (native IPMI) goes the whole way:
// cleaning zeroes its disk, the deploy writes the image and the machine
// boots it from disk.
func TestDeployThroughBMC(t *testing.T) {
	l := minilab.Start(t, minilab.Options{Groups: []lab.GroupSpec{minilab.Class("n", 1, "agent_pyghmi")}})
	n := l.MustNode("n-0")
	if n.BMC == nil {
		t.Fatal("an agent_pyghmi node has no BMC")
	}
	if err := os.WriteFile(n.DiskPath(), bytes.Repeat([]byte{0xA5}, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	id := l.Enroll(n, "disk")
	l.ToAvailable(id)
	if b, _ := os.ReadFile(n.DiskPath()); bytes.IndexFunc(b, func(r rune) bool { return r != 0 }) >= 0 {
		t.Error("cleaning did not zero the disk")
	}
	l.Provision(id, "active")
	got := l.WaitState(id, states.Active)
	if got.PowerState != "power on" {
		t.Errorf("active node's power: %q", got.PowerState)
	}
	_, _, image := l.Image("disk")
	if b, _ := os.ReadFile(n.DiskPath()); !bytes.HasPrefix(b, image) {
		t.Error("the disk does not hold the image")
	}
	boots := minilab.BootsFrom(n)
	if len(boots) == 0 || boots[len(boots)-1] != "disk" || !slices.Contains(boots, "network") {
		t.Errorf("boots %v: want the agent's network boots, and the disk last", boots)
	}
	path := l.CheckHistory(id)
	if !slices.Contains(path, states.Cleaning) || path[len(path)-1] != states.Active {
		t.Errorf("state history %v", path)
	}
}

// The driver as a child process keeps its nodes across a SIGKILL and a
// start on the same address and database.
func TestDriverProcessRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the ironlab binary")
	}
	l := minilab.Start(t, minilab.Options{Process: true})
	id := l.Enroll(l.MustNode("node-0"), "")
	l.KillDriver()
	l.StartDriver()
	if n := l.Get(id); n.Name != "node-0" || n.ProvisionState != states.Enroll {
		t.Errorf("after the restart: %+v", n)
	}
}
