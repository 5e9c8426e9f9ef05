package fakeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/google/uuid"
)

// Command statuses as IPA reports them.
const (
	StatusRunning              = "RUNNING"
	StatusSucceeded            = "SUCCEEDED"
	StatusFailed               = "FAILED"
	StatusCleanVersionMismatch = "CLEAN_VERSION_MISMATCH"
)

// CommandError is IPA's RESTError as it appears in command_error. Ironic
// shows details (or message) in the node's last_error.
type CommandError struct {
	Type    string `json:"type"`
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details string `json:"details"`
}

func (e *CommandError) Error() string {
	if e.Details == "" {
		return e.Message
	}
	return e.Message + ": " + e.Details
}

// CommandResult is one entry of GET /v1/commands/: IPA's result object.
type CommandResult struct {
	ID            string        `json:"id"`
	CommandName   string        `json:"command_name"`
	CommandStatus string        `json:"command_status"`
	CommandError  *CommandError `json:"command_error"`
	CommandResult any           `json:"command_result"`
}

// command is one command's live record.
type command struct {
	id, full, name, step string
	async                bool
	status               string
	err                  *CommandError
	result               any
	done                 chan struct{}
}

// params are a command's parameters, kept raw so steps echo back exactly.
type params map[string]json.RawMessage

type commandFunc func(ctx context.Context, a *Agent, p params) (any, error)

type commandSpec struct {
	async    bool
	validate func(a *Agent, p params) error // failure -> 400 before running
	run      commandFunc
}

// hardwareManagerVersion is every hardware manager's version, as IPA's
// get_current_versions reports it; Ironic echoes it back as
// clean_version/deploy_version and it must stay stable.
var hardwareManagerVersion = map[string]string{"generic_hardware_manager": "1.2", "ironlab_hardware_manager": "1.0"}

var extensions = map[string]map[string]commandSpec{
	"deploy": {
		"get_deploy_steps":    {run: cmdGetDeploySteps},
		"execute_deploy_step": {async: true, validate: validateStep, run: cmdExecuteDeployStep},
	},
	"clean": {
		"get_clean_steps":    {run: cmdGetCleanSteps},
		"execute_clean_step": {async: true, validate: validateStep, run: cmdExecuteCleanStep},
	},
	"standby": {
		"prepare_image":       {async: true, validate: validatePrepareImage, run: cmdPrepareImage},
		"get_partition_uuids": {run: cmdGetPartitionUUIDs},
		"power_off":           {async: true, run: cmdPowerOff},
		"run_image":           {async: true, run: cmdRunImage},
		"sync":                {run: cmdSync},
	},
	"rescue": {
		"finalize_rescue": {run: cmdFinalizeRescue},
	},
	"image": {
		"install_bootloader": {async: true, run: cmdInstallBootloader},
	},
	"log": {
		"collect_system_logs": {run: cmdCollectSystemLogs},
	},
}

// httpError is an API-level refusal (never a command result).
type httpError struct {
	status int
	// fault is the faultstring, formatted as IPA's werkzeug/RESTError str().
	fault string
}

func (e *httpError) Error() string { return e.fault }

func badRequest(format string, args ...any) *httpError {
	return &httpError{status: 400, fault: "400 Bad Request: " + fmt.Sprintf(format, args...)}
}

// errDropConnection tells the handler to drop the connection (the crash fault).
var errDropConnection = errors.New("agent crashed")

// execute runs a command the way IPA's execute_command does: split the name,
// refuse when busy (409), find the extension (404) and command (400),
// validate (400), then run sync in the request or async in the background.
func (a *Agent) execute(reqCtx context.Context, name string, p params, wait bool) (CommandResult, error) {
	ext, cmdName, ok := strings.Cut(name, ".")
	if !ok || ext == "" || cmdName == "" {
		return CommandResult{}, badRequest("Invalid command: Invalid command name %q: want <extension>.<command>", name)
	}
	step := stepName(p)

	a.mu.Lock()
	if n := len(a.commands); n > 0 && a.commands[n-1].status == StatusRunning {
		last := a.commands[n-1]
		a.mu.Unlock()
		return CommandResult{}, &httpError{status: 409, fault: "Agent is busy: executing command " + last.name}
	}
	cmds, ok := extensions[ext]
	if !ok {
		a.mu.Unlock()
		return CommandResult{}, &httpError{status: 404, fault: fmt.Sprintf("Requested object not found: Extension with id %s not found.", ext)}
	}
	spec, ok := cmds[cmdName]
	if !ok {
		a.mu.Unlock()
		return CommandResult{}, badRequest("Invalid command: Unknown command: %s", name)
	}
	if spec.validate != nil {
		if err := spec.validate(a, p); err != nil {
			a.mu.Unlock()
			return CommandResult{}, badRequest("Invalid parameters for command: %v", err)
		}
	}
	faults := a.faults
	c := &command{id: uuid.NewString(), full: name, name: cmdName, step: step, async: spec.async, status: StatusRunning, done: make(chan struct{})}
	a.commands = append(a.commands, c)
	a.byID[c.id] = c
	a.mu.Unlock()
	a.event("command started", "command", name, "step", step, "id", c.id)

	run := spec.run
	if f := faults.FailCommand; f != nil && commandMatches(f.Command, name, step) {
		msg := f.Error
		run = func(context.Context, *Agent, params) (any, error) {
			return nil, &CommandError{Type: "CommandExecutionError", Code: 500, Message: "Command execution failed", Details: msg}
		}
	}
	crash := commandMatches(faults.CrashDuring, name, step)

	if !spec.async {
		if crash {
			a.crash(name)
			return CommandResult{}, errDropConnection
		}
		a.hang(reqCtx, name, step)
		a.finish(c, run, p)
		return a.snapshot(c), nil
	}
	go func() {
		if crash {
			a.crash(name) // the command stays RUNNING forever
			return
		}
		a.hang(a.ctx, name, step)
		a.finish(c, run, p)
		a.forceHeartbeat()
	}()
	if wait {
		select {
		case <-c.done:
		case <-reqCtx.Done():
		}
	}
	return a.snapshot(c), nil
}

// hang blocks while the hang_command fault names this command.
func (a *Agent) hang(ctx context.Context, name, step string) {
	for {
		a.mu.Lock()
		hung := commandMatches(a.faults.HangCommand, name, step)
		changed := a.faultsChanged
		a.mu.Unlock()
		if !hung {
			return
		}
		a.event("command hung by fault", "command", name, "step", step)
		select {
		case <-ctx.Done():
			return
		case <-a.ctx.Done():
			return
		case <-changed:
		}
	}
}

func (a *Agent) finish(c *command, run commandFunc, p params) {
	res, err := run(a.ctx, a, p)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctx.Err() != nil && err != nil {
		// The agent is going away (power off, reboot); a real one would
		// never report this command's end.
		a.eventLocked("command abandoned: agent stopping", "command", c.full)
	}
	var vm *versionMismatch
	switch {
	case errors.As(err, &vm):
		c.status = StatusCleanVersionMismatch
		c.err = &CommandError{Type: "VersionMismatch", Code: 500, Message: "Hardware managers version mismatch, reload agent with correct version", Details: vm.Error()}
	case err != nil:
		c.status = StatusFailed
		var ce *CommandError
		if !errors.As(err, &ce) {
			ce = &CommandError{Type: "CommandExecutionError", Code: 500, Message: "Command execution failed", Details: err.Error()}
		}
		c.err = ce
	default:
		c.status = StatusSucceeded
		// A string result becomes {"result": ...}, prefixed by the command
		// name when async (IPA's AsyncCommandResult).
		if s, ok := res.(string); ok {
			if c.async {
				s = c.name + ": " + s
			}
			res = map[string]string{"result": s}
		}
		c.result = res
	}
	close(c.done)
	if c.err != nil {
		a.eventLocked("command failed", "command", c.full, "step", c.step, "status", c.status, "error", c.err.Error())
	} else {
		a.eventLocked("command succeeded", "command", c.full, "step", c.step)
	}
}

func (a *Agent) snapshot(c *command) CommandResult {
	a.mu.Lock()
	defer a.mu.Unlock()
	return CommandResult{ID: c.id, CommandName: c.name, CommandStatus: c.status, CommandError: c.err, CommandResult: c.result}
}

// Commands returns every command result in execution order.
func (a *Agent) Commands() []CommandResult {
	a.mu.Lock()
	cs := append([]*command(nil), a.commands...)
	a.mu.Unlock()
	out := make([]CommandResult, 0, len(cs))
	for _, c := range cs {
		out = append(out, a.snapshot(c))
	}
	return out
}

func stepName(p params) string {
	var s struct {
		Step string `json:"step"`
	}
	if raw, ok := p["step"]; ok && json.Unmarshal(raw, &s) == nil {
		return s.Step
	}
	return ""
}

// stepParams is the step object of execute_*_step: its fields for dispatch
// and the raw bytes to echo back.
type stepParams struct {
	Step      string          `json:"step"`
	Interface string          `json:"interface"`
	Priority  json.Number     `json:"priority"`
	Args      json.RawMessage `json:"args"`
	raw       json.RawMessage
}

func parseStep(p params) (stepParams, error) {
	raw, ok := p["step"]
	if !ok {
		return stepParams{}, errors.New("missing parameter: step")
	}
	var s stepParams
	if err := json.Unmarshal(raw, &s); err != nil {
		return stepParams{}, fmt.Errorf("step is not an object: %w", err)
	}
	if s.Step == "" {
		return stepParams{}, errors.New("step.step is empty")
	}
	s.raw = raw
	return s, nil
}

func validateStep(_ *Agent, p params) error {
	_, err := parseStep(p)
	return err
}

// versionMismatch is a clean_version that differs from ours.
type versionMismatch struct{ got, want map[string]string }

func (v *versionMismatch) Error() string {
	return fmt.Sprintf("Current state is: %v, Expected: %v", v.want, v.got)
}

func checkVersion(p params, key string) error {
	raw, ok := p[key]
	if !ok || string(raw) == "null" {
		return nil
	}
	var got map[string]string
	if err := json.Unmarshal(raw, &got); err != nil {
		return fmt.Errorf("%s is not an object of strings: %w", key, err)
	}
	if !maps.Equal(got, hardwareManagerVersion) {
		return &versionMismatch{got: got, want: hardwareManagerVersion}
	}
	return nil
}

type stepDef struct {
	Step            string         `json:"step"`
	Priority        int            `json:"priority"`
	Interface       string         `json:"interface"`
	RebootRequested bool           `json:"reboot_requested"`
	Abortable       bool           `json:"abortable"`
	ArgsInfo        map[string]any `json:"argsinfo,omitempty"`
}

func argInfo(desc string, required bool) map[string]any {
	return map[string]any{"description": desc, "required": required}
}

// The GenericHardwareManager's steps of IPA 9.x (the Ironic 21.4 era,
// 9.4), with their names, interfaces and priorities, and clean_uefi_nvram
// of IPA 9.12 and later (priority 0: run only when asked). Those that need what a lab
// machine does not have (mdadm software RAID, stress-ng and fio burn-in,
// files injected into a filesystem) are offered under their real names and
// fail when run, naming what is not emulated.
var genericCleanSteps = []stepDef{
	{Step: "erase_devices", Priority: 10, Interface: "deploy", Abortable: true},
	{Step: "erase_devices_metadata", Priority: 99, Interface: "deploy", Abortable: true},
	{Step: "erase_devices_express", Priority: 0, Interface: "deploy", Abortable: true},
	{Step: "erase_pstore", Priority: 0, Interface: "deploy", Abortable: true},
	{Step: "clean_uefi_nvram", Priority: 0, Interface: "deploy", Abortable: true, ArgsInfo: cleanUEFINVRAMArgsInfo},
	{Step: "delete_configuration", Priority: 0, Interface: "raid", Abortable: true},
	{Step: "create_configuration", Priority: 0, Interface: "raid", Abortable: true},
	{Step: "burnin_cpu", Priority: 0, Interface: "deploy", Abortable: true},
	{Step: "burnin_disk", Priority: 0, Interface: "deploy", Abortable: true},
	{Step: "burnin_memory", Priority: 0, Interface: "deploy", Abortable: true},
	{Step: "burnin_network", Priority: 0, Interface: "deploy", Abortable: true},
}

// ironlabCleanSteps are the lab's extensions, offered by a hardware manager
// of their own as a vendor's custom hardware manager would: firmware
// (update_firmware) and BIOS settings (apply_bios_settings, under "bios",
// the interface a user names for it in a manual clean) that the next
// inventory shows. Real IPA has neither.
var ironlabCleanSteps = []stepDef{
	{Step: "update_firmware", Priority: 0, Interface: "deploy", ArgsInfo: map[string]any{
		"version": argInfo("BIOS version to flash, e.g. 2.1.0", true)}},
	{Step: "apply_bios_settings", Priority: 0, Interface: "bios", ArgsInfo: map[string]any{
		"settings": argInfo(`BIOS settings to apply: [{"name": "vt", "value": "on"}]`, true)}},
}

// cleanSteps is every clean step, as one list (what the conductor plans).
var cleanSteps = append(append([]stepDef(nil), genericCleanSteps...), ironlabCleanSteps...)

// The deploy steps: write_image's priority is 0 in IPA (Ironic proxies it
// from its own out-of-band write_image step of priority 80).
var deploySteps = []stepDef{
	{Step: "erase_devices_metadata", Priority: 0, Interface: "deploy"},
	{Step: "apply_configuration", Priority: 0, Interface: "raid", ArgsInfo: map[string]any{
		"raid_config":     argInfo("The RAID configuration to apply.", true),
		"delete_existing": argInfo("Setting this to 'True' indicates to delete existing RAID configuration prior to creating the new configuration. Default value is 'True'.", false),
	}},
	{Step: "clean_uefi_nvram", Priority: 0, Interface: "deploy", ArgsInfo: cleanUEFINVRAMArgsInfo},
	{Step: "write_image", Priority: 0, Interface: "deploy", ArgsInfo: map[string]any{
		"image_info":  argInfo("Information about the image to write", true),
		"configdrive": argInfo("A URL or the contents of a configdrive", false),
	}},
	{Step: "inject_files", Priority: 0, Interface: "deploy", ArgsInfo: map[string]any{
		"files":     argInfo("Files to inject, a list of file structures with keys: path, partition, content, mode, dirmode", false),
		"verify_ca": argInfo("Whether to verify TLS certificates. Global agent options are used by default.", false),
	}},
}

func cmdGetCleanSteps(context.Context, *Agent, params) (any, error) {
	return map[string]any{
		"clean_steps":              map[string][]stepDef{"GenericHardwareManager": genericCleanSteps, "IronlabHardwareManager": ironlabCleanSteps},
		"hardware_manager_version": hardwareManagerVersion,
	}, nil
}

func cmdGetDeploySteps(context.Context, *Agent, params) (any, error) {
	return map[string]any{
		"deploy_steps":             map[string][]stepDef{"GenericHardwareManager": deploySteps},
		"hardware_manager_version": hardwareManagerVersion,
	}, nil
}

func cmdExecuteCleanStep(ctx context.Context, a *Agent, p params) (any, error) {
	s, err := parseStep(p)
	if err != nil {
		return nil, err
	}
	if err := checkVersion(p, "clean_version"); err != nil {
		return nil, err
	}
	var res any
	switch s.Step {
	case "erase_devices":
		res, err = a.eraseDevices(ctx)
	case "erase_devices_metadata":
		res, err = nil, a.eraseDevicesMetadata(ctx)
	case "erase_devices_express":
		res, err = a.eraseDevicesExpress(ctx)
	case "erase_pstore":
		a.event("erase_pstore: no pstore is mounted on this machine") // IPA: "No pstore found"
	case "clean_uefi_nvram":
		res, err = a.cleanUEFINVRAM(s.Args)
	case "delete_configuration":
		a.event("delete_configuration: no software RAID on this machine")
	case "create_configuration":
		res, err = createRAID(p)
	case "burnin_cpu", "burnin_disk", "burnin_memory", "burnin_network":
		err = notEmulated(s.Step, "burn-in (stress-ng, fio) is not emulated by the ironlab agent")
	case "update_firmware":
		res, err = a.updateFirmware(s.Args)
	case "apply_bios_settings":
		res, err = a.applyBIOSSettings(s.Args)
	default:
		return nil, &CommandError{Type: "HardwareManagerMethodNotFound", Code: 500, Message: "No HardwareManager found to handle method",
			Details: fmt.Sprintf("Could not find method: %s", s.Step)}
	}
	if err != nil {
		return nil, fmt.Errorf("clean step %s: %w", s.Step, err)
	}
	return map[string]any{"clean_result": res, "clean_step": s.raw}, nil
}

func cmdExecuteDeployStep(ctx context.Context, a *Agent, p params) (any, error) {
	s, err := parseStep(p)
	if err != nil {
		return nil, err
	}
	if err := checkVersion(p, "deploy_version"); err != nil {
		var vm *versionMismatch
		if errors.As(err, &vm) {
			return nil, &CommandError{Type: "VersionMismatch", Code: 500, Message: "Hardware managers version mismatch", Details: vm.Error()}
		}
		return nil, err
	}
	var res any
	switch s.Step {
	case "write_image":
		var args struct {
			ImageInfo   json.RawMessage `json:"image_info"`
			Configdrive json.RawMessage `json:"configdrive"`
		}
		if len(s.Args) > 0 {
			if err := json.Unmarshal(s.Args, &args); err != nil {
				return nil, fmt.Errorf("deploy step write_image: args: %w", err)
			}
		}
		info, err := parseImageInfo(args.ImageInfo, a.md5OK())
		if err != nil {
			return nil, &CommandError{Type: "InvalidCommandParamsError", Code: 400, Message: "Invalid command parameters", Details: err.Error()}
		}
		if _, err := a.writeImage(ctx, info, args.Configdrive); err != nil {
			return nil, err
		}
	case "erase_devices_metadata":
		if err := a.eraseDevicesMetadata(ctx); err != nil {
			return nil, fmt.Errorf("deploy step erase_devices_metadata: %w", err)
		}
	case "apply_configuration":
		var args struct {
			RAIDConfig map[string]any `json:"raid_config"`
		}
		_ = json.Unmarshal(s.Args, &args)
		if len(args.RAIDConfig) > 0 {
			return nil, notEmulated(s.Step, "software RAID (mdadm) is not emulated by the ironlab agent")
		}
		return nil, &CommandError{Type: "InvalidCommandParamsError", Code: 400, Message: "Invalid command parameters", Details: "apply_configuration needs args.raid_config"}
	case "clean_uefi_nvram":
		if res, err = a.cleanUEFINVRAM(s.Args); err != nil {
			return nil, fmt.Errorf("deploy step %s: %w", s.Step, err)
		}
	case "inject_files":
		return nil, notEmulated(s.Step, "injecting files into the image's filesystems is not emulated by the ironlab agent")
	default:
		return nil, &CommandError{Type: "HardwareManagerMethodNotFound", Code: 500, Message: "No HardwareManager found to handle method",
			Details: fmt.Sprintf("Could not find method: %s", s.Step)}
	}
	return map[string]any{"deploy_result": res, "deploy_step": s.raw}, nil
}

func (a *Agent) md5OK() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.md5Allowed
}

func validatePrepareImage(a *Agent, p params) error {
	_, err := parseImageInfo(p["image_info"], a.md5Allowed) // a.mu is held by execute
	return err
}

func cmdPrepareImage(ctx context.Context, a *Agent, p params) (any, error) {
	info, err := parseImageInfo(p["image_info"], a.md5OK())
	if err != nil {
		return nil, err
	}
	return a.writeImage(ctx, info, p["configdrive"])
}

func cmdGetPartitionUUIDs(_ context.Context, a *Agent, _ params) (any, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.partUUIDs), nil
}

func cmdInstallBootloader(ctx context.Context, a *Agent, p params) (any, error) {
	var args struct {
		RootUUID       string `json:"root_uuid"`
		ESPUUID        string `json:"efi_system_part_uuid"`
		TargetBootMode string `json:"target_boot_mode"`
		Ignore         bool   `json:"ignore_bootloader_failure"`
	}
	for k, dst := range map[string]any{"root_uuid": &args.RootUUID, "efi_system_part_uuid": &args.ESPUUID, "target_boot_mode": &args.TargetBootMode,
		"ignore_bootloader_failure": &args.Ignore} {
		if raw, ok := p[k]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, dst); err != nil {
				return nil, &CommandError{Type: "InvalidCommandParamsError", Code: 400, Message: "Invalid command parameters", Details: fmt.Sprintf("%s: %v", k, err)}
			}
		}
	}
	return nil, a.installBootloader(args.RootUUID, args.ESPUUID, args.TargetBootMode, args.Ignore)
}

func cmdPowerOff(_ context.Context, a *Agent, _ params) (any, error) {
	// Finish the command first so a listing shows SUCCEEDED, then power off.
	a.afterLastCommand(a.requestPowerOff)
	return nil, nil
}

func cmdSync(_ context.Context, a *Agent, _ params) (any, error) {
	for _, d := range a.cfg.Hardware.Hardware().Disks {
		disk, err := a.cfg.OpenDisk(d)
		if err != nil {
			return nil, err
		}
		err = disk.Sync()
		closeDisk(disk)
		if err != nil {
			return nil, fmt.Errorf("sync %s: %w", devPath(d.Name), err)
		}
	}
	return nil, nil
}

// notEmulated fails a step the lab cannot perform, naming what is missing.
func notEmulated(step, why string) error {
	return &CommandError{Type: "CommandExecutionError", Code: 500, Message: "Command execution failed", Details: step + ": " + why}
}

// createRAID is IPA's create_configuration: without a target_raid_config
// on the node there is nothing to do (IPA returns {}); software RAID itself
// is not emulated.
func createRAID(p params) (any, error) {
	var node struct {
		Target map[string]any `json:"target_raid_config"`
	}
	if raw, ok := p["node"]; ok {
		_ = json.Unmarshal(raw, &node)
	}
	if len(node.Target) == 0 {
		return map[string]any{}, nil
	}
	return nil, notEmulated("create_configuration", "software RAID (mdadm) is not emulated by the ironlab agent")
}

// cmdRunImage is standby.run_image: IPA reboots the machine into the
// written image.
func cmdRunImage(_ context.Context, a *Agent, _ params) (any, error) {
	if a.cfg.Reboot == nil {
		return nil, &CommandError{Type: "SystemRebootError", Code: 500, Message: "Reboot failed", Details: "this agent has no way to reboot its machine (Config.Reboot is not set)"}
	}
	a.afterLastCommand(a.requestReboot)
	return nil, nil
}

// cmdFinalizeRescue is rescue.finalize_rescue: IPA writes the rescue
// password's hash for the rescue user and stops serving its API (the
// ramdisk stays up for the user to log in).
func cmdFinalizeRescue(_ context.Context, a *Agent, p params) (any, error) {
	var args struct {
		Password string `json:"rescue_password"`
		Hashed   bool   `json:"hashed"`
	}
	for k, dst := range map[string]any{"rescue_password": &args.Password, "hashed": &args.Hashed} {
		if raw, ok := p[k]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, dst); err != nil {
				return nil, &CommandError{Type: "InvalidCommandParamsError", Code: 400, Message: "Invalid command parameters", Details: fmt.Sprintf("%s: %v", k, err)}
			}
		}
	}
	if !args.Hashed {
		// IPA would crypt() it; Ironic >= 13.0 sends the hash.
		return nil, notEmulated("finalize_rescue", "the ironlab agent takes hashed rescue passwords only (hashed: true, as Ironic sends them)")
	}
	if !strings.HasPrefix(args.Password, "$") {
		return nil, &CommandError{Type: "InvalidCommandParamsError", Code: 400, Message: "Invalid command parameters", Details: "rescue_password is not a crypt(3) hash"}
	}
	a.mu.Lock()
	a.rescuePassword = args.Password
	a.mu.Unlock()
	a.afterLastCommand(a.requestRescue)
	return nil, nil
}

// afterLastCommand runs f once the command now running has finished, so a
// listing shows it SUCCEEDED first.
func (a *Agent) afterLastCommand(f func()) {
	go func() {
		a.mu.Lock()
		var last *command
		if n := len(a.commands); n > 0 {
			last = a.commands[n-1]
		}
		a.mu.Unlock()
		if last != nil {
			<-last.done
		}
		f()
	}()
}
