package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/power/fake"
	"github.com/ironlab/ironlab/driver/store"
)

// answers script an agent: what POST /v1/commands/ answers per command
// name (HTTP 409 with busy), and what GET /v1/commands/ lists.
type answers struct {
	post map[string]Command // by full command name
	busy map[string]bool    // these posts answer 409
	list []Command
	// listBusy makes GET /v1/commands/ answer 409.
	listBusy bool
}

type scripted struct {
	mu     sync.Mutex
	a      answers
	posted []string
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodGet {
		if s.a.listBusy {
			w.WriteHeader(http.StatusConflict)
			fmt.Fprint(w, `{"faultstring": "agent is busy"}`)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"commands": s.a.list})
		return
	}
	var body struct {
		Name string `json:"name"`
	}
	json.NewDecoder(r.Body).Decode(&body)
	s.posted = append(s.posted, body.Name)
	if s.a.busy[body.Name] {
		w.WriteHeader(http.StatusConflict)
		fmt.Fprint(w, `{"faultstring": "agent is busy"}`)
		return
	}
	cmd, ok := s.a.post[body.Name]
	if !ok {
		cmd = Command{Status: StatusSucceeded, Result: map[string]any{}}
	}
	cmd.Name = body.Name[strings.Index(body.Name, ".")+1:]
	json.NewEncoder(w).Encode(cmd)
}

// fakeTask is a locked node without a conductor: it records what the deploy
// interface did through it.
type fakeTask struct {
	node    *store.Node
	powered power.State
	actions []string
}

func (t *fakeTask) Node() *store.Node               { return t.node }
func (t *fakeTask) Ports() []*store.Port            { return nil }
func (t *fakeTask) PowerInterface() power.Interface { return powerNamed{fake.New()} }
func (t *fakeTask) SetPower(ctx context.Context, target power.State) error {
	t.actions = append(t.actions, string(target))
	t.powered = target
	if target == power.Reboot {
		t.powered = power.On
	}
	return nil
}
func (t *fakeTask) GetPower(ctx context.Context) (power.State, error) { return t.powered, nil }
func (t *fakeTask) SetBootDevice(ctx context.Context, dev power.Device, persistent bool) error {
	t.actions = append(t.actions, fmt.Sprintf("boot %s persistent=%v", dev, persistent))
	return nil
}
func (t *fakeTask) FastTrack(ctx context.Context) bool                         { return false }
func (t *fakeTask) Record(ctx context.Context, kind, event, msg string, d any) {}
func (t *fakeTask) Logger() *slog.Logger                                       { return slog.New(slog.DiscardHandler) }

// powerNamed is a real power interface under another name, so the deploy
// polls power after standby.power_off as it does for real BMCs.
type powerNamed struct{ power.Interface }

func (powerNamed) Name() string { return "ipmitool" }

// step is one applied outcome, as the conductor would see it.
type step struct {
	Event, Fail string
	Save        bool
	After       time.Duration
}

// drive applies outcomes the way the conductor does (events through the
// state machine, without persistence or waiting) and lists them.
func drive(t *testing.T, task *fakeTask, out deploy.Outcome, err error) ([]step, error) {
	t.Helper()
	var got []step
	for i := 0; i < 50; i++ {
		if err != nil {
			return got, err
		}
		got = append(got, step{Event: out.Event, Fail: out.Fail, Save: out.Save, After: out.After})
		if out.Fail != "" {
			task.node.LastError = out.Fail
			out.Event = states.EvFail
		}
		if out.Event != "" {
			to, err := states.Next(task.node.ProvisionState, out.Event)
			if err != nil {
				t.Fatalf("outcome %+v in %q: %v", out, task.node.ProvisionState, err)
			}
			task.node.ProvisionState = to
		}
		if out.Then == nil || out.Fail != "" {
			return got, nil
		}
		out, err = out.Then(context.Background(), task)
	}
	t.Fatal("more than 50 steps")
	return nil, nil
}

func TestContinueOutcomes(t *testing.T) {
	writeImage := &store.Step{Interface: "deploy", Step: "write_image", Priority: 80}
	eraseMeta := store.Step{Interface: "deploy", Step: "erase_devices_metadata", Priority: 99, Abortable: true}
	erase := store.Step{Interface: "deploy", Step: "erase_devices", Priority: 10, Abortable: true}
	cleanSteps := map[string]any{"clean_steps": map[string]any{"GenericHardwareManager": []any{
		map[string]any{"step": "erase_devices", "priority": 10, "interface": "deploy", "abortable": true},
		map[string]any{"step": "erase_devices_metadata", "priority": 99, "interface": "deploy", "abortable": true},
		map[string]any{"step": "erase_pstore", "priority": 0, "interface": "deploy"},
	}}, "hardware_manager_version": map[string]any{"generic_hardware_manager": "1.2"}}
	running := Command{Status: StatusRunning}
	tests := []struct {
		name  string
		state string
		// setup changes the node before Continue.
		setup   func(n *store.Node)
		agent   answers
		want    []step
		wantErr string
		// check looks at the node, the commands posted and the power actions after.
		check func(t *testing.T, n *store.Node, posted, actions []string)
	}{
		{name: "no agent yet", state: states.DeployWait, setup: func(n *store.Node) { n.Agent.URL = "" },
			want: []step{{}}},
		{name: "first heartbeat starts write_image", state: states.DeployWait,
			agent: answers{post: map[string]Command{"deploy.execute_deploy_step": running}},
			want:  []step{{Event: states.EvResume}, {Event: states.EvWait}},
			check: func(t *testing.T, n *store.Node, posted, _ []string) {
				if diff := cmp.Diff([]string{"deploy.get_deploy_steps", "deploy.execute_deploy_step"}, posted); diff != "" {
					t.Errorf("commands (-want +got):\n%s", diff)
				}
				if n.DeployStep == nil || n.DeployStep.Step != "write_image" {
					t.Errorf("deploy_step = %v, want write_image", n.DeployStep)
				}
			}},
		{name: "get_deploy_steps while the agent is busy", state: states.DeployWait,
			agent: answers{busy: map[string]bool{"deploy.get_deploy_steps": true}},
			want:  []step{{}}},
		{name: "execute_deploy_step refused busy: retry on the next heartbeat", state: states.DeployWait,
			agent: answers{busy: map[string]bool{"deploy.execute_deploy_step": true}},
			want:  []step{{Event: states.EvResume}, {Event: states.EvWait}},
			check: func(t *testing.T, n *store.Node, _, _ []string) {
				if n.DeployStep != nil {
					t.Errorf("deploy_step = %v, want none (started again next time)", n.DeployStep)
				}
			}},
		{name: "write_image failed at once", state: states.DeployWait,
			agent: answers{post: map[string]Command{"deploy.execute_deploy_step": {Status: StatusFailed, Error: "no disk"}}},
			want:  []step{{Event: states.EvResume}, {Fail: "Agent returned error for deploy step {'interface': 'deploy', 'step': 'write_image'} on node n1 : no disk"}}},
		{name: "write_image still running", state: states.DeployWait, setup: func(n *store.Node) { n.DeployStep = writeImage },
			agent: answers{list: []Command{{Name: "execute_deploy_step", Status: StatusRunning}}},
			want:  []step{{}}},
		{name: "commands listed while busy", state: states.DeployWait, setup: func(n *store.Node) { n.DeployStep = writeImage },
			agent: answers{listBusy: true},
			want:  []step{{}}},
		{name: "write_image failed", state: states.DeployWait, setup: func(n *store.Node) { n.DeployStep = writeImage },
			agent: answers{list: []Command{{Name: "execute_deploy_step", Status: StatusFailed, Error: map[string]any{"message": "checksum mismatch"}}}},
			want:  []step{{Fail: "Agent returned error for deploy step {'interface': 'deploy', 'step': 'write_image'} on node n1 : checksum mismatch"}}},
		{name: "an older step's result is not ours", state: states.DeployWait, setup: func(n *store.Node) { n.DeployStep = writeImage },
			agent: answers{list: []Command{{Name: "execute_deploy_step", Status: StatusSucceeded,
				Result: map[string]any{"deploy_step": map[string]any{"step": "erase_devices"}}}}},
			want: []step{{}}},
		{name: "write_image done: boot the instance", state: states.DeployWait, setup: func(n *store.Node) { n.DeployStep = writeImage },
			agent: answers{list: []Command{{Name: "execute_deploy_step", Status: StatusSucceeded,
				Result: map[string]any{"deploy_step": map[string]any{"step": "write_image"}}}}},
			// standby.power_off, then the BMC says "on" 2 times before the hard power off.
			want: []step{{Event: states.EvResume}, {After: 5 * time.Millisecond}, {After: 5 * time.Millisecond}, {Event: states.EvDone}},
			check: func(t *testing.T, n *store.Node, posted, actions []string) {
				if diff := cmp.Diff([]string{"standby.get_partition_uuids", "standby.power_off"}, posted); diff != "" {
					t.Errorf("commands (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff([]string{"boot disk persistent=true", "power off", "power on"}, actions); diff != "" {
					t.Errorf("power actions (-want +got):\n%s", diff)
				}
				if n.DeployStep != nil {
					t.Errorf("deploy_step after the deploy = %v, want none", n.DeployStep)
				}
			}},
		{name: "UEFI: the bootloader is polled", state: states.DeployWait, setup: func(n *store.Node) {
			n.DeployStep = writeImage
			n.InstanceInfo["capabilities"] = "boot_mode:uefi"
		},
			agent: answers{list: []Command{{Name: "execute_deploy_step", Status: StatusSucceeded}, {Name: "install_bootloader", Status: StatusSucceeded}},
				post: map[string]Command{"image.install_bootloader": running}},
			want: []step{{Event: states.EvResume}, {After: time.Millisecond}, {After: 5 * time.Millisecond}, {After: 5 * time.Millisecond}, {Event: states.EvDone}}},
		{name: "fresh agent in clean wait: plan and start the first step", state: states.CleanWait,
			agent: answers{post: map[string]Command{"clean.get_clean_steps": {Status: StatusSucceeded, Result: cleanSteps},
				"clean.execute_clean_step": running}},
			want: []step{{Event: states.EvResume}, {Save: true}, {Event: states.EvWait}},
			check: func(t *testing.T, n *store.Node, _, _ []string) {
				want := &store.CleanPlan{Steps: []store.Step{eraseMeta, erase}, Index: 0, Started: true,
					Version: map[string]any{"generic_hardware_manager": "1.2"}}
				if diff := cmp.Diff(want, n.CleanPlan); diff != "" {
					t.Errorf("clean plan (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(&eraseMeta, n.CleanStep); diff != "" {
					t.Errorf("clean_step (-want +got):\n%s", diff)
				}
			}},
		{name: "clean step done: the next one", state: states.CleanWait, setup: func(n *store.Node) {
			n.CleanStep = &eraseMeta
			n.CleanPlan = &store.CleanPlan{Steps: []store.Step{eraseMeta, erase}, Started: true}
		},
			agent: answers{list: []Command{{Name: "execute_clean_step", Status: StatusSucceeded}},
				post: map[string]Command{"clean.execute_clean_step": running}},
			want: []step{{Event: states.EvResume}, {Save: true}, {Event: states.EvWait}},
			check: func(t *testing.T, n *store.Node, _, _ []string) {
				if n.CleanPlan.Index != 1 || n.CleanStep.Step != "erase_devices" {
					t.Errorf("after the first step: index %d, clean_step %v", n.CleanPlan.Index, n.CleanStep)
				}
			}},
		{name: "last clean step done: power off, available", state: states.CleanWait, setup: func(n *store.Node) {
			n.CleanStep = &erase
			n.CleanPlan = &store.CleanPlan{Steps: []store.Step{eraseMeta, erase}, Index: 1, Started: true}
		},
			agent: answers{list: []Command{{Name: "execute_clean_step", Status: StatusSucceeded}}},
			want:  []step{{Event: states.EvResume}, {Event: states.EvDone}},
			check: func(t *testing.T, n *store.Node, _, actions []string) {
				if n.CleanPlan != nil || n.CleanStep != nil {
					t.Errorf("plan %v, step %v after cleaning; want none", n.CleanPlan, n.CleanStep)
				}
				if diff := cmp.Diff([]string{"power off"}, actions); diff != "" {
					t.Errorf("power actions (-want +got):\n%s", diff)
				}
			}},
		{name: "clean step failed: maintenance", state: states.CleanWait, setup: func(n *store.Node) {
			n.CleanStep = &erase
			n.CleanPlan = &store.CleanPlan{Steps: []store.Step{erase}, Started: true}
		},
			agent: answers{list: []Command{{Name: "execute_clean_step", Status: StatusFailed, Error: "disk on fire"}}},
			want:  []step{{Fail: "Agent returned error for clean step {'interface': 'deploy', 'step': 'erase_devices'} on node n1 : disk on fire"}},
			check: func(t *testing.T, n *store.Node, _, _ []string) {
				if !n.Maintenance || n.Fault != "clean failure" {
					t.Errorf("maintenance %v fault %q, want maintenance for a clean failure", n.Maintenance, n.Fault)
				}
			}},
		{name: "manual step the agent does not offer", state: states.CleanWait, setup: func(n *store.Node) {
			n.CleanPlan = &store.CleanPlan{Manual: true, Requested: []store.Step{{Interface: "bios", Step: "apply_bios_settings"}}}
		},
			agent: answers{post: map[string]Command{"clean.get_clean_steps": {Status: StatusSucceeded, Result: cleanSteps}}},
			want: []step{{Fail: "Agent returned error for clean step {'interface': '', 'step': ''} on node n1 : clean step {'interface': 'bios', 'step': 'apply_bios_settings'} is not supported by the agent " +
				"(it offers deploy.erase_devices, deploy.erase_devices_metadata, deploy.erase_pstore)"}}},
		{name: "clean plan asked while busy", state: states.CleanWait,
			agent: answers{busy: map[string]bool{"clean.get_clean_steps": true}},
			want:  []step{{}}},
		{name: "get_clean_steps failed", state: states.CleanWait,
			agent:   answers{post: map[string]Command{"clean.get_clean_steps": {Status: StatusFailed, Error: "boom"}}},
			want:    nil,
			wantErr: "get_clean_steps failed on agent: boom"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ag := &scripted{a: tc.agent}
			srv := httptest.NewServer(ag)
			defer srv.Close()
			d := New(Config{Client: &Client{HTTP: srv.Client(), Retries: 0}, PollInterval: time.Millisecond, PollAttempts: 3,
				PowerOffRetries: 2, PowerOffInterval: 5 * time.Millisecond})
			n := &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: tc.state,
				DriverInfo: map[string]any{}, DriverInternalInfo: map[string]any{}, Properties: map[string]any{},
				InstanceInfo: map[string]any{"image_source": "http://127.0.0.1/img.raw", "image_checksum": "abc"},
				Agent:        store.Agent{URL: srv.URL, Dialect: "v1"}}
			if tc.setup != nil {
				tc.setup(n)
			}
			task := &fakeTask{node: n, powered: power.On}
			out, err := d.Continue(context.Background(), task)
			got, err := drive(t, task, out, err)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
			if tc.check != nil {
				ag.mu.Lock()
				posted := append([]string(nil), ag.posted...)
				ag.mu.Unlock()
				tc.check(t, n, posted, task.actions)
			}
		})
	}
}
