// Package agent is AgentDeploy, the spec's deploy interface: the node boots
// the Ironic Python Agent, whose heartbeat is the call-back; the conductor
// drives the agent's REST API (/v1/commands) to write the image and to run
// clean steps, then boots the node from its disk.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/store"
)

// Config tunes AgentDeploy. Zero values take the defaults noted.
type Config struct {
	// Client talks to agents (NewClient()).
	Client *Client
	// CleanStepPriorities overrides the agent's priorities of automated clean
	// steps by name ([deploy]erase_devices_priority etc.); 0 disables a step.
	CleanStepPriorities map[string]int
	// PollInterval / PollAttempts bound polling of commands Ironic polls
	// itself (install_bootloader): 6 s x 100 in Ironic; 1 s x 100 here.
	PollInterval time.Duration
	PollAttempts int
	// PowerOffRetries / PowerOffInterval: after standby.power_off, how often
	// the BMC is asked whether the node is off before a hard power off
	// ([agent]post_deploy_get_power_state_retries=6 x 5 s). Not for FakePower.
	PowerOffRetries  int
	PowerOffInterval time.Duration
}

// Deploy is the "agent" deploy interface.
type Deploy struct {
	cfg Config
}

var _ deploy.Interface = (*Deploy)(nil)

// New returns AgentDeploy.
func New(cfg Config) *Deploy {
	if cfg.Client == nil {
		cfg.Client = NewClient()
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.PollAttempts <= 0 {
		cfg.PollAttempts = 100
	}
	if cfg.PowerOffRetries <= 0 {
		cfg.PowerOffRetries = 6
	}
	if cfg.PowerOffInterval <= 0 {
		cfg.PowerOffInterval = 5 * time.Second
	}
	return &Deploy{cfg: cfg}
}

// Name is "agent".
func (d *Deploy) Name() string { return "agent" }

// Node fields the agent deploy reads.
func agentURL(n *store.Node) string   { return n.Agent.URL }
func agentToken(n *store.Node) string { return n.Agent.Token }
func legacy(n *store.Node) bool       { return n.Agent.Dialect == "legacy" }

// client talks to n's agent, verifying an https agent against the
// certificate it sent with its heartbeats (agent_verify_ca), as Ironic's
// agent_client does. The conductor refused any agent_verify_ca that is not
// PEM; without one, https agents are verified against the system's roots
// (Ironic's [agent]verify_ca = True).
func (d *Deploy) client(n *store.Node) *Client {
	c, err := d.cfg.Client.ForCA(n.Agent.VerifyCA)
	if err != nil {
		return d.cfg.Client
	}
	return c
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

// ValidateDeploy needs instance_info.image_source (an http(s) URL) and a
// checksum: image_checksum, or image_os_hash_algo + image_os_hash_value.
func (d *Deploy) ValidateDeploy(n *store.Node) error {
	src := str(n.InstanceInfo, "image_source")
	if src == "" {
		return errors.New(`missing instance_info.image_source`)
	}
	u := str(n.InstanceInfo, "image_url")
	if u == "" {
		u = src
	}
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return fmt.Errorf("instance_info.image_source %q is not an http(s) URL", u)
	}
	if str(n.InstanceInfo, "image_checksum") == "" &&
		(str(n.InstanceInfo, "image_os_hash_algo") == "" || str(n.InstanceInfo, "image_os_hash_value") == "") {
		return errors.New("missing instance_info.image_checksum (or image_os_hash_algo and image_os_hash_value)")
	}
	return nil
}

// imageInfo is image_info as Ironic's write_image sends it.
func imageInfo(n *store.Node) map[string]any {
	src := str(n.InstanceInfo, "image_source")
	u := str(n.InstanceInfo, "image_url")
	if u == "" {
		u = src
	}
	format := str(n.InstanceInfo, "image_disk_format")
	if format == "" {
		format = "raw"
	}
	info := map[string]any{
		"id":                path.Base(strings.TrimRight(src, "/")),
		"urls":              []string{u},
		"disk_format":       format,
		"container_format":  "bare",
		"stream_raw_images": true,
		"node_uuid":         n.UUID,
	}
	if c := str(n.InstanceInfo, "image_checksum"); c != "" {
		info["checksum"] = c
	}
	if a, v := str(n.InstanceInfo, "image_os_hash_algo"), str(n.InstanceInfo, "image_os_hash_value"); a != "" && v != "" {
		info["os_hash_algo"], info["os_hash_value"] = a, v
	}
	return info
}

// Deploy boots the node into the agent; the heartbeat continues the deploy.
// With fast track and a live agent it boots nothing and continues at once,
// as Ironic's AgentDeploy.deploy goes straight to the next deploy step.
func (d *Deploy) Deploy(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	return d.bootOrFastTrack(ctx, t)
}

// PrepareCleaning boots the node into the agent; the heartbeat runs the
// steps. With fast track and a live agent it boots nothing (Ironic's
// prepare_inband_cleaning skips the reboot) and plans the steps at once.
func (d *Deploy) PrepareCleaning(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	return d.bootOrFastTrack(ctx, t)
}

func (d *Deploy) bootOrFastTrack(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	if d.fastTrack(ctx, t) {
		return d.continueFastTrack(ctx, t)
	}
	if err := deploy.BootIntoRamdisk(ctx, t); err != nil {
		return deploy.Outcome{}, err
	}
	return deploy.Next(states.EvWait, nil), nil
}

// StatusTimeout bounds the fast-track check that the agent answers.
const StatusTimeout = 5 * time.Second

// fastTrack: the conductor's is_fast_track, and the agent answers its
// status route. Ironic trusts the last heartbeat alone (a TODO in its
// fast_track_able asks for this probe); the probe keeps a stale agent_url,
// e.g. of an agent that powered itself off with standby.power_off under
// FakePower, from sending the node to wait for an agent that is gone.
func (d *Deploy) fastTrack(ctx context.Context, t deploy.Task) bool {
	if !t.FastTrack(ctx) {
		return false
	}
	n := t.Node()
	if err := d.client(n).Status(ctx, agentURL(n), StatusTimeout); err != nil {
		t.Record(ctx, store.KindProvision, "fast track refused", fmt.Sprintf("agent %s did not answer: %v", agentURL(n), err), nil)
		return false
	}
	return true
}

// continueFastTrack moves a node whose agent runs from deploying/cleaning to
// its wait state and runs the call-back right away. An agent that stopped
// answering meanwhile leaves the node waiting for its next heartbeat (as
// Ironic does on AgentConnectionFailed in fast track); the call-back
// timeout covers an agent that never comes back.
func (d *Deploy) continueFastTrack(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	n := t.Node()
	detail := map[string]any{"agent_url": agentURL(n), "agent_last_heartbeat": n.Agent.LastHeartbeat.Unix()}
	t.Record(ctx, store.KindProvision, "fast track", fmt.Sprintf("agent %s is running: no power cycle or boot into the ramdisk", agentURL(n)), detail)
	wait := states.DeployWait
	if n.ProvisionState == states.Cleaning {
		wait = states.CleanWait
	}
	return deploy.Next(states.EvWait, waitIfUnreachable(d.Continue, wait)), nil
}

// waitIfUnreachable runs step and the steps it leads to; an unreachable
// agent while the node is still in wait leaves it waiting for a heartbeat.
func waitIfUnreachable(step deploy.Step, wait string) deploy.Step {
	return func(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
		out, err := step(ctx, t)
		if err != nil && errors.Is(err, ErrUnreachable) && t.Node().ProvisionState == wait {
			t.Record(ctx, store.KindProvision, "fast track wait", fmt.Sprintf("agent did not answer (%v); waiting for its heartbeat", err), nil)
			return deploy.Wait(), nil
		}
		if out.Then != nil {
			out.Then = waitIfUnreachable(out.Then, wait)
		}
		return out, err
	}
}

// TearDown powers the node off.
func (d *Deploy) TearDown(ctx context.Context, t deploy.Task) error {
	return t.SetPower(ctx, power.Off)
}

// Continue is the heartbeat call-back.
func (d *Deploy) Continue(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	n := t.Node()
	if agentURL(n) == "" {
		return deploy.Wait(), nil // no agent yet
	}
	switch n.ProvisionState {
	case states.DeployWait:
		return d.continueDeploy(ctx, t)
	case states.CleanWait:
		return d.continueClean(ctx, t)
	case states.RescueWait:
		return d.finalizeRescue(ctx, t)
	}
	return deploy.Wait(), nil
}

// exec runs an agent command and records it in the node's history.
func (d *Deploy) exec(ctx context.Context, t deploy.Task, name string, params map[string]any, wait bool) (*Command, error) {
	n := t.Node()
	lg := legacy(n)
	cmd, err := d.client(n).Execute(ctx, agentURL(n), agentToken(n), name, params, wait, lg)
	detail := map[string]any{"command": name, "wait": wait, "agent_url": agentURL(n)}
	if err != nil {
		detail["error"] = err.Error()
		t.Record(ctx, store.KindAgentCommand, name, err.Error(), detail)
		return nil, err
	}
	detail["id"], detail["status"] = cmd.ID, cmd.Status
	msg := cmd.Status
	if cmd.Status == StatusFailed {
		detail["error"] = cmd.ErrorText()
		msg += ": " + cmd.ErrorText()
	}
	t.Record(ctx, store.KindAgentCommand, name, msg, detail)
	return cmd, nil
}

// recordResult records the outcome of a command found by polling.
func (d *Deploy) recordResult(ctx context.Context, t deploy.Task, cmd *Command) {
	detail := map[string]any{"command": cmd.Name, "id": cmd.ID, "status": cmd.Status}
	msg := cmd.Status
	if cmd.Status == StatusFailed {
		detail["error"] = cmd.ErrorText()
		msg += ": " + cmd.ErrorText()
	}
	// What the agent reports (e.g. how a disk was erased) belongs in the
	// history a user reads.
	if cmd.Result != nil {
		detail["result"] = cmd.Result
	}
	t.Record(ctx, store.KindAgentCommand, cmd.Name+" result", msg, detail)
}

// nodeParams are the "node" and "ports" params Ironic sends with steps.
func nodeParams(t deploy.Task) (map[string]any, []map[string]any) {
	n := t.Node()
	b, _ := json.Marshal(n)
	var node map[string]any
	_ = json.Unmarshal(b, &node)
	// The agent sees the node as Ironic's API shows it.
	for k, v := range map[string]map[string]any{"driver_info": n.DriverInfoView(), "driver_internal_info": n.DriverInternalInfoView()} {
		b, _ := json.Marshal(v)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		node[k] = m
	}
	node["clean_step"], node["deploy_step"] = store.StepView(n.CleanStep), store.StepView(n.DeployStep)
	if dii, ok := node["driver_internal_info"].(map[string]any); ok {
		if _, ok := dii["agent_secret_token"]; ok {
			dii["agent_secret_token"] = "******"
		}
	}
	if di, ok := node["driver_info"].(map[string]any); ok {
		for k := range di {
			if strings.Contains(k, "password") {
				di[k] = "******"
			}
		}
	}
	var ports []map[string]any
	for _, p := range t.Ports() {
		ports = append(ports, map[string]any{"uuid": p.UUID, "address": p.Address, "node_uuid": p.NodeUUID, "pxe_enabled": p.PXEEnabled, "extra": p.Extra})
	}
	return node, ports
}

// continueDeploy advances a node in "wait call-back".
func (d *Deploy) continueDeploy(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	n := t.Node()
	if n.DeployStep == nil {
		return d.startWriteImage(ctx, t)
	}
	wanted := "execute_deploy_step"
	if legacy(n) {
		wanted = "prepare_image"
	}
	cmds, err := d.client(n).Commands(ctx, agentURL(n), agentToken(n), legacy(n))
	if err != nil {
		if errors.Is(err, ErrAgentBusy) {
			return deploy.Wait(), nil
		}
		return deploy.Outcome{}, err
	}
	last := lastNamed(cmds, wanted)
	if last == nil {
		// A freshly booted agent that never ran our step: start over.
		n.DeployStep = nil
		return d.startWriteImage(ctx, t)
	}
	switch last.Status {
	case StatusRunning:
		return deploy.Wait(), nil
	case StatusSucceeded:
		if !legacy(n) {
			if echo, _ := last.ResultMap()["deploy_step"].(map[string]any); echo != nil && str(echo, "step") != n.DeployStep.Step {
				return deploy.Wait(), nil // an older step's result
			}
		}
		d.recordResult(ctx, t, last)
		return deploy.Next(states.EvResume, d.finishDeploy), nil
	default:
		d.recordResult(ctx, t, last)
		return deploy.Failed(fmt.Sprintf("Agent returned error for deploy step %s on node %s : %s",
			n.DeployStep.String(), n.UUID, last.ErrorText())), nil
	}
}

// startWriteImage: the first heartbeat of a freshly booted agent. The step
// is persisted with the move to deploying before the agent is asked to run it.
func (d *Deploy) startWriteImage(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	n := t.Node()
	info := imageInfo(n)
	args := map[string]any{"image_info": info}
	if !wholeDisk(n) {
		if err := addPartitionFields(n, info); err != nil {
			return deploy.Failed(err.Error()), nil
		}
	}
	cd, err := configDrive(n)
	if err != nil {
		return deploy.Failed(err.Error()), nil
	}
	if cd != "" {
		// As Ironic: in image_info too, for older agents.
		info["configdrive"], args["configdrive"] = cd, cd
	}
	if legacy(n) {
		// Juno: standby.prepare_image straight away.
		n.DeployStep = &store.Step{Interface: "deploy", Step: "prepare_image", Args: args}
		return deploy.Next(states.EvResume, func(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
			cmd, err := d.exec(ctx, t, "standby.prepare_image", args, false)
			return d.afterStart(t, cmd, err)
		}), nil
	}
	node, ports := nodeParams(t)
	res, err := d.exec(ctx, t, "deploy.get_deploy_steps", map[string]any{"node": node, "ports": ports}, true)
	if err != nil {
		if errors.Is(err, ErrAgentBusy) {
			return deploy.Wait(), nil
		}
		return deploy.Outcome{}, err
	}
	if res.Status == StatusFailed {
		return deploy.Outcome{}, fmt.Errorf("get_deploy_steps failed on agent: %s", res.ErrorText())
	}
	version := res.ResultMap()["hardware_manager_version"]
	step := &store.Step{Interface: "deploy", Step: "write_image", Priority: 80, Args: args}
	n.DeployStep = step
	return deploy.Next(states.EvResume, func(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
		cmd, err := d.exec(ctx, t, "deploy.execute_deploy_step",
			map[string]any{"step": step, "node": node, "ports": ports, "deploy_version": version}, false)
		return d.afterStart(t, cmd, err)
	}), nil
}

// afterStart handles the answer to an async step command (node in deploying).
func (d *Deploy) afterStart(t deploy.Task, cmd *Command, err error) (deploy.Outcome, error) {
	n := t.Node()
	if errors.Is(err, ErrAgentBusy) {
		n.DeployStep = nil // try again on the next heartbeat
		return deploy.Next(states.EvWait, nil), nil
	}
	if err != nil {
		return deploy.Outcome{}, err
	}
	if cmd.Status == StatusFailed {
		return deploy.Failed(fmt.Sprintf("Agent returned error for deploy step %s on node %s : %s", n.DeployStep.String(), n.UUID, cmd.ErrorText())), nil
	}
	// Even a command that finished at once is read back on the next
	// heartbeat, the one path for results.
	return deploy.Next(states.EvWait, nil), nil
}

// finishDeploy runs in deploying once the image is written:
// prepare_instance_boot (the partition UUIDs, a bootloader in UEFI mode),
// then bootInstance.
func (d *Deploy) finishDeploy(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	n := t.Node()
	if legacy(n) {
		return d.bootInstance(ctx, t)
	}
	res, err := d.exec(ctx, t, "standby.get_partition_uuids", nil, true)
	if err != nil {
		return deploy.Outcome{}, err
	}
	if res.Status == StatusFailed {
		return deploy.Failed(fmt.Sprintf("Failed to get partition UUIDs of node %s: %s", n.UUID, res.ErrorText())), nil
	}
	// Ironic's prepare_instance_boot: a partition image always needs a boot
	// loader, a whole-disk image only for UEFI.
	uefi := deploy.BootModeUEFI(n)
	if !uefi && wholeDisk(n) {
		return d.bootInstance(ctx, t)
	}
	mode := "bios"
	if uefi {
		mode = "uefi"
	}
	uuids := res.ResultMap()
	params := map[string]any{"root_uuid": uuids["root uuid"], "efi_system_part_uuid": uuids["efi system partition uuid"],
		"prep_boot_part_uuid": uuids["PReP Boot partition uuid"], "target_boot_mode": mode}
	cmd, err := d.exec(ctx, t, "image.install_bootloader", params, false)
	if err != nil {
		return deploy.Outcome{}, err
	}
	return d.pollCommand(cmd, "install_bootloader", 0, func(ctx context.Context, t deploy.Task, cmd *Command) (deploy.Outcome, error) {
		if cmd.Status != StatusSucceeded {
			return deploy.Failed(fmt.Sprintf("Failed to install a bootloader when deploying node %s: %s", n.UUID, cmd.ErrorText())), nil
		}
		return d.bootInstance(ctx, t)
	})(ctx, t)
}

// bootInstance: boot device disk, tear_down_agent (standby.power_off, then
// polling the BMC until the node is off), and Ironic's reboot: off, then on.
func (d *Deploy) bootInstance(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	n := t.Node()
	if err := t.SetBootDevice(ctx, power.Disk, true); err != nil {
		return deploy.Outcome{}, err
	}
	if !legacy(n) {
		if _, err := d.exec(ctx, t, "standby.power_off", nil, false); err != nil {
			t.Logger().Warn("standby.power_off failed; powering off through the BMC", "err", err)
		} else if t.PowerInterface().Name() != "fake" {
			return d.pollPoweredOff(0)(ctx, t)
		}
	}
	return d.rebootInstance(ctx, t)
}

// pollPoweredOff asks the BMC whether the node is off, PowerOffRetries
// times PowerOffInterval apart, before the hard power off.
func (d *Deploy) pollPoweredOff(i int) deploy.Step {
	return func(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
		if i >= d.cfg.PowerOffRetries {
			return d.rebootInstance(ctx, t)
		}
		if st, err := t.GetPower(ctx); err == nil && st == power.Off {
			return d.rebootInstance(ctx, t)
		}
		return deploy.PollAfter(d.cfg.PowerOffInterval, d.pollPoweredOff(i+1)), nil
	}
}

func (d *Deploy) rebootInstance(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	if err := t.SetPower(ctx, power.Off); err != nil {
		return deploy.Outcome{}, err
	}
	if err := t.SetPower(ctx, power.On); err != nil {
		return deploy.Outcome{}, err
	}
	t.Node().DeployStep = nil
	return deploy.Next(states.EvDone, nil), nil
}

// pollCommand polls an async command the conductor waits on itself, every
// PollInterval up to PollAttempts times, then hands its result to done.
func (d *Deploy) pollCommand(cmd *Command, name string, i int, done func(context.Context, deploy.Task, *Command) (deploy.Outcome, error)) deploy.Step {
	return func(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
		if cmd.Status != StatusRunning {
			d.recordResult(ctx, t, cmd)
			return done(ctx, t, cmd)
		}
		if i >= d.cfg.PollAttempts {
			return deploy.Outcome{}, fmt.Errorf("%s on node %s still running after %d polls", name, t.Node().UUID, i)
		}
		return deploy.PollAfter(d.cfg.PollInterval, func(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
			n := t.Node()
			cmds, err := d.client(n).Commands(ctx, agentURL(n), agentToken(n), legacy(n))
			if err != nil {
				return deploy.Outcome{}, err
			}
			next := cmd
			if c := lastNamed(cmds, name); c != nil {
				next = c
			}
			return d.pollCommand(next, name, i+1, done)(ctx, t)
		}), nil
	}
}

func intOf(v any) int {
	switch x := v.(type) {
	case float64:
		return int(x)
	case int:
		return x
	case int64:
		return int(x)
	}
	return 0
}

// offeredStep is a clean step as the agent's get_clean_steps lists it.
type offeredStep struct {
	store.Step
	ArgsInfo map[string]struct {
		Required bool `json:"required"`
	} `json:"argsinfo"`
}

// plan is the node's clean plan, created on first use.
func plan(n *store.Node) *store.CleanPlan {
	if n.CleanPlan == nil {
		n.CleanPlan = &store.CleanPlan{}
	}
	return n.CleanPlan
}

// continueClean advances a node in "clean wait".
func (d *Deploy) continueClean(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	n := t.Node()
	if n.CleanStep == nil {
		return d.planCleaning(ctx, t)
	}
	cmds, err := d.client(n).Commands(ctx, agentURL(n), agentToken(n), legacy(n))
	if err != nil {
		if errors.Is(err, ErrAgentBusy) {
			return deploy.Wait(), nil
		}
		return deploy.Outcome{}, err
	}
	idx := plan(n).Index
	last := lastNamed(cmds, "execute_clean_step")
	if last == nil {
		// A freshly booted agent: Ironic moves on to the next step.
		return d.nextCleanStep(idx+1)(ctx, t)
	}
	switch last.Status {
	case StatusRunning:
		return deploy.Wait(), nil
	case StatusSucceeded:
		if echo, _ := last.ResultMap()["clean_step"].(map[string]any); echo != nil && str(echo, "step") != n.CleanStep.Step {
			return deploy.Wait(), nil
		}
		d.recordResult(ctx, t, last)
		return d.nextCleanStep(idx+1)(ctx, t)
	case StatusVersionMismatch:
		d.recordResult(ctx, t, last)
		return d.planCleaning(ctx, t)
	default:
		d.recordResult(ctx, t, last)
		return d.failCleaning(ctx, t, last.ErrorText())
	}
}

func (d *Deploy) failCleaning(ctx context.Context, t deploy.Task, agentErr string) (deploy.Outcome, error) {
	n := t.Node()
	msg := fmt.Sprintf("Agent returned error for clean step %s on node %s : %s", n.CleanStep.String(), n.UUID, agentErr)
	n.Maintenance = true
	n.MaintenanceReason = msg
	n.Fault = "clean failure"
	t.Record(ctx, store.KindMaintenance, "maintenance on", msg, map[string]any{"fault": "clean failure"})
	return deploy.Failed(msg), nil
}

// planCleaning fetches the agent's steps and decides which run, in order.
func (d *Deploy) planCleaning(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	n := t.Node()
	node, ports := nodeParams(t)
	res, err := d.exec(ctx, t, "clean.get_clean_steps", map[string]any{"node": node, "ports": ports}, true)
	if err != nil {
		if errors.Is(err, ErrAgentBusy) {
			return deploy.Wait(), nil
		}
		return deploy.Outcome{}, err
	}
	if res.Status == StatusFailed {
		return deploy.Outcome{}, fmt.Errorf("get_clean_steps failed on agent: %s", res.ErrorText())
	}
	var r struct {
		Version    map[string]any           `json:"hardware_manager_version"`
		CleanSteps map[string][]offeredStep `json:"clean_steps"`
	}
	if b, err := json.Marshal(res.Result); err == nil {
		_ = json.Unmarshal(b, &r) // the agent's answer, decoded once
	}
	p := plan(n)
	p.Version = r.Version
	// Steps are known by interface and name: the agent may serve steps of
	// other interfaces than deploy (IPA's raid steps, our bios one).
	available := map[string]offeredStep{}
	var names []string
	managers := make([]string, 0, len(r.CleanSteps))
	for m := range r.CleanSteps {
		managers = append(managers, m)
	}
	sort.Strings(managers)
	for _, m := range managers {
		for _, s := range r.CleanSteps[m] {
			name := s.Key()
			if _, dup := available[name]; s.Step.Step == "" || dup {
				continue
			}
			available[name] = s
			names = append(names, name)
		}
	}
	steps := []store.Step{}
	if p.Manual {
		for _, s := range p.Requested {
			offered, ok := available[s.Key()]
			if !ok {
				return d.failCleaning(ctx, t, fmt.Sprintf("clean step %s is not supported by the agent (it offers %s)", s.String(), strings.Join(names, ", ")))
			}
			if missing := missingArgs(offered, s.Args); len(missing) > 0 {
				return d.failCleaning(ctx, t, fmt.Sprintf("clean step %s is missing required argument(s): %s", s.String(), strings.Join(missing, ", ")))
			}
			steps = append(steps, store.Step{Interface: s.Interface, Step: s.Step, Priority: 0, Abortable: offered.Abortable, Args: s.Args})
		}
	} else {
		for _, name := range names {
			s := available[name]
			prio := s.Priority
			if p, ok := d.cfg.CleanStepPriorities[s.Step.Step]; ok {
				prio = p
			}
			if prio <= 0 {
				continue
			}
			steps = append(steps, store.Step{Interface: s.Interface, Step: s.Step.Step, Priority: prio,
				Abortable: s.Abortable, RebootRequested: s.RebootRequested})
		}
		sort.SliceStable(steps, func(i, j int) bool { return steps[i].Priority > steps[j].Priority })
	}
	p.Steps = steps
	t.Record(ctx, store.KindProvision, "clean plan", "", map[string]any{"clean_steps": steps})
	return d.nextCleanStep(0)(ctx, t)
}

// missingArgs lists the arguments the agent's argsinfo marks required that
// args lacks (Ironic checks them before running a manual step).
func missingArgs(offered offeredStep, args map[string]any) []string {
	var missing []string
	for name, info := range offered.ArgsInfo {
		if _, ok := args[name]; info.Required && !ok {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	return missing
}

// nextCleanStep starts step i of the plan, or finishes cleaning.
func (d *Deploy) nextCleanStep(i int) deploy.Step {
	return func(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
		n := t.Node()
		p := plan(n)
		if n.ProvisionState == states.CleanWait {
			return deploy.Next(states.EvResume, d.nextCleanStep(i)), nil
		}
		if i >= len(p.Steps) {
			manual := p.Manual
			n.CleanStep, n.CleanPlan = nil, nil
			// tear_down_cleaning: power off, but with fast track leave the agent
			// running (Ironic's tear_down_inband_cleaning skips the power off),
			// so that the next deploy needs no boot.
			if t.FastTrack(ctx) {
				t.Record(ctx, store.KindProvision, "agent kept running", fmt.Sprintf("fast track: node stays powered on with agent %s", agentURL(n)), nil)
			} else if err := t.SetPower(ctx, power.Off); err != nil {
				return deploy.Outcome{}, err
			}
			if manual {
				return deploy.Next(states.EvManage, nil), nil
			}
			return deploy.Next(states.EvDone, nil), nil
		}
		step := p.Steps[i]
		prevStep, prevIdx, prevStarted := n.CleanStep, p.Index, p.Started
		n.CleanStep = &step
		p.Index, p.Started = i, true
		// The step is on disk before the agent runs it.
		return deploy.Saved(func(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
			node, ports := nodeParams(t)
			cmd, err := d.exec(ctx, t, "clean.execute_clean_step", map[string]any{"step": step, "node": node, "ports": ports,
				"clean_version": p.Version}, false)
			if errors.Is(err, ErrAgentBusy) {
				n.CleanStep, p.Index, p.Started = prevStep, prevIdx, prevStarted
				return deploy.Next(states.EvWait, nil), nil
			}
			if err != nil {
				return deploy.Outcome{}, err
			}
			switch cmd.Status {
			case StatusFailed:
				return d.failCleaning(ctx, t, cmd.ErrorText())
			case StatusSucceeded:
				return d.nextCleanStep(i+1)(ctx, t)
			}
			return deploy.Next(states.EvWait, nil), nil
		}), nil
	}
}
