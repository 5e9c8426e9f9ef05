package conductor_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy/agent"
	"github.com/ironlab/ironlab/driver/store"
)

// events returns the names of a node's events of kind since index from.
func (l *lab) events(t *testing.T, id, kind string) []string {
	t.Helper()
	evs, err := l.st.ListEvents(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if kind == "" || e.Kind == kind {
			out = append(out, e.Event)
		}
	}
	return out
}

// reboot forgets the scripted agent's commands, as a rebooted agent would.
func (a *scriptedAgent) reboot() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cmds = nil
}

// cleanToAvailable provides a manageable node and runs both automated
// clean steps with the scripted agent.
func (l *lab) cleanToAvailable(t *testing.T, id string) {
	t.Helper()
	l.act(t, id, "provide", nil)
	l.lookup(t)
	for i := 0; i < 2; i++ {
		l.heartbeat(t, id)
		l.agent.finish(agent.StatusSucceeded, "")
	}
	l.heartbeat(t, id)
	wantState(t, l.node(t, id), states.Available)
}

func TestFastTrack(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// spoil makes the running agent unfit for fast track after cleaning.
		spoil    func(t *testing.T, l *lab, id string)
		wantFast bool
	}{
		{"agent alive", nil, true},
		{"heartbeat older than heartbeat_timeout", func(t *testing.T, l *lab, id string) {
			n := l.node(t, id)
			old := time.Now().Add(-2 * time.Minute)
			if _, err := l.st.RecordHeartbeat(ctx, id, store.Heartbeat{URL: n.Agent.URL, Dialect: n.Agent.Dialect, At: old}); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"agent does not answer", func(t *testing.T, l *lab, id string) {
			l.agent.mu.Lock()
			l.agent.down = true
			l.agent.mu.Unlock()
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t, func(c *conductor.Config, _ *agent.Config) {
				c.FastTrack = true
				c.HeartbeatTimeout = time.Minute
			})
			n := l.enroll(t, states.Manageable)
			l.cleanToAvailable(t, n.UUID)
			// (a) cleaning left the agent running: no power off.
			got := l.node(t, n.UUID)
			if got.PowerState != "power on" {
				t.Errorf("power after fast-track cleaning = %q, want power on", got.PowerState)
			}
			if evs := l.events(t, n.UUID, store.KindProvision); !contains(evs, "agent kept running") {
				t.Errorf("no \"agent kept running\" event after cleaning: %v", evs)
			}
			// (b) the running agent of an available node may look up.
			if _, _, err := l.c.Lookup(ctx, conductor.LookupQuery{MACs: []string{mac}, Dialect: conductor.DialectV1, Restrict: true, IssueToken: true}); err != nil {
				t.Fatalf("lookup of an available node with fast track: %v", err)
			}
			if tc.spoil != nil {
				tc.spoil(t, l, n.UUID)
			}
			powerBefore := len(l.events(t, n.UUID, store.KindPower))
			cmdsBefore := len(l.agent.commandNames())
			l.act(t, n.UUID, "active", nil)
			got = l.node(t, n.UUID)
			wantState(t, got, states.DeployWait)
			power := l.events(t, n.UUID, store.KindPower)[powerBefore:]
			sent := l.agent.commandNames()[cmdsBefore:]
			if tc.wantFast {
				// (c) no boot device, no reboot: the write starts at once,
				// without waiting for a heartbeat.
				if len(power) != 0 {
					t.Errorf("fast-track deploy did power actions %v", power)
				}
				if diff := cmp.Diff([]string{"deploy.get_deploy_steps", "deploy.execute_deploy_step"}, sent); diff != "" {
					t.Errorf("agent commands at deploy start (-want +got):\n%s", diff)
				}
				if evs := l.events(t, n.UUID, store.KindProvision); !contains(evs, "fast track") {
					t.Errorf("no \"fast track\" event: %v", evs)
				}
				l.agent.finish(agent.StatusSucceeded, "")
			} else {
				if diff := cmp.Diff([]string{"set boot device", "reboot"}, power); diff != "" {
					t.Errorf("cold deploy power actions (-want +got):\n%s", diff)
				}
				if len(sent) != 0 {
					t.Errorf("cold deploy sent %v before the agent's call-back", sent)
				}
				if evs := l.events(t, n.UUID, store.KindProvision); contains(evs, "fast track") {
					t.Errorf("\"fast track\" event in a cold deploy: %v", evs)
				}
				l.agent.mu.Lock()
				l.agent.down = false
				l.agent.mu.Unlock()
				l.heartbeat(t, n.UUID) // the (rebooted) agent's call-back starts the write
				l.agent.finish(agent.StatusSucceeded, "")
			}
			l.heartbeat(t, n.UUID)
			wantState(t, l.node(t, n.UUID), states.Active)
		})
	}
}

// TestFastTrackCleaning: a manual clean of a node whose agent runs needs no
// boot either, and the steps start without a heartbeat.
func TestFastTrackCleaning(t *testing.T) {
	l := newLab(t, func(c *conductor.Config, _ *agent.Config) {
		c.FastTrack = true
		c.HeartbeatTimeout = time.Minute
	})
	n := l.enroll(t, states.Manageable)
	l.cleanToAvailable(t, n.UUID)
	l.act(t, n.UUID, "manage", nil)
	powerBefore := len(l.events(t, n.UUID, store.KindPower))
	l.act(t, n.UUID, "clean", []map[string]any{{"interface": "deploy", "step": "erase_devices_metadata"}})
	wantState(t, l.node(t, n.UUID), states.CleanWait)
	if power := l.events(t, n.UUID, store.KindPower)[powerBefore:]; len(power) != 0 {
		t.Errorf("fast-track clean did power actions %v", power)
	}
	names := l.agent.commandNames()
	if got := names[len(names)-1]; got != "clean.execute_clean_step" {
		t.Errorf("last agent command = %q, want clean.execute_clean_step sent at once", got)
	}
	l.agent.finish(agent.StatusSucceeded, "")
	l.heartbeat(t, n.UUID)
	got := l.node(t, n.UUID)
	wantState(t, got, states.Manageable)
	if got.PowerState != "power on" {
		t.Errorf("power after fast-track manual clean = %q, want power on", got.PowerState)
	}
}

// TestProvideWithoutCleaningBootsNothing: automated cleaning off, fast track
// on: provide goes straight to available with no power action (Ironic's
// do_node_clean boots nothing when it skips cleaning).
func TestProvideWithoutCleaningBootsNothing(t *testing.T) {
	l := newLab(t, func(c *conductor.Config, _ *agent.Config) {
		c.FastTrack = true
		c.AutomatedClean = false
	})
	n := l.enroll(t, states.Manageable)
	l.act(t, n.UUID, "provide", nil)
	got := l.node(t, n.UUID)
	wantState(t, got, states.Available)
	if power := l.events(t, n.UUID, store.KindPower); len(power) != 0 {
		t.Errorf("provide without cleaning did power actions %v", power)
	}
}

func TestWatchdogRebootThenAgentResumes(t *testing.T) {
	ctx := context.Background()
	l := newLab(t, func(c *conductor.Config, _ *agent.Config) {
		c.WatchdogAction = conductor.WatchdogReboot
		c.HeartbeatTimeout = time.Minute
		c.WatchdogMaxReboots = 2
	})
	n := l.enroll(t, states.Available)
	l.act(t, n.UUID, "active", nil)
	l.lookup(t)
	l.heartbeat(t, n.UUID) // write_image RUNNING
	if err := l.c.Check(ctx, time.Now().Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := l.node(t, n.UUID)
	if got.Maintenance {
		t.Fatalf("maintenance after the first missed heartbeat: %q", got.MaintenanceReason)
	}
	if evs := l.events(t, n.UUID, store.KindHeartbeat); !contains(evs, conductor.EventWatchdogReboot) {
		t.Fatalf("no %q event: %v", conductor.EventWatchdogReboot, evs)
	}
	if power := l.events(t, n.UUID, store.KindPower); power[len(power)-1] != "reboot" || power[len(power)-2] != "set boot device" {
		t.Errorf("watchdog power actions end with %v, want set boot device, reboot", power)
	}
	if v := got.DriverInternalInfoView()["watchdog_reboots"]; v != 1 {
		t.Errorf("watchdog_reboots = %v, want 1", v)
	}
	// The rebooted agent heartbeats: the counter resets and the deploy
	// starts over on the fresh agent.
	l.agent.reboot()
	l.heartbeat(t, n.UUID)
	got = l.node(t, n.UUID)
	if v, ok := got.DriverInternalInfoView()["watchdog_reboots"]; ok {
		t.Errorf("watchdog_reboots still set after the agent came back: %v", v)
	}
	if evs := l.events(t, n.UUID, store.KindHeartbeat); !contains(evs, conductor.EventWatchdogRecovered) {
		t.Errorf("no %q event: %v", conductor.EventWatchdogRecovered, evs)
	}
	names := l.agent.commandNames()
	if diff := cmp.Diff([]string{"deploy.get_deploy_steps", "deploy.execute_deploy_step"}, names[len(names)-2:]); diff != "" {
		t.Errorf("commands after the reboot (-want +got):\n%s", diff)
	}
	l.agent.finish(agent.StatusSucceeded, "")
	l.heartbeat(t, n.UUID)
	wantState(t, l.node(t, n.UUID), states.Active)
}

func TestWatchdogSparesNodeThatNeverHeartbeated(t *testing.T) {
	ctx := context.Background()
	for _, action := range []string{conductor.WatchdogReboot, conductor.WatchdogMaintenance} {
		t.Run(action, func(t *testing.T) {
			l := newLab(t, func(c *conductor.Config, _ *agent.Config) {
				c.WatchdogAction = action
				c.HeartbeatTimeout = time.Minute
			})
			n := l.enroll(t, states.Available)
			l.act(t, n.UUID, "active", nil) // powered on, waiting; no agent ever
			powerBefore := len(l.events(t, n.UUID, store.KindPower))
			if err := l.c.Check(ctx, time.Now().Add(10*time.Minute)); err != nil {
				t.Fatal(err)
			}
			got := l.node(t, n.UUID)
			wantState(t, got, states.DeployWait)
			if got.Maintenance || len(l.events(t, n.UUID, store.KindPower)) != powerBefore {
				t.Errorf("watchdog acted on a node that never heartbeated: maintenance %v, events %v", got.Maintenance, l.events(t, n.UUID, ""))
			}
		})
	}
}

func TestWatchdogOnAvailableFastTrackNode(t *testing.T) {
	ctx := context.Background()
	l := newLab(t, func(c *conductor.Config, _ *agent.Config) {
		c.FastTrack = true
		c.WatchdogAction = conductor.WatchdogMaintenance
		c.HeartbeatTimeout = time.Minute
	})
	n := l.enroll(t, states.Manageable)
	l.cleanToAvailable(t, n.UUID)
	if err := l.c.Check(ctx, time.Now().Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if l.node(t, n.UUID).Maintenance {
		t.Fatal("maintenance within heartbeat_timeout")
	}
	if err := l.c.Check(ctx, time.Now().Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := l.node(t, n.UUID)
	wantState(t, got, states.Available)
	if !got.Maintenance || !strings.Contains(got.MaintenanceReason, "agent.heartbeat_timeout is 60s") {
		t.Errorf("maintenance %v, reason %q; want on, naming the timeout", got.Maintenance, got.MaintenanceReason)
	}
	if evs := l.events(t, n.UUID, store.KindHeartbeat); !contains(evs, conductor.EventWatchdogMaintenance) {
		t.Errorf("no %q event: %v", conductor.EventWatchdogMaintenance, evs)
	}
}

func TestCleanCallbackTimeout(t *testing.T) {
	ctx := context.Background()
	l := newLab(t, func(c *conductor.Config, _ *agent.Config) { c.CleanCallbackTimeout = time.Hour })
	n := l.enroll(t, states.Manageable)
	l.act(t, n.UUID, "provide", nil)
	l.lookup(t)
	l.heartbeat(t, n.UUID) // erase_devices_metadata RUNNING
	if err := l.c.Check(ctx, time.Now().Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	got := l.node(t, n.UUID)
	wantState(t, got, states.CleanFailed)
	if !strings.HasPrefix(got.LastError, "Timeout reached while cleaning the node "+n.UUID) || !strings.Contains(got.LastError, "Failed on step erase_devices_metadata") {
		t.Errorf("last_error = %q", got.LastError)
	}
	if !got.Maintenance || got.Fault != "clean failure" {
		t.Errorf("maintenance %v fault %q; want on, clean failure (a step was running)", got.Maintenance, got.Fault)
	}
	if evs := l.events(t, n.UUID, store.KindProvision); !contains(evs, conductor.EventCallbackTimeout) {
		t.Errorf("no %q event: %v", conductor.EventCallbackTimeout, evs)
	}
}

// bios and firmware steps as the fake agent offers them.
func withBIOSSteps(a *scriptedAgent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	steps := a.steps["GenericHardwareManager"].([]any)
	a.steps["GenericHardwareManager"] = append(steps,
		map[string]any{"step": "update_firmware", "priority": 0, "interface": "deploy", "abortable": false,
			"argsinfo": map[string]any{"version": map[string]any{"description": "BIOS version", "required": true}}},
		map[string]any{"step": "apply_bios_settings", "priority": 0, "interface": "bios", "abortable": false,
			"argsinfo": map[string]any{"settings": map[string]any{"description": "settings", "required": true}}},
	)
}

func TestManualCleanStepsWithArgs(t *testing.T) {
	steps := []map[string]any{
		{"interface": "deploy", "step": "update_firmware", "args": map[string]any{"version": "2.1.0"}},
		{"interface": "bios", "step": "apply_bios_settings", "args": map[string]any{"settings": []any{map[string]any{"name": "vt", "value": "off"}}}},
	}
	l := newLab(t, nil)
	withBIOSSteps(l.agent)
	n := l.enroll(t, states.Manageable)
	l.act(t, n.UUID, "clean", steps)
	wantState(t, l.node(t, n.UUID), states.CleanWait)
	l.lookup(t)
	for range steps {
		l.heartbeat(t, n.UUID)
		got := l.node(t, n.UUID)
		wantState(t, got, states.CleanWait)
		l.agent.finish(agent.StatusSucceeded, "")
	}
	l.heartbeat(t, n.UUID)
	got := l.node(t, n.UUID)
	wantState(t, got, states.Manageable)
	if got.TargetProvisionState != "" || got.LastError != "" {
		t.Errorf("after manual clean: target %q, last_error %q", got.TargetProvisionState, got.LastError)
	}
	var sent []map[string]any
	for i, name := range l.agent.commandNames() {
		if name == "clean.execute_clean_step" {
			s := l.agent.params[i]["step"].(map[string]any)
			sent = append(sent, map[string]any{"interface": s["interface"], "step": s["step"], "args": s["args"]})
		}
	}
	want := []map[string]any{
		{"interface": "deploy", "step": "update_firmware", "args": map[string]any{"version": "2.1.0"}},
		{"interface": "bios", "step": "apply_bios_settings", "args": map[string]any{"settings": []any{map[string]any{"name": "vt", "value": "off"}}}},
	}
	if diff := cmp.Diff(want, sent); diff != "" {
		t.Errorf("steps the agent ran (-want +got):\n%s", diff)
	}
	// Manageable -> cleaning <-> clean wait -> manageable.
	var path []string
	evs, _ := l.st.ListEvents(context.Background(), n.UUID)
	for _, e := range evs {
		if e.Kind == store.KindProvision && e.FromState != e.ToState {
			path = append(path, e.ToState)
		}
	}
	wantPath := []string{states.Manageable, states.Cleaning, states.CleanWait, states.Cleaning, states.CleanWait,
		states.Cleaning, states.CleanWait, states.Cleaning, states.Manageable}
	if diff := cmp.Diff(wantPath, path); diff != "" {
		t.Errorf("state history (-want +got):\n%s", diff)
	}
}

func TestManualCleanFailures(t *testing.T) {
	tests := []struct {
		name      string
		steps     []map[string]any
		agentFail string // the agent ends the first step FAILED with this
		wantError string
	}{
		{"agent error", []map[string]any{{"interface": "deploy", "step": "update_firmware", "args": map[string]any{"version": "9.9"}}},
			"clean step update_firmware: flash failed: image rejected", "flash failed: image rejected"},
		{"wrong interface", []map[string]any{{"interface": "deploy", "step": "apply_bios_settings", "args": map[string]any{"settings": []any{}}}},
			"", "clean step {'interface': 'deploy', 'step': 'apply_bios_settings'} is not supported by the agent"},
		{"missing required argument", []map[string]any{{"interface": "deploy", "step": "update_firmware"}},
			"", "is missing required argument(s): version"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t, nil)
			withBIOSSteps(l.agent)
			n := l.enroll(t, states.Manageable)
			l.act(t, n.UUID, "clean", tc.steps)
			l.lookup(t)
			l.heartbeat(t, n.UUID)
			if tc.agentFail != "" {
				l.agent.finish(agent.StatusFailed, tc.agentFail)
				l.heartbeat(t, n.UUID)
			}
			got := l.node(t, n.UUID)
			wantState(t, got, states.CleanFailed)
			if !strings.Contains(got.LastError, tc.wantError) {
				t.Errorf("last_error = %q, want it to contain %q", got.LastError, tc.wantError)
			}
			// clean failed -> manage -> manageable, as in Ironic.
			l.act(t, n.UUID, "manage", nil)
			wantState(t, l.node(t, n.UUID), states.Manageable)
		})
	}
}

// TestRecoverClosesHistoryGap: a kill between saving a transition and
// recording it leaves the history one step behind; the restart records it.
func TestRecoverClosesHistoryGap(t *testing.T) {
	ctx := context.Background()
	l := newLab(t, nil)
	n := l.enroll(t, states.Available)
	n.ProvisionState = states.DeployWait // saved, never recorded
	if err := l.st.UpdateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := l.c.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	evs, _ := l.st.ListEvents(ctx, n.UUID)
	last := evs[len(evs)-1]
	if last.FromState != states.Available || last.ToState != states.DeployWait || last.Event != conductor.EventUnrecorded {
		t.Errorf("last event %+v, want available -> wait call-back %q", last, conductor.EventUnrecorded)
	}
	wantState(t, l.node(t, n.UUID), states.DeployWait)
}
