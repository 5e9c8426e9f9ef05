package driver_test

import (
	"strings"
	"testing"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/fakeagent"
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
	ctx := t.Context()
	mux, err := fakeagent.ListenMux(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := startDriver(t, "--fast-track", "--watchdog-action", "reboot", "--check-interval", "200ms")
	r := newRig(t, ctx, p.url(), mux)
	id := r.enroll(p, "http://127.0.0.1:1/unused.raw", "00")
	toAvailable(p, id)
	boots := r.machine.Boots()

	r.mu.Lock()
	silenced := r.agent
	r.mu.Unlock()
	if err := silenced.SetFaults(fakeagent.Faults{StopHeartbeats: &fakeagent.HeartbeatStop{After: 0}}); err != nil {
		t.Fatal(err)
	}
	events := func() []apiEvent {
		var out struct {
			Events []apiEvent `json:"events"`
		}
		p.api("GET", "/v1/nodes/"+id+"/events", nil, &out)
		return out.Events
	}
	has := func(evs []apiEvent, name string) int {
		for i, e := range evs {
			if e.Event == name {
				return i
			}
		}
		return -1
	}
	p.waitFor(id, "the watchdog's reboot and the agent's return", func(apiNode) bool {
		return has(events(), conductor.EventWatchdogRecovered) >= 0
	})
	evs := events()
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
	if got := r.machine.Boots(); got != boots+1 {
		t.Errorf("machine booted %d times after the watchdog, want once", got-boots)
	}
	r.mu.Lock()
	fresh := r.agent
	r.mu.Unlock()
	if fresh == silenced || fresh.State().Phase != fakeagent.PhaseHeartbeat {
		t.Errorf("no fresh heartbeating agent after the reboot: %+v", fresh.State())
	}
	var n struct {
		apiNode
		Maintenance        bool           `json:"maintenance"`
		DriverInternalInfo map[string]any `json:"driver_internal_info"`
	}
	p.api("GET", "/v1/nodes/"+id, nil, &n)
	if n.ProvisionState != states.Available || n.Maintenance {
		t.Errorf("node %q maintenance %v, want available, not in maintenance", n.ProvisionState, n.Maintenance)
	}
	if _, ok := n.DriverInternalInfo["watchdog_reboots"]; ok {
		t.Errorf("watchdog_reboots not reset: %v", n.DriverInternalInfo)
	}
	checkHistory(t, p, id)
}
