package fakeagent

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

func TestForcedHeartbeatAfterAsyncCommand(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.timeout = 300 // periodic heartbeats 90-180 s apart: only a forced one can come
	api.addNode(nodeA, true, macA)
	ta := startAgent(t, api, testHardware(t, macA), nil)
	labtest.Recv(t, api.hbCh, "a heartbeat")
	ta.runCommand(t, api, "image.install_bootloader", map[string]any{"root_uuid": "0x1"})
	labtest.Recv(t, api.hbCh, "a heartbeat")
	waitFor(t, "the agent to count its heartbeat", func() bool { return ta.State().HeartbeatsSent >= 2 })
	if got := ta.State().HeartbeatsSent; got != 2 {
		t.Errorf("heartbeats = %d, want 2 (the first and the forced one)", got)
	}
}

func TestStopHeartbeatsFault(t *testing.T) {
	tests := []struct {
		name   string
		stop   HeartbeatStop
		resume func(ta *testAgent)
	}{
		{"for a duration", HeartbeatStop{After: 2, For: Duration(200e6)}, func(*testAgent) {}},
		{"until faults change", HeartbeatStop{After: 2}, func(ta *testAgent) { ta.SetFaults(Faults{}) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := newScriptedIronic(t, 99)
			api.timeout = 0.05
			api.addNode(nodeA, true, macA)
			stop := tc.stop
			ta := startAgent(t, api, testHardware(t, macA), func(c *Config) { c.Faults = Faults{StopHeartbeats: &stop} })
			waitFor(t, "silence", func() bool { return ta.State().Phase == PhaseSilent })
			if got := ta.State().HeartbeatsSent; got != 2 {
				t.Fatalf("heartbeats before silence = %d, want 2", got)
			}
			tc.resume(ta)
			waitFor(t, "heartbeats to resume", func() bool { return ta.State().HeartbeatsSent > 2 })
			if got := ta.State().Phase; got != PhaseHeartbeat {
				t.Errorf("phase = %s, want %s", got, PhaseHeartbeat)
			}
		})
	}
}

// Faults set right after the heartbeat loop decided to stay silent until
// they change wake it: the loop waits on the faults' channel it judged by.
// It read the channel afresh at the top of each round, so a SetFaults
// between the decision and that read was lost and the agent never
// heartbeated again (seen once under -race, as TestStopHeartbeatsFault's
// "until faults change" timing out).
func TestFaultsSetAsTheLoopParksWakeIt(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.timeout = 0.05
	api.addNode(nodeA, true, macA)
	stop := HeartbeatStop{After: 1}
	var once sync.Once
	ta := startAgentHooked(t, api, testHardware(t, macA), func(c *Config) { c.Faults = Faults{StopHeartbeats: &stop} }, func(a *Agent) {
		a.afterSilence = func(silent bool) {
			if silent {
				once.Do(func() {
					if err := a.SetFaults(Faults{}); err != nil {
						t.Error(err)
					}
				})
			}
		}
	})
	waitFor(t, "heartbeats after the faults were cleared", func() bool { return ta.State().HeartbeatsSent > 1 })
}

func TestFailCommandFault(t *testing.T) {
	image := testImage(1 << 20)
	srv := imageServer(t, image)
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	ta := startAgent(t, api, testHardware(t, macA), nil)
	ta.waitLookedUp(t)
	if err := ta.SetFaults(Faults{FailCommand: &CommandFailure{Command: "write_image", Error: "disk on fire"}}); err != nil {
		t.Fatal(err)
	}
	info := map[string]any{"id": "img", "urls": []string{srv.URL + "/good.img"}, "checksum": fmt.Sprintf("%x", sha256.Sum256(image))}
	res := ta.runCommand(t, api, "deploy.execute_deploy_step", writeImageStep(info))
	want := map[string]any{"type": "CommandExecutionError", "code": 500.0, "message": "Command execution failed", "details": "disk on fire"}
	if res["command_status"] != StatusFailed {
		t.Fatalf("status = %v, want FAILED", res["command_status"])
	}
	if diff := cmp.Diff(want, res["command_error"]); diff != "" {
		t.Errorf("command_error (-want +got):\n%s", diff)
	}
	if b, _ := os.ReadFile(ta.hw.Hardware().Disks[0].Path); bytes.Contains(b, image[:4096]) {
		t.Errorf("the failed command wrote the image anyway")
	}
}

func TestCrashFault(t *testing.T) {
	tests := []struct {
		name, crash, cmd string
		params           map[string]any
		postFails        bool // sync commands die with the request
	}{
		{"async clean step by step name", "erase_devices", "clean.execute_clean_step", cleanStepParams("erase_devices", 10, nil), false},
		{"sync command", "standby.sync", "standby.sync", map[string]any{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := newScriptedIronic(t, 99)
			api.timeout = 0.05
			api.addNode(nodeA, true, macA)
			ta := startAgent(t, api, testHardware(t, macA), func(c *Config) { c.Faults = Faults{CrashDuring: tc.crash} })
			labtest.Recv(t, api.hbCh, "a heartbeat")
			body := fmt.Sprintf(`{"name": %q, "params": %s}`, tc.cmd, mustJSON(t, tc.params))
			resp, err := http.Post(ta.srv.URL+"/v1/commands/?agent_token="+api.token(nodeA), "application/json", strings.NewReader(body))
			if tc.postFails {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("POST %s answered %d; want the connection dropped", tc.cmd, resp.StatusCode)
				}
			} else {
				if err != nil {
					t.Fatalf("POST %s: %v", tc.cmd, err)
				}
				resp.Body.Close()
			}
			waitFor(t, "the crash", func() bool { return ta.State().Phase == PhaseCrashed })
			if resp, err := http.Get(ta.srv.URL + "/v1/status"); err == nil {
				resp.Body.Close()
				t.Errorf("a crashed agent answered GET /v1/status with %d", resp.StatusCode)
			}
			// Alive, it would heartbeat every 15-30 ms (timeout 50 ms); give a
			// crashed one ten such intervals to prove it stays quiet.
			api.mu.Lock()
			sent := len(api.heartbeats)
			api.mu.Unlock()
			ta.forceHeartbeat()
			time.Sleep(300 * time.Millisecond)
			api.mu.Lock()
			got := len(api.heartbeats)
			api.mu.Unlock()
			if got != sent {
				t.Errorf("a crashed agent kept heartbeating: %d -> %d heartbeats", sent, got)
			}
		})
	}
}

func TestSlowDiskFault(t *testing.T) {
	image := testImage(2 << 20)
	srv := imageServer(t, image)
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	ta := startAgent(t, api, testHardware(t, macA), func(c *Config) { c.Faults = Faults{DiskWriteBytesPerSecond: 64 << 10} })
	ta.waitLookedUp(t)
	info := map[string]any{"id": "img", "urls": []string{srv.URL + "/good.img"}, "checksum": fmt.Sprintf("%x", sha256.Sum256(image))}
	status, res := ta.post(t, "deploy.execute_deploy_step", writeImageStep(info), false, api.token(nodeA))
	if status != 200 {
		t.Fatalf("POST = %d %v", status, res)
	}
	// At 64 KiB/s the 2 MiB write is still going.
	_, got := doJSON(t, "GET", ta.srv.URL+"/v1/commands/"+res["id"].(string), nil)
	if got["command_status"] != StatusRunning {
		t.Fatalf("status on a slow disk = %v, want RUNNING", got["command_status"])
	}
	// Lifting the fault at runtime lets it finish, with the right bytes.
	ta.SetFaults(Faults{})
	_, got = doJSON(t, "GET", ta.srv.URL+"/v1/commands/"+res["id"].(string)+"?wait=true", nil)
	if got["command_status"] != StatusSucceeded {
		t.Fatalf("status = %v %v, want SUCCEEDED", got["command_status"], got["command_error"])
	}
	if b, _ := os.ReadFile(ta.hw.Hardware().Disks[0].Path); !bytes.Equal(b[:len(image)], image) {
		t.Errorf("disk bytes differ from the image")
	}
}

func TestFaultsAsData(t *testing.T) {
	const doc = `
stop_heartbeats: {after: 3, for: 2m}
fail_command: {command: write_image, error: "disk on fire"}
crash_during: erase_devices
hang_command: clean.execute_clean_step
disk_write_bytes_per_second: 1048576
`
	want := Faults{
		StopHeartbeats:          &HeartbeatStop{After: 3, For: Duration(120e9)},
		FailCommand:             &CommandFailure{Command: "write_image", Error: "disk on fire"},
		CrashDuring:             "erase_devices",
		HangCommand:             "clean.execute_clean_step",
		DiskWriteBytesPerSecond: 1 << 20,
	}
	var fromYAML Faults
	if err := yaml.Unmarshal([]byte(doc), &fromYAML); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, fromYAML); diff != "" {
		t.Errorf("from YAML (-want +got):\n%s", diff)
	}
	fromJSON, err := ParseFaults(mustJSON(t, want))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, fromJSON); diff != "" {
		t.Errorf("JSON round trip (-want +got):\n%s", diff)
	}
	for _, bad := range []string{`{"stop_heartbeat": {"after": 1}}`, `{"disk_write_bytes_per_second": -1}`, `{"fail_command": {"error": "x"}}`} {
		if _, err := ParseFaults([]byte(bad)); err == nil {
			t.Errorf("ParseFaults(%s) accepted it", bad)
		}
	}
}

func TestCommandMatches(t *testing.T) {
	tests := []struct {
		fault, full, step string
		want              bool
	}{
		{"clean.execute_clean_step", "clean.execute_clean_step", "erase_devices", true},
		{"execute_clean_step", "clean.execute_clean_step", "erase_devices", true},
		{"erase_devices", "clean.execute_clean_step", "erase_devices", true},
		{"erase_devices", "clean.execute_clean_step", "erase_devices_metadata", false},
		{"", "standby.sync", "", false},
		{"sync", "standby.sync", "", true},
	}
	for _, tc := range tests {
		if got := commandMatches(tc.fault, tc.full, tc.step); got != tc.want {
			t.Errorf("commandMatches(%q, %q, %q) = %v, want %v", tc.fault, tc.full, tc.step, got, tc.want)
		}
	}
}
