package bmc

import (
	"context"
	"encoding/json"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
)

type pyghmiBoot struct {
	Bootdev    string `json:"bootdev"`
	Persistent bool   `json:"persistent"`
	UEFIMode   bool   `json:"uefimode"`
}

type pyghmiResult struct {
	Power0 string     `json:"power0"`
	Power1 string     `json:"power1"`
	Boot1  pyghmiBoot `json:"boot1"`
	Boot2  pyghmiBoot `json:"boot2"`
	Power2 string     `json:"power2"`
	Error  string     `json:"error"`
}

func runPyghmi(t *testing.T, py string, b *BMC, user, pass string) pyghmiResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "testdata/pyghmi_client.py",
		b.Addr().Addr().String(), strconv.Itoa(int(b.Addr().Port())), user, pass).Output()
	if err != nil {
		t.Fatalf("pyghmi client: %v\n%s", err, out)
	}
	var r pyghmiResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("pyghmi client output %q: %v", out, err)
	}
	return r
}

// pyghmi's client (Ironic's native IPMI, virtualbmc's users) gets and sets
// power and boot device.
func TestPyghmiClient(t *testing.T) {
	py := needPyghmi(t)
	m := bmctest.New("node-0")
	b := startBMC(t, m, Options{})
	got := runPyghmi(t, py, b, "admin", "password")
	want := pyghmiResult{
		Power0: "off", Power1: "on", Power2: "off",
		Boot1: pyghmiBoot{Bootdev: "network"},
		Boot2: pyghmiBoot{Bootdev: "hd", Persistent: true, UEFIMode: true},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("pyghmi read back (-want +got):\n%s", d)
	}
	p, boot, acts := m.State()
	if d := cmp.Diff([]simulator.PowerAction{simulator.ActionOn, simulator.ActionOff}, bmctest.Collapsed(acts)); d != "" || p != simulator.PowerOff {
		t.Errorf("machine power %s, actions (-want +got):\n%s", p, d)
	}
	if want := (simulator.BootConfig{Device: simulator.BootDisk, Persistent: true, UEFI: true}); boot != want {
		t.Errorf("machine boots %+v, want %+v", boot, want)
	}
}

func TestPyghmiWrongPassword(t *testing.T) {
	py := needPyghmi(t)
	m := bmctest.New("node-0")
	b := startBMC(t, m, Options{})
	got := runPyghmi(t, py, b, "admin", "nope")
	if got.Error == "" {
		t.Errorf("pyghmi with a wrong password: no error, read %+v", got)
	}
	if p, boot, acts := m.State(); p != simulator.PowerOff || boot.Device != simulator.BootDisk || len(acts) != 0 {
		t.Errorf("machine changed: %s %+v %v", p, boot, acts)
	}
}
