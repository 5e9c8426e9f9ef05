package fakeagent_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/scenarios/labtest/minilab"
	"github.com/ironlab/ironlab/simulator/lab"
)

// TestWithRealDriver runs the agent against the real driver over loopback
// HTTP (minilab): automated cleaning really zeroes the disk, and a deploy
// writes the image, in both dialects.
func TestWithRealDriver(t *testing.T) {
	for _, dialect := range []fakeagent.Dialect{fakeagent.DialectV1, fakeagent.DialectLegacy} {
		t.Run(string(dialect), func(t *testing.T) {
			testWithRealDriver(t, dialect)
		})
	}
}

func testWithRealDriver(t *testing.T, dialect fakeagent.Dialect) {
	// A fake_agent node: FakePower, so its agent runs from the start (the
	// spec's long-running model) and retries lookup until the node takes it.
	l := minilab.Start(t, minilab.Options{Groups: []lab.GroupSpec{{Name: "node", Count: 1, Enrollment: lab.Enrollment{Driver: "fake_agent", Dialect: string(dialect)}}}})
	n := l.MustNode("node-0")
	// A disk full of 0xA5, so that erasing shows.
	if err := os.WriteFile(n.DiskPath(), bytes.Repeat([]byte{0xA5}, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	id := l.Enroll(n, "disk")
	l.ToAvailable(id) // automated cleaning
	disk, _ := os.ReadFile(n.DiskPath())
	if i := bytes.IndexFunc(disk, func(r rune) bool { return r != 0 }); i >= 0 {
		t.Fatalf("after cleaning, disk byte %d is not zero", i)
	}

	a := n.Agent() // it powers the machine off at the end of the deploy (v1)
	if a == nil {
		t.Fatal("no agent runs on the available fake_agent node")
	}
	l.Provision(id, "active")
	l.WaitState(id, states.Active)
	_, _, image := l.Image("disk")
	disk, _ = os.ReadFile(n.DiskPath())
	if !bytes.HasPrefix(disk, image) {
		t.Fatalf("after deploy, the disk does not hold the image")
	}
	var cmds []string
	for _, c := range a.Commands() {
		cmds = append(cmds, c.CommandName+"="+c.CommandStatus)
	}
	if len(cmds) == 0 || !strings.HasSuffix(cmds[len(cmds)-1], "=SUCCEEDED") {
		t.Errorf("agent commands %v: want the deploy's, the last one succeeded", cmds)
	}
	t.Logf("agent commands: %s", strings.Join(cmds, " "))
}
