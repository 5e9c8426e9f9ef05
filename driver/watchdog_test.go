package driver_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/scenarios/labtest/minilab"
)

// TestWatchdogRebootsSilentAgent: the agent kept running on an available
// node (fast track) stops heartbeating; the watchdog reboots the machine
// through its BMC into the agent again, the new agent looks up (its token
// was wiped with the reboot) and heartbeats, and the watchdog's counter
// resets.
func TestWatchdogRebootsSilentAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the ironlab binary")
	}
	l, r, id := rigLab(t, "--fast-track", "--watchdog-action", "reboot", "--check-interval", "200ms")
	l.ToAvailable(id)
	boots := len(minilab.BootsFrom(r))

	silenced := r.Agent()
	if silenced == nil {
		t.Fatal("no agent runs on the available fast-track node")
	}
	if err := silenced.SetFaults(fakeagent.Faults{StopHeartbeats: &fakeagent.HeartbeatStop{After: 0}}); err != nil {
		t.Fatal(err)
	}
	has := func(evs []minilab.Event, name string) int {
		for i, e := range evs {
			if e.Event == name {
				return i
			}
		}
		return -1
	}
	l.WaitFor(id, "the watchdog's reboot and the agent's return", func(minilab.APINode) bool {
		return has(l.Events(id), conductor.EventWatchdogRecovered) >= 0
	})
	evs := l.Events(id)
	reboot := has(evs, conductor.EventWatchdogReboot)
	if reboot < 0 || reboot > has(evs, conductor.EventWatchdogRecovered) {
		t.Fatalf("want %q before %q in %v", conductor.EventWatchdogReboot, conductor.EventWatchdogRecovered, evs)
	}
	if msg := evs[reboot].Message; msg == "" || !strings.Contains(msg, "agent.heartbeat_timeout is 2s") {
		t.Errorf("watchdog reboot message %q does not name the timeout", msg)
	}
	lookupsAfter := 0
	for _, e := range evs[reboot:] {
		if e.Kind == "lookup" {
			lookupsAfter++
		}
	}
	if lookupsAfter == 0 {
		t.Error("the rebooted agent did not look up again")
	}
	// The reboot went into the agent again: a network boot (how many the
	// BMC saw depends on resends, not on the watchdog).
	if again := minilab.BootsFrom(r)[boots:]; !slices.Contains(again, "network") {
		t.Errorf("the machine booted %v after the watchdog, want a network boot into the agent", again)
	}
	fresh := r.Agent()
	if fresh == nil || fresh == silenced || fresh.State().Phase != fakeagent.PhaseHeartbeat {
		t.Errorf("no fresh heartbeating agent after the reboot (fresh %v)", fresh != nil && fresh != silenced)
	}
	n := l.Get(id)
	if n.ProvisionState != states.Available || n.Maintenance {
		t.Errorf("node %q maintenance %v, want available, not in maintenance", n.ProvisionState, n.Maintenance)
	}
	if _, ok := n.DriverInternalInfo["watchdog_reboots"]; ok {
		t.Errorf("watchdog_reboots not reset: %v", n.DriverInternalInfo)
	}
	t.Logf("state history: %s", strings.Join(l.CheckHistory(id), " -> "))
}
