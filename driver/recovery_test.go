package driver_test

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/scenarios/labtest/minilab"
	"github.com/ironlab/ironlab/simulator/bmc"
	"github.com/ironlab/ironlab/simulator/lab"
)

// The crash-recovery test runs the real binary, `ironlab driver`, as a
// child process and kills it with SIGKILL: nothing is flushed and no lock
// released, as when a real conductor dies. Everything around it is real
// too (minilab): a fake machine behind a virtual IPMI BMC (driver class
// agent_pyghmi), and the fake IPA that the machine network-boots, talking
// HTTP to the driver over loopback.

func TestMain(m *testing.M) { labtest.Main(m) }

// rigLab is a one-node lab, agent_pyghmi, with the driver as a process.
func rigLab(t *testing.T, flags ...string) (*minilab.Lab, *lab.Node, string) {
	t.Helper()
	l := minilab.Start(t, minilab.Options{
		Groups:  []lab.GroupSpec{minilab.Class("node", 1, "agent_pyghmi")},
		Images:  []images.Spec{{ID: "recovery", Size: 1 << 20}},
		Process: true, Flags: flags,
	})
	n := l.MustNode("node-0")
	return l, n, l.Enroll(n, "recovery")
}

// setAgentFaults sets the faults of the running agent and of every one
// the node boots next, until changed.
func setAgentFaults(t *testing.T, n *lab.Node, f fakeagent.Faults) {
	t.Helper()
	if err := n.SetAgentFaults(f, true); err != nil {
		t.Fatal(err)
	}
}

// bmcDown makes the BMC drop every packet (or answer again).
func bmcDown(n *lab.Node, down bool) { n.BMC.SetFaults(bmc.Faults{NoAnswer: down}) }

// restarted is the text Recover puts in last_error.
const restarted = "when the conductor restarted"

func TestRecoveryAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the ironlab binary")
	}
	tests := []struct {
		state string
		// hold brings the node into state and keeps it there.
		hold func(l *minilab.Lab, n *lab.Node, id string) minilab.APINode
		// after checks the node after the restart and finishes the flow.
		after func(l *minilab.Lab, n *lab.Node, id string)
	}{
		{states.Verifying,
			func(l *minilab.Lab, n *lab.Node, id string) minilab.APINode {
				bmcDown(n, true)
				l.Provision(id, "manage")
				return l.WaitState(id, states.Verifying)
			},
			func(l *minilab.Lab, n *lab.Node, id string) {
				wantFailed(t, l.Get(id), states.Enroll, states.Verifying)
				bmcDown(n, false)
				l.Provision(id, "manage")
				l.WaitState(id, states.Manageable)
			}},
		{states.Cleaning,
			func(l *minilab.Lab, n *lab.Node, id string) minilab.APINode {
				l.Provision(id, "manage")
				l.WaitState(id, states.Manageable)
				bmcDown(n, true)
				l.Provision(id, "provide")
				return l.WaitState(id, states.Cleaning)
			},
			func(l *minilab.Lab, n *lab.Node, id string) {
				wantFailed(t, l.Get(id), states.CleanFailed, states.Cleaning)
				bmcDown(n, false)
				l.Provision(id, "manage")
				l.WaitState(id, states.Manageable)
			}},
		{states.CleanWait,
			func(l *minilab.Lab, n *lab.Node, id string) minilab.APINode {
				setAgentFaults(t, n, fakeagent.Faults{HangCommand: "erase_devices_metadata"})
				l.Provision(id, "manage")
				l.WaitState(id, states.Manageable)
				l.Provision(id, "provide")
				return l.WaitFor(id, "clean wait in erase_devices_metadata", func(a minilab.APINode) bool {
					return a.ProvisionState == states.CleanWait && a.CleanStep["step"] == "erase_devices_metadata"
				})
			},
			func(l *minilab.Lab, n *lab.Node, id string) {
				got := l.Get(id)
				if got.ProvisionState != states.CleanWait || got.Error() != "" {
					t.Errorf("after restart: %q, last_error %q; want clean wait, no error", got.ProvisionState, got.Error())
				}
				setAgentFaults(t, n, fakeagent.Faults{}) // the step finishes; the agent heartbeats
				if got := l.WaitState(id, states.Available); got.PowerState != "power off" {
					t.Errorf("power after cleaning = %q", got.PowerState)
				}
				if b, _ := os.ReadFile(n.DiskPath()); bytes.IndexFunc(b, func(c rune) bool { return c != 0 }) >= 0 {
					t.Error("disk not zeroed by the cleaning that went on after the restart")
				}
			}},
		{states.Deploying,
			func(l *minilab.Lab, n *lab.Node, id string) minilab.APINode {
				l.ToAvailable(id)
				bmcDown(n, true)
				l.Provision(id, "active")
				return l.WaitState(id, states.Deploying)
			},
			func(l *minilab.Lab, n *lab.Node, id string) {
				wantFailed(t, l.Get(id), states.DeployFailed, states.Deploying)
				bmcDown(n, false)
				l.Provision(id, "active") // deploy failed -> deploy
				l.WaitState(id, states.Active)
			}},
		{states.DeployWait,
			func(l *minilab.Lab, n *lab.Node, id string) minilab.APINode {
				l.ToAvailable(id)
				setAgentFaults(t, n, fakeagent.Faults{HangCommand: "write_image"})
				l.Provision(id, "active")
				return l.WaitFor(id, "wait call-back in write_image", func(a minilab.APINode) bool {
					return a.ProvisionState == states.DeployWait && a.DeployStep["step"] == "write_image"
				})
			},
			func(l *minilab.Lab, n *lab.Node, id string) {
				got := l.Get(id)
				if got.ProvisionState != states.DeployWait || got.Error() != "" {
					t.Errorf("after restart: %q, last_error %q; want wait call-back, no error", got.ProvisionState, got.Error())
				}
				setAgentFaults(t, n, fakeagent.Faults{})
				l.WaitState(id, states.Active)
				_, _, image := l.Image("recovery")
				if b, _ := os.ReadFile(n.DiskPath()); !bytes.HasPrefix(b, image) {
					t.Error("the disk does not hold the image after the deploy went on")
				}
			}},
		{states.Deleting,
			func(l *minilab.Lab, n *lab.Node, id string) minilab.APINode {
				l.ToAvailable(id)
				l.Provision(id, "active")
				l.WaitState(id, states.Active)
				bmcDown(n, true)
				l.Provision(id, "deleted")
				return l.WaitState(id, states.Deleting)
			},
			func(l *minilab.Lab, n *lab.Node, id string) {
				wantFailed(t, l.Get(id), states.Error, states.Deleting)
				bmcDown(n, false)
				l.Provision(id, "deleted") // error -> deleting -> cleaning -> available
				l.WaitState(id, states.Available)
			}},
	}
	for _, tc := range tests {
		t.Run(strings.ReplaceAll(tc.state, " ", "_"), func(t *testing.T) {
			l, n, id := rigLab(t)
			got := tc.hold(l, n, id)
			if strings.HasSuffix(tc.state, "ing") && !got.Reserved() {
				t.Errorf("node in %q is not reserved before the kill", tc.state)
			}
			l.KillDriver()
			l.StartDriver()
			got = l.Get(id)
			if got.Reserved() && tc.state != states.CleanWait && tc.state != states.DeployWait {
				t.Errorf("after restart node is still reserved by %q", *got.Reservation)
			}
			tc.after(l, n, id)
			t.Logf("state history: %s", strings.Join(l.CheckHistory(id), " -> "))
		})
	}
}

// wantFailed: the restarted conductor moved the node from the interrupted
// state to the failed one and said why.
func wantFailed(t *testing.T, n minilab.APINode, want, from string) {
	t.Helper()
	if n.ProvisionState != want {
		t.Errorf("after restart: %q, want %q", n.ProvisionState, want)
	}
	if !strings.Contains(n.Error(), restarted) || !strings.Contains(n.Error(), strconv.Quote(from)) {
		t.Errorf("last_error = %q, want it to name %q and say the conductor restarted", n.Error(), from)
	}
}
