package conductor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/deploy/agent"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/power/fake"
	"github.com/ironlab/ironlab/driver/store"
)

// scriptedAgent answers /v1/commands like the reference IPA. Async commands
// stay RUNNING until the test calls finish.
type scriptedAgent struct {
	mu       sync.Mutex
	token    string
	cmds     []agent.Command
	names    []string         // full names of every command posted, in order
	params   []map[string]any // their params
	steps    map[string]any   // clean_steps result
	tokenBad int
	down     bool   // /v1/status answers 503: the agent is gone
	failCmd  string // a sync command (short name) that answers FAILED
}

func newAgent(t *testing.T) (*scriptedAgent, *httptest.Server) {
	a := &scriptedAgent{steps: map[string]any{"GenericHardwareManager": []any{
		map[string]any{"step": "erase_devices", "priority": 10, "interface": "deploy", "reboot_requested": false, "abortable": true},
		map[string]any{"step": "erase_devices_metadata", "priority": 99, "interface": "deploy", "reboot_requested": false, "abortable": true},
		map[string]any{"step": "erase_pstore", "priority": 0, "interface": "deploy", "reboot_requested": false, "abortable": true},
	}}}
	srv := httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(srv.Close)
	return a, srv
}

func (a *scriptedAgent) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.URL.Path == "/v1/status" {
		if a.down {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, `{"started_at": 1, "version": "10.0.0"}`)
		return
	}
	if r.URL.Path != "/v1/commands/" && r.URL.Path != "/v1/commands" {
		http.NotFound(w, r)
		return
	}
	if a.token != "" && r.URL.Query().Get("agent_token") != a.token {
		a.tokenBad++
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"faultstring": "Token invalid."}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodGet {
		json.NewEncoder(w).Encode(map[string]any{"commands": a.cmds})
		return
	}
	var body struct {
		Name   string         `json:"name"`
		Params map[string]any `json:"params"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if n := len(a.cmds); n > 0 && a.cmds[n-1].Status == agent.StatusRunning {
		w.WriteHeader(http.StatusConflict)
		fmt.Fprint(w, `{"faultstring": "Agent is busy"}`)
		return
	}
	a.names = append(a.names, body.Name)
	a.params = append(a.params, body.Params)
	_, short, _ := strings.Cut(body.Name, ".")
	cmd := agent.Command{ID: fmt.Sprint(len(a.cmds) + 1), Name: short, Status: agent.StatusSucceeded}
	switch short {
	case "get_deploy_steps":
		cmd.Result = map[string]any{"deploy_steps": map[string]any{}, "hardware_manager_version": map[string]any{"generic_hardware_manager": "1.2"}}
	case "get_clean_steps":
		cmd.Result = map[string]any{"clean_steps": a.steps, "hardware_manager_version": map[string]any{"generic_hardware_manager": "1.2"}}
	case "get_partition_uuids":
		cmd.Result = map[string]any{"root uuid": "0x1234abcd"}
	case a.failCmd:
		cmd.Status = agent.StatusFailed
		cmd.Error = map[string]any{"type": "CommandExecutionError", "code": 500, "message": "Command execution failed", "details": short + " failed in the test"}
	case "execute_deploy_step", "execute_clean_step", "prepare_image", "install_bootloader":
		cmd.Status = agent.StatusRunning
		cmd.Result = map[string]any{}
		if s, ok := body.Params["step"].(map[string]any); ok {
			key := "deploy_step"
			if short == "execute_clean_step" {
				key = "clean_step"
			}
			cmd.Result = map[string]any{key: s}
		}
	}
	a.cmds = append(a.cmds, cmd)
	json.NewEncoder(w).Encode(cmd)
}

// finish completes the running command.
func (a *scriptedAgent) finish(status, msg string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := &a.cmds[len(a.cmds)-1]
	c.Status = status
	if msg != "" {
		c.Error = map[string]any{"type": "ImageChecksumError", "code": 500, "message": msg, "details": msg}
	}
}

func (a *scriptedAgent) commandNames() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.names...)
}

type lab struct {
	c     *conductor.Conductor
	st    store.Store
	agent *scriptedAgent
	url   string
}

func newLab(t *testing.T, mutate func(*conductor.Config, *agent.Config)) *lab {
	t.Helper()
	st := openStore(t)
	acfg := agent.Config{PollInterval: time.Millisecond}
	cfg := conductor.Config{Host: "test-conductor", LockRetryInterval: time.Millisecond, PowerRetryInterval: time.Millisecond,
		AutomatedClean: true, AgentTokenRequired: true, RestrictLookup: true,
		PowerInterfaces: map[string]power.Interface{"fake": fake.New()}}
	if mutate != nil {
		mutate(&cfg, &acfg)
	}
	cfg.DeployInterfaces = map[string]deploy.Interface{"agent": agent.New(acfg)}
	c := newConductor(t, st, cfg)
	a, srv := newAgent(t)
	return &lab{c: c, st: st, agent: a, url: srv.URL}
}

const mac = "52:54:00:12:34:56"

func (l *lab) enroll(t *testing.T, state string) *store.Node {
	t.Helper()
	ctx := context.Background()
	n := &store.Node{Name: "node-0", Driver: "fake_agent", InstanceInfo: map[string]any{
		"image_source": "http://127.0.0.1:8080/images/disk.raw", "image_os_hash_algo": "sha256", "image_os_hash_value": "abc123"}}
	if err := l.c.CreateNode(ctx, n, state); err != nil {
		t.Fatal(err)
	}
	if err := l.st.CreatePort(ctx, &store.Port{Address: mac, NodeUUID: n.UUID, PXEEnabled: true}); err != nil {
		t.Fatal(err)
	}
	return n
}

func (l *lab) node(t *testing.T, id string) *store.Node {
	t.Helper()
	n, err := l.st.GetNode(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// lookup does a modern lookup and arms the agent with the token.
func (l *lab) lookup(t *testing.T) string {
	t.Helper()
	n, token, err := l.c.Lookup(context.Background(), conductor.LookupQuery{MACs: []string{mac}, Dialect: conductor.DialectV1, Restrict: true, IssueToken: true})
	if err != nil {
		t.Fatalf("lookup: %v", err)
	}
	l.agent.mu.Lock()
	l.agent.token = token
	l.agent.mu.Unlock()
	return n.UUID
}

// heartbeat sends a modern heartbeat and waits for the call-back to finish.
func (l *lab) heartbeat(t *testing.T, id string) {
	t.Helper()
	l.agent.mu.Lock()
	token := l.agent.token
	l.agent.mu.Unlock()
	if err := l.c.Heartbeat(context.Background(), conductor.Heartbeat{Ident: id, AgentURL: l.url, AgentToken: token, AgentVersion: "10.0.0", Dialect: conductor.DialectV1}); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	l.c.Wait()
}

func (l *lab) act(t *testing.T, id, verb string, steps []map[string]any) {
	t.Helper()
	if err := l.c.ProvisionAction(context.Background(), id, verb, steps); err != nil {
		t.Fatalf("%s: %v", verb, err)
	}
	l.c.Wait()
}

func wantState(t *testing.T, n *store.Node, want string) {
	t.Helper()
	if n.ProvisionState != want {
		t.Fatalf("node %s in %q, want %q (last_error %q)", n.UUID, n.ProvisionState, want, n.LastError)
	}
}

func TestDeployReachesActive(t *testing.T) {
	l := newLab(t, nil)
	n := l.enroll(t, states.Available)
	l.act(t, n.UUID, "active", nil)
	got := l.node(t, n.UUID)
	wantState(t, got, states.DeployWait)
	if got.PowerState != "power on" {
		t.Errorf("power_state after deploy start = %q, want power on", got.PowerState)
	}
	l.lookup(t)
	l.heartbeat(t, n.UUID)
	wantState(t, l.node(t, n.UUID), states.DeployWait)
	l.heartbeat(t, n.UUID) // write_image still RUNNING: nothing happens
	l.agent.finish(agent.StatusSucceeded, "")
	l.heartbeat(t, n.UUID)
	got = l.node(t, n.UUID)
	wantState(t, got, states.Active)
	if got.LastError != "" || got.PowerState != "power on" {
		t.Errorf("active node: last_error %q, power %q", got.LastError, got.PowerState)
	}
	if diff := cmp.Diff([]string{"deploy.get_deploy_steps", "deploy.execute_deploy_step", "standby.get_partition_uuids", "standby.power_off"}, l.agent.commandNames()); diff != "" {
		t.Errorf("agent commands (-want +got):\n%s", diff)
	}
	step := l.agent.params[1]["step"].(map[string]any)
	info := step["args"].(map[string]any)["image_info"].(map[string]any)
	wantInfo := map[string]any{"id": "disk.raw", "urls": []any{"http://127.0.0.1:8080/images/disk.raw"}, "disk_format": "raw",
		"container_format": "bare", "stream_raw_images": true, "node_uuid": n.UUID, "os_hash_algo": "sha256", "os_hash_value": "abc123"}
	if diff := cmp.Diff(wantInfo, info); diff != "" {
		t.Errorf("image_info (-want +got):\n%s", diff)
	}
	di, dii := got.DriverInfoView(), got.DriverInternalInfoView()
	if di["agent_url"] != l.url || dii["agent_url"] != l.url {
		t.Errorf("agent_url not in driver_info and driver_internal_info: %v / %v", di, dii)
	}
	if hb, ok := di["agent_last_heartbeat"].(int64); !ok || time.Since(time.Unix(hb, 0)) > time.Minute {
		t.Errorf("agent_last_heartbeat missing from driver_info, or not Unix seconds of now: %v", di)
	}
	if l.agent.tokenBad != 0 {
		t.Errorf("agent refused the token %d times", l.agent.tokenBad)
	}
	// Every transition is in the history.
	evs, _ := l.st.ListEvents(context.Background(), n.UUID)
	var path []string
	for _, e := range evs {
		if e.Kind == store.KindProvision && e.FromState != e.ToState {
			path = append(path, e.ToState)
		}
	}
	wantPath := []string{states.Available, states.Deploying, states.DeployWait, states.Deploying, states.DeployWait, states.Deploying, states.Active}
	if diff := cmp.Diff(wantPath, path); diff != "" {
		t.Errorf("state history (-want +got):\n%s", diff)
	}
}

func TestDeployUEFIInstallsBootloader(t *testing.T) {
	l := newLab(t, nil)
	n := l.enroll(t, states.Available)
	if _, err := l.c.UpdateNode(context.Background(), n.UUID, func(n *store.Node) error {
		n.Properties["capabilities"] = "boot_mode:uefi"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	l.act(t, n.UUID, "active", nil)
	l.lookup(t)
	l.heartbeat(t, n.UUID)
	l.agent.finish(agent.StatusSucceeded, "")
	// install_bootloader is polled by the conductor itself: finish it from
	// the side while the call-back waits.
	go func() {
		for !contains(l.agent.commandNames(), "image.install_bootloader") {
			time.Sleep(time.Millisecond)
		}
		l.agent.finish(agent.StatusSucceeded, "")
	}()
	l.heartbeat(t, n.UUID)
	wantState(t, l.node(t, n.UUID), states.Active)
	if diff := cmp.Diff([]string{"deploy.get_deploy_steps", "deploy.execute_deploy_step", "standby.get_partition_uuids", "image.install_bootloader", "standby.power_off"}, l.agent.commandNames()); diff != "" {
		t.Errorf("agent commands (-want +got):\n%s", diff)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestDeployFailedCommand(t *testing.T) {
	l := newLab(t, nil)
	n := l.enroll(t, states.Available)
	l.act(t, n.UUID, "deploy", nil)
	l.lookup(t)
	l.heartbeat(t, n.UUID)
	l.agent.finish(agent.StatusFailed, "Image checksum mismatch: expected abc123, got 9f86d0")
	l.heartbeat(t, n.UUID)
	got := l.node(t, n.UUID)
	wantState(t, got, states.DeployFailed)
	if !strings.Contains(got.LastError, "Image checksum mismatch: expected abc123, got 9f86d0") {
		t.Errorf("last_error = %q, want the agent's error", got.LastError)
	}
}

func TestLegacyAgentGetsPrepareImage(t *testing.T) {
	l := newLab(t, nil)
	n := l.enroll(t, states.Available)
	l.act(t, n.UUID, "active", nil)
	if _, _, err := l.c.Lookup(context.Background(), conductor.LookupQuery{MACs: []string{mac}, Dialect: conductor.DialectLegacy}); err != nil {
		t.Fatal(err)
	}
	hb := func() {
		if err := l.c.Heartbeat(context.Background(), conductor.Heartbeat{Ident: n.UUID, AgentURL: l.url + "/", Dialect: conductor.DialectLegacy}); err != nil {
			t.Fatal(err)
		}
		l.c.Wait()
	}
	hb()
	l.agent.finish(agent.StatusSucceeded, "")
	hb()
	wantState(t, l.node(t, n.UUID), states.Active)
	if diff := cmp.Diff([]string{"standby.prepare_image"}, l.agent.commandNames()); diff != "" {
		t.Errorf("agent commands (-want +got):\n%s", diff)
	}
}

func TestCleaning(t *testing.T) {
	tests := []struct {
		name       string
		priorities map[string]int
		wantSteps  []string
	}{
		{"agent priorities", nil, []string{"erase_devices_metadata", "erase_devices"}},
		{"erase_devices disabled", map[string]int{"erase_devices": 0}, []string{"erase_devices_metadata"}},
		{"erase_devices first", map[string]int{"erase_devices": 100}, []string{"erase_devices", "erase_devices_metadata"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t, func(_ *conductor.Config, a *agent.Config) { a.CleanStepPriorities = tc.priorities })
			n := l.enroll(t, states.Manageable)
			l.act(t, n.UUID, "provide", nil)
			wantState(t, l.node(t, n.UUID), states.CleanWait)
			l.lookup(t)
			for i := 0; i < len(tc.wantSteps); i++ {
				l.heartbeat(t, n.UUID)
				wantState(t, l.node(t, n.UUID), states.CleanWait)
				l.agent.finish(agent.StatusSucceeded, "")
			}
			l.heartbeat(t, n.UUID)
			got := l.node(t, n.UUID)
			wantState(t, got, states.Available)
			if got.PowerState != "power off" {
				t.Errorf("power after cleaning = %q, want power off", got.PowerState)
			}
			var ran []string
			for i, name := range l.agent.commandNames() {
				if name == "clean.execute_clean_step" {
					ran = append(ran, l.agent.params[i]["step"].(map[string]any)["step"].(string))
				}
			}
			if diff := cmp.Diff(tc.wantSteps, ran); diff != "" {
				t.Errorf("clean steps run (-want +got):\n%s", diff)
			}
		})
	}
}

func TestManualCleanAndFailure(t *testing.T) {
	l := newLab(t, nil)
	n := l.enroll(t, states.Manageable)
	l.act(t, n.UUID, "clean", []map[string]any{{"interface": "deploy", "step": "erase_devices"}})
	l.lookup(t)
	l.heartbeat(t, n.UUID)
	l.agent.finish(agent.StatusSucceeded, "")
	l.heartbeat(t, n.UUID)
	wantState(t, l.node(t, n.UUID), states.Manageable)

	l.act(t, n.UUID, "provide", nil)
	l.heartbeat(t, n.UUID)
	l.agent.finish(agent.StatusFailed, "Erasing device /dev/vda failed: I/O error")
	l.heartbeat(t, n.UUID)
	got := l.node(t, n.UUID)
	wantState(t, got, states.CleanFailed)
	if !strings.Contains(got.LastError, "Erasing device /dev/vda failed: I/O error") || !got.Maintenance || got.Fault != "clean failure" {
		t.Errorf("clean failure: last_error %q maintenance %v fault %q", got.LastError, got.Maintenance, got.Fault)
	}
}

func TestUndeployCleansToAvailable(t *testing.T) {
	for _, automated := range []bool{true, false} {
		t.Run(fmt.Sprintf("automated_clean=%v", automated), func(t *testing.T) {
			l := newLab(t, func(c *conductor.Config, _ *agent.Config) { c.AutomatedClean = automated })
			n := l.enroll(t, states.Available)
			l.act(t, n.UUID, "active", nil)
			l.lookup(t)
			l.heartbeat(t, n.UUID)
			l.agent.finish(agent.StatusSucceeded, "")
			l.heartbeat(t, n.UUID)
			wantState(t, l.node(t, n.UUID), states.Active)
			l.act(t, n.UUID, "deleted", nil)
			if automated {
				wantState(t, l.node(t, n.UUID), states.CleanWait)
				for i := 0; i < 2; i++ {
					l.heartbeat(t, n.UUID)
					l.agent.finish(agent.StatusSucceeded, "")
				}
				l.heartbeat(t, n.UUID)
			}
			got := l.node(t, n.UUID)
			wantState(t, got, states.Available)
			if len(got.InstanceInfo) != 0 {
				t.Errorf("instance_info after undeploy = %v, want empty", got.InstanceInfo)
			}
		})
	}
}

func TestAbortAndTimeouts(t *testing.T) {
	ctx := context.Background()
	l := newLab(t, func(c *conductor.Config, _ *agent.Config) {
		c.DeployCallbackTimeout = time.Hour
		c.CleanCallbackTimeout = time.Hour
	})
	n := l.enroll(t, states.Available)
	l.act(t, n.UUID, "active", nil)
	if err := l.c.Check(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	wantState(t, l.node(t, n.UUID), states.DeployWait)
	if err := l.c.Check(ctx, time.Now().Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	got := l.node(t, n.UUID)
	wantState(t, got, states.DeployFailed)
	if want := "Timeout reached while waiting for callback for node " + n.UUID; got.LastError != want {
		t.Errorf("last_error = %q, want %q", got.LastError, want)
	}
	l.act(t, n.UUID, "deleted", nil)
	wantState(t, l.node(t, n.UUID), states.CleanWait)
	l.act(t, n.UUID, "abort", nil)
	wantState(t, l.node(t, n.UUID), states.CleanFailed)
}

func TestWatchdog(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		action          string
		wantMaintenance bool
	}{
		{conductor.WatchdogMaintenance, true},
		{conductor.WatchdogReboot, false},
	}
	for _, tc := range tests {
		t.Run(tc.action, func(t *testing.T) {
			l := newLab(t, func(c *conductor.Config, _ *agent.Config) {
				c.WatchdogAction = tc.action
				c.HeartbeatTimeout = time.Minute
				c.WatchdogMaxReboots = 1
			})
			n := l.enroll(t, states.Available)
			l.act(t, n.UUID, "active", nil)
			l.lookup(t)
			l.heartbeat(t, n.UUID)
			if err := l.c.Check(ctx, time.Now().Add(2*time.Minute)); err != nil {
				t.Fatal(err)
			}
			got := l.node(t, n.UUID)
			if got.Maintenance != tc.wantMaintenance {
				t.Fatalf("maintenance = %v (%q), want %v", got.Maintenance, got.MaintenanceReason, tc.wantMaintenance)
			}
			if tc.wantMaintenance && !strings.Contains(got.MaintenanceReason, "heartbeat_timeout is 60s") {
				t.Errorf("maintenance_reason = %q, want it to name the timeout", got.MaintenanceReason)
			}
			if !tc.wantMaintenance {
				// The cap: the next miss after one reboot means maintenance.
				if err := l.c.Check(ctx, time.Now().Add(4*time.Minute)); err != nil {
					t.Fatal(err)
				}
				if got := l.node(t, n.UUID); !got.Maintenance {
					t.Errorf("after the reboot cap: maintenance = false")
				}
			}
		})
	}
}

func TestLockedNode(t *testing.T) {
	ctx := context.Background()
	l := newLab(t, nil)
	n := l.enroll(t, states.Available)
	if err := l.st.Reserve(ctx, n.UUID, "other-conductor"); err != nil {
		t.Fatal(err)
	}
	err := l.c.ProvisionAction(ctx, n.UUID, "active", nil)
	if !errorsIs(err, conductor.ErrNodeLocked) {
		t.Fatalf("deploy of a locked node: %v, want ErrNodeLocked", err)
	}
	err = l.c.Heartbeat(ctx, conductor.Heartbeat{Ident: n.UUID, AgentURL: l.url, Dialect: conductor.DialectLegacy})
	if !errorsIs(err, conductor.ErrNodeLocked) {
		t.Fatalf("legacy heartbeat of a locked node: %v, want ErrNodeLocked", err)
	}
}
