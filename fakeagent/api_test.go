package fakeagent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

func TestAPIStatusCodes(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	ta := startAgent(t, api, testHardware(t, macA), func(c *Config) {
		c.Faults = Faults{HangCommand: "install_bootloader"} // keeps one command RUNNING
	})
	ta.waitLookedUp(t)
	tok := api.token(nodeA)
	base := ta.srv.URL

	// A hung command makes the agent busy; POST returns 200 RUNNING.
	status, res := ta.post(t, "image.install_bootloader", map[string]any{"root_uuid": "0x00000000"}, false, tok)
	if status != 200 || res["command_status"] != StatusRunning || res["command_name"] != "install_bootloader" {
		t.Fatalf("POST install_bootloader = %d %v, want 200 RUNNING", status, res)
	}
	runningID := res["id"].(string)

	tests := []struct {
		name, method, path, body string
		want                     int
		wantFault                string // substring of faultstring
	}{
		{"root", "GET", "/", "", 200, ""},
		{"v1", "GET", "/v1/", "", 200, ""},
		{"status needs no token", "GET", "/v1/status", "", 200, ""},
		{"status without v1", "GET", "/status", "", 200, ""},
		{"no token", "POST", "/v1/commands/?wait=true", `{"name": "standby.sync", "params": {}}`, 401, "Token invalid"},
		{"wrong token", "POST", "/v1/commands/?agent_token=nope", `{"name": "standby.sync", "params": {}}`, 401, "Token invalid"},
		{"busy", "POST", "/v1/commands/?agent_token=" + tok, `{"name": "standby.sync", "params": {}}`, 409, "Agent is busy"},
		{"bad JSON", "POST", "/v1/commands/?agent_token=" + tok, `{"name":`, 400, "Bad Request"},
		{"missing params", "POST", "/v1/commands/?agent_token=" + tok, `{"name": "standby.sync"}`, 400, "Missing or invalid name or params"},
		{"params not an object", "POST", "/v1/commands/?agent_token=" + tok, `{"name": "standby.sync", "params": []}`, 400, "Missing or invalid name or params"},
		{"unknown command id", "GET", "/v1/commands/nope", "", 404, "not found"},
		{"running command by id", "GET", "/v1/commands/" + runningID, "", 200, ""},
		{"list without trailing slash", "GET", "/v1/commands", "", 200, ""},
		{"list without v1", "GET", "/commands/", "", 200, ""},
		{"unknown route", "GET", "/v2/whatever", "", 404, "Not Found"},
		{"wrong method", "DELETE", "/v1/status", "", 405, "Method Not Allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, res := doJSON(t, tc.method, base+tc.path, []byte(tc.body))
			if status != tc.want {
				t.Fatalf("%s %s = %d %v, want %d", tc.method, tc.path, status, res, tc.want)
			}
			if tc.wantFault != "" {
				if fs, _ := res["faultstring"].(string); !strings.Contains(fs, tc.wantFault) {
					t.Errorf("faultstring = %q, want it to contain %q", fs, tc.wantFault)
				}
			}
		})
	}

	// Release the hang: the command finishes and the agent takes commands again.
	if err := ta.SetFaults(Faults{}); err != nil {
		t.Fatal(err)
	}
	status, res = doJSON(t, "GET", base+"/v1/commands/"+runningID+"?wait=true", nil)
	if status != 200 || res["command_status"] != StatusSucceeded {
		t.Fatalf("released command = %d %v, want SUCCEEDED", status, res)
	}
	for _, tc := range []struct {
		name, body string
		want       int
		wantFault  string
	}{
		{"unknown extension", `{"name": "nosuch.cmd", "params": {}}`, 404, "Extension with id nosuch not found"},
		{"unknown command", `{"name": "standby.nosuch", "params": {}}`, 400, "Unknown command: standby.nosuch"},
		{"bad name", `{"name": "sync", "params": {}}`, 400, "Invalid command name"},
		{"invalid params", `{"name": "standby.prepare_image", "params": {"image_info": {"id": "x"}}}`, 400, "no urls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, res := doJSON(t, "POST", base+"/v1/commands/?agent_token="+tok, []byte(tc.body))
			if status != tc.want {
				t.Fatalf("POST %s = %d %v, want %d", tc.body, status, res, tc.want)
			}
			if fs, _ := res["faultstring"].(string); !strings.Contains(fs, tc.wantFault) {
				t.Errorf("faultstring = %q, want it to contain %q", fs, tc.wantFault)
			}
		})
	}
}

func TestGetCommandsToken(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	ta := startAgent(t, api, testHardware(t, macA), nil)
	ta.waitLookedUp(t)
	tok := api.token(nodeA)
	// Ironic's poller sends no token on GET: IPA allows that...
	if status, _ := doJSON(t, "GET", ta.srv.URL+"/v1/commands/", nil); status != 200 {
		t.Fatalf("GET without token = %d, want 200", status)
	}
	if status, _ := doJSON(t, "GET", ta.srv.URL+"/v1/commands/?agent_token=wrong", nil); status != 401 {
		t.Fatalf("GET with a wrong token = %d, want 401", status)
	}
	// ...until a client has sent one; from then on GET needs it too.
	if status, _ := doJSON(t, "GET", ta.srv.URL+"/v1/commands/?agent_token="+tok, nil); status != 200 {
		t.Fatalf("GET with the token = %d, want 200", status)
	}
	if status, _ := doJSON(t, "GET", ta.srv.URL+"/v1/commands/", nil); status != 401 {
		t.Fatalf("GET without token after a tokened GET = %d, want 401", status)
	}
}

func TestTokenBeforeLookup(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, false, macA) // never accepts: the agent has no token
	ta := startAgent(t, api, testHardware(t, macA), nil)
	waitFor(t, "a refused lookup", func() bool { return api.lookupCount() >= 1 })
	for _, tok := range []string{"", "anything"} {
		if status, _ := ta.post(t, "standby.sync", map[string]any{}, true, tok); status != 401 {
			t.Errorf("POST with token %q before lookup = %d, want 401", tok, status)
		}
	}
}

func TestLegacyNeedsNoToken(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	ta := startAgent(t, api, testHardware(t, macA), func(c *Config) { c.Dialect = DialectLegacy })
	ta.waitLookedUp(t)
	// Juno's client: no token, no trailing slash.
	status, res := doJSON(t, "POST", ta.srv.URL+"/v1/commands?wait=true", []byte(`{"name": "standby.sync", "params": {}}`))
	if status != 200 || res["command_status"] != StatusSucceeded {
		t.Fatalf("legacy POST = %d %v, want 200 SUCCEEDED", status, res)
	}
}

func TestCommandResults(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	ta := startAgent(t, api, testHardware(t, macA), nil)
	ta.waitLookedUp(t)
	cleanStep := map[string]any{"interface": "deploy", "step": "erase_devices_metadata", "priority": 99, "args": map[string]any{}}
	tests := []struct {
		name       string
		cmd        string
		params     map[string]any
		wantStatus string
		wantResult any
	}{
		{"get_clean_steps", "clean.get_clean_steps", map[string]any{"node": map[string]any{}, "ports": []any{}}, StatusSucceeded,
			map[string]any{
				"clean_steps":              map[string]any{"GenericHardwareManager": genericCleanSteps, "IronlabHardwareManager": ironlabCleanSteps},
				"hardware_manager_version": map[string]any{"generic_hardware_manager": "1.2", "ironlab_hardware_manager": "1.0"},
			}},
		{"get_deploy_steps", "deploy.get_deploy_steps", map[string]any{"node": map[string]any{}, "ports": []any{}}, StatusSucceeded,
			map[string]any{
				"deploy_steps":             map[string]any{"GenericHardwareManager": deploySteps},
				"hardware_manager_version": map[string]any{"generic_hardware_manager": "1.2", "ironlab_hardware_manager": "1.0"},
			}},
		{"execute_clean_step echoes the step", "clean.execute_clean_step",
			map[string]any{"step": cleanStep, "node": map[string]any{}, "ports": []any{}, "clean_version": hardwareManagerVersion}, StatusSucceeded,
			map[string]any{"clean_result": nil, "clean_step": cleanStep}},
		{"clean version mismatch", "clean.execute_clean_step",
			map[string]any{"step": cleanStep, "node": map[string]any{}, "ports": []any{}, "clean_version": map[string]string{"generic_hardware_manager": "1.1"}},
			StatusCleanVersionMismatch, nil},
		{"unknown clean step fails", "clean.execute_clean_step",
			map[string]any{"step": map[string]any{"step": "frobnicate", "interface": "deploy"}, "node": map[string]any{}, "ports": []any{}},
			StatusFailed, nil},
		{"sync", "standby.sync", map[string]any{}, StatusSucceeded, nil},
		{"install_bootloader", "image.install_bootloader",
			map[string]any{"root_uuid": "0x00000000", "efi_system_part_uuid": nil, "prep_boot_part_uuid": nil, "target_boot_mode": "bios"}, StatusSucceeded, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := ta.runCommand(t, api, tc.cmd, tc.params)
			if res["command_status"] != tc.wantStatus {
				t.Fatalf("status = %v (error %v), want %s", res["command_status"], res["command_error"], tc.wantStatus)
			}
			if want := tc.cmd[strings.IndexByte(tc.cmd, '.')+1:]; res["command_name"] != want {
				t.Errorf("command_name = %v, want the short name %s", res["command_name"], want)
			}
			if tc.wantStatus != StatusSucceeded {
				ce, _ := res["command_error"].(map[string]any)
				for _, k := range []string{"type", "code", "message", "details"} {
					if _, ok := ce[k]; !ok {
						t.Errorf("command_error %v lacks %q", ce, k)
					}
				}
				return
			}
			if res["command_error"] != nil {
				t.Errorf("command_error = %v, want null", res["command_error"])
			}
			if diff := cmp.Diff(roundTrip(t, tc.wantResult), res["command_result"]); diff != "" {
				t.Errorf("command_result (-want +got):\n%s", diff)
			}
		})
	}

	// The list keeps execution order.
	_, list := doJSON(t, "GET", ta.srv.URL+"/v1/commands/", nil)
	var names []string
	for _, c := range list["commands"].([]any) {
		names = append(names, c.(map[string]any)["command_name"].(string))
	}
	want := []string{"get_clean_steps", "get_deploy_steps", "execute_clean_step", "execute_clean_step", "execute_clean_step", "sync", "install_bootloader"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("command list (-want +got):\n%s", diff)
	}
}

func TestCollectSystemLogs(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	ta := startAgent(t, api, testHardware(t, macA), nil)
	ta.waitLookedUp(t)
	res := ta.runCommand(t, api, "log.collect_system_logs", map[string]any{})
	b64, _ := res["command_result"].(map[string]any)["system_logs"].(string)
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("system_logs is not base64: %v", err)
	}
	gz, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("system_logs is not gzip: %v", err)
	}
	tr := tar.NewReader(gz)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = string(b)
	}
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	if diff := cmp.Diff([]string{"commands.json", "inventory.json", "ironlab-agent.log"}, names); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if !strings.Contains(files["ironlab-agent.log"], "lookup succeeded") {
		t.Errorf("agent log lacks the lookup:\n%s", files["ironlab-agent.log"])
	}
}

func TestPowerOff(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	powered := make(chan struct{})
	ta := startAgent(t, api, testHardware(t, macA), func(c *Config) {
		c.PowerOff = func(context.Context) error { close(powered); return nil }
	})
	ta.waitLookedUp(t)
	status, res := ta.post(t, "standby.power_off", map[string]any{}, false, api.token(nodeA))
	if status != 200 || res["command_name"] != "power_off" {
		t.Fatalf("POST power_off = %d %v", status, res)
	}
	labtest.Recv(t, powered, "the machine's power off")
	if err := labtest.Recv(t, ta.done, "end of the agent's Run"); !errors.Is(err, ErrPoweredOff) {
		t.Fatalf("Run returned %v, want ErrPoweredOff", err)
	}
	ta.done <- nil // for the cleanup
	if got := ta.State().Phase; got != PhaseStopped {
		t.Errorf("phase = %s, want %s", got, PhaseStopped)
	}
}
