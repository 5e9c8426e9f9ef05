package redfish

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/ironlab/ironlab/simulator"
)

// hardwareUpdater is a machine whose firmware version and BIOS settings can
// change (the fake backend): a firmware update or BIOS change lands there,
// so the agent's next inventory shows it.
type hardwareUpdater interface {
	UpdateHardware(func(*simulator.Hardware)) error
}

// Boot override values (Redfish's BootSource and BootSourceOverrideEnabled).
const (
	targetNone     = "None"
	targetPxe      = "Pxe"
	targetHdd      = "Hdd"
	targetCd       = "Cd"
	targetUefiHttp = "UefiHttp"
	targetSetup    = "BiosSetup"

	enabledOnce       = "Once"
	enabledContinuous = "Continuous"
	enabledDisabled   = "Disabled"

	modeUEFI   = "UEFI"
	modeLegacy = "Legacy"
)

var (
	enabledValues = []string{enabledDisabled, enabledOnce, enabledContinuous}
	modeValues    = []string{modeLegacy, modeUEFI}
	resetTypes    = []string{"On", "ForceOn", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "Nmi", "PushPowerButton", "PowerCycle"}
)

// defaultBIOS are the attributes every system's BIOS has; the machine's own
// BIOS settings are added to them.
func defaultBIOS() map[string]any {
	return map[string]any{
		"ProcVirtualization": "Enabled",
		"HyperThreading":     "Enabled",
		"SriovGlobalEnable":  "Disabled",
		"EmbeddedSata":       "AhciMode",
		"BootDelaySeconds":   float64(0),
		"PxeRetry":           true,
	}
}

// media is one virtual media drive's state.
type media struct {
	image          string
	inserted       bool
	writeProtected bool
	protocol       string
	verifyCert     bool
}

// System is one served ComputerSystem with its manager and chassis.
type System struct {
	svc *Service
	id  string
	m   simulator.Machine

	faults faultBox

	powerMu sync.Mutex // one power change at a time

	mu          sync.Mutex
	target      string // the override target last set, for UefiHttp vs Pxe
	enabled     string // the override persistence last set
	bios        map[string]any
	biosDefault map[string]any
	pending     map[string]any // BIOS settings applied at the next reset
	secureBoot  bool
	biosVersion string
	bmcVersion  string
	cd, floppy  media
}

func newSystem(s *Service, m simulator.Machine) (*System, error) {
	sys := &System{svc: s, id: m.UUID(), m: m, bmcVersion: "1.00", pending: map[string]any{}}
	hw := m.Hardware()
	sys.biosVersion = hw.BIOSVersion
	if sys.biosVersion == "" {
		sys.biosVersion = "1.0.0"
	}
	sys.biosDefault = defaultBIOS()
	for k, v := range hw.BIOSSettings {
		sys.biosDefault[k] = v
	}
	sys.bios = maps.Clone(sys.biosDefault)
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.MachineTimeout)
	defer cancel()
	bc, err := m.BootConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("redfish service: machine %s: boot config: %w", m.Name(), err)
	}
	sys.enabled = enabledDisabled
	if bc.Device != simulator.BootDisk && bc.Persistent {
		sys.enabled = enabledContinuous
	}
	sys.cd.writeProtected, sys.floppy.writeProtected = true, true
	return sys, nil
}

// ID is the system's resource id (the machine's UUID).
func (sys *System) ID() string { return sys.id }

// Path is the system's URI: /redfish/v1/Systems/{id}.
func (sys *System) Path() string { return "/redfish/v1/Systems/" + sys.id }

// Machine is the machine behind the system.
func (sys *System) Machine() simulator.Machine { return sys.m }

// Faults are the system's injected failures.
func (sys *System) Faults() Faults { return sys.faults.get() }

// SetFaults replaces the system's injected failures.
func (sys *System) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	sys.faults.set(f)
	return nil
}

// FirmwareVersions are the BIOS and BMC versions the inventory shows.
func (sys *System) FirmwareVersions() (bios, bmcVersion string) {
	sys.mu.Lock()
	defer sys.mu.Unlock()
	return sys.biosVersion, sys.bmcVersion
}

// BIOSAttributes are the BIOS attributes in effect.
func (sys *System) BIOSAttributes() map[string]any {
	sys.mu.Lock()
	defer sys.mu.Unlock()
	return maps.Clone(sys.bios)
}

func (sys *System) hasCD() bool {
	_, ok := sys.m.(simulator.VirtualMedia)
	return ok && sys.boots(simulator.BootCD)
}

// boots says whether the machine can boot dev (simulator.BootDeviceSupport).
func (sys *System) boots(dev simulator.BootDevice) bool {
	bs, ok := sys.m.(simulator.BootDeviceSupport)
	return !ok || bs.SupportsBootDevice(dev)
}

// targets are the boot override targets the machine can honour.
func (sys *System) targets() []string {
	t := []string{targetNone, targetPxe, targetHdd}
	if sys.hasCD() {
		t = append(t, targetCd)
	}
	t = append(t, targetUefiHttp)
	if sys.boots(simulator.BootSetup) {
		t = append(t, targetSetup)
	}
	return t
}

// bootView is the Boot object.
type bootView struct {
	Target         string   `json:"BootSourceOverrideTarget"`
	TargetAllowed  []string `json:"BootSourceOverrideTarget@Redfish.AllowableValues"`
	Enabled        string   `json:"BootSourceOverrideEnabled"`
	EnabledAllowed []string `json:"BootSourceOverrideEnabled@Redfish.AllowableValues"`
	Mode           string   `json:"BootSourceOverrideMode"`
	ModeAllowed    []string `json:"BootSourceOverrideMode@Redfish.AllowableValues"`
}

type odataLink struct {
	ID string `json:"@odata.id"`
}

type health struct {
	State  string
	Health string
}

var healthOK = health{State: "Enabled", Health: "OK"}

// systemView is a ComputerSystem; a struct, not a map, because it is the
// resource clients poll most (power state), and encoding/json sorts map keys.
type systemView struct {
	ODataID          string `json:"@odata.id"`
	ODataType        string `json:"@odata.type"`
	ODataContext     string `json:"@odata.context"`
	ID               string `json:"Id"`
	Name             string
	HostName         string
	UUID             string
	SystemType       string
	Manufacturer     string
	Model            string
	SerialNumber     string
	BiosVersion      string
	PowerState       string
	Status           health
	Boot             bootView
	ProcessorSummary struct {
		Count  int
		Model  string
		Status health
	}
	MemorySummary struct {
		TotalSystemMemoryGiB float64
		Status               health
	}
	Processors         odataLink
	SimpleStorage      odataLink
	Storage            odataLink
	EthernetInterfaces odataLink
	Bios               odataLink
	SecureBoot         odataLink
	VirtualMedia       odataLink
	Links              struct {
		Chassis   []odataLink
		ManagedBy []odataLink
	}
	Actions struct {
		Reset struct {
			Target  string   `json:"target"`
			Allowed []string `json:"ResetType@Redfish.AllowableValues"`
		} `json:"#ComputerSystem.Reset"`
	}
}

// bootView is what the machine boots next, read from it, so a one-time
// override that was used shows as Disabled.
func (sys *System) bootView(ctx context.Context) (bootView, error) {
	bc, err := sys.m.BootConfig(ctx)
	if err != nil {
		return bootView{}, fmt.Errorf("read boot config of %s: %w", sys.m.Name(), err)
	}
	sys.mu.Lock()
	defer sys.mu.Unlock()
	if !bc.Persistent {
		sys.enabled = enabledOnce
	} else if sys.enabled == enabledOnce {
		sys.enabled = enabledDisabled // used: the machine fell back
	}
	target := targetNone
	if sys.enabled != enabledDisabled {
		switch bc.Device {
		case simulator.BootNetwork:
			target = targetPxe
			if sys.target == targetUefiHttp {
				target = targetUefiHttp
			}
		case simulator.BootDisk:
			target = targetHdd
		case simulator.BootCD:
			target = targetCd
		case simulator.BootSetup:
			target = targetSetup
		}
	}
	mode := modeLegacy
	if bc.UEFI {
		mode = modeUEFI
	}
	return bootView{
		Target: target, TargetAllowed: sys.targets(),
		Enabled: sys.enabled, EnabledAllowed: enabledValues,
		Mode: mode, ModeAllowed: modeValues,
	}, nil
}

func (sys *System) view(ctx context.Context) (*systemView, error) {
	p, err := sys.m.Power(ctx)
	if err != nil {
		return nil, fmt.Errorf("read power of %s: %w", sys.m.Name(), err)
	}
	boot, err := sys.bootView(ctx)
	if err != nil {
		return nil, err
	}
	hw := sys.m.Hardware()
	sys.mu.Lock()
	biosVersion := sys.biosVersion
	sys.mu.Unlock()
	base := sys.Path()
	v := &systemView{
		ODataID: base, ODataType: "#ComputerSystem.v1_10_0.ComputerSystem",
		ODataContext: "/redfish/v1/$metadata#ComputerSystem.ComputerSystem",
		ID:           sys.id, Name: sys.m.Name(), HostName: sys.m.Name(), UUID: sys.m.UUID(),
		SystemType: "Physical", Manufacturer: hw.Vendor, Model: hw.Product, SerialNumber: hw.SerialNumber,
		BiosVersion: biosVersion, PowerState: powerName(p), Status: healthOK, Boot: boot,
		Processors:         odataLink{base + "/Processors"},
		SimpleStorage:      odataLink{base + "/SimpleStorage"},
		Storage:            odataLink{base + "/Storage"},
		EthernetInterfaces: odataLink{base + "/EthernetInterfaces"},
		Bios:               odataLink{base + "/Bios"},
		SecureBoot:         odataLink{base + "/SecureBoot"},
		VirtualMedia:       odataLink{base + "/VirtualMedia"},
	}
	v.ProcessorSummary.Count, v.ProcessorSummary.Model, v.ProcessorSummary.Status = hw.CPUs, hw.CPUModel, healthOK
	v.MemorySummary.TotalSystemMemoryGiB, v.MemorySummary.Status = float64(hw.MemoryMB)/1024, healthOK
	v.Links.Chassis = []odataLink{{"/redfish/v1/Chassis/" + sys.id}}
	v.Links.ManagedBy = []odataLink{{"/redfish/v1/Managers/" + sys.id}}
	v.Actions.Reset.Target = base + "/Actions/ComputerSystem.Reset"
	v.Actions.Reset.Allowed = resetTypes
	return v, nil
}

func powerName(p simulator.PowerState) string {
	if p == simulator.PowerOn {
		return "On"
	}
	return "Off"
}

func (s *Service) getSystem(c *call) (*result, *rfError) {
	ctx, cancel := s.machineCtx(c.r)
	defer cancel()
	v, err := c.sys.view(ctx)
	if err != nil {
		return nil, internal("%v", err)
	}
	return ok(v)
}

// patchSystem changes the boot override; every property is checked before
// anything changes.
func (s *Service) patchSystem(c *call) (*result, *rfError) {
	obj, e := readObject(c, false)
	if e != nil {
		return nil, e
	}
	ctx, cancel := s.machineCtx(c.r)
	defer cancel()
	cur, err := c.sys.view(ctx)
	if err != nil {
		return nil, internal("%v", err)
	}
	if e := checkETag(c.r, cur); e != nil {
		return nil, e
	}
	if e := onlyKeys(obj, "#", "Boot"); e != nil {
		return nil, e
	}
	if raw, ok := obj["Boot"]; ok {
		var boot map[string]json.RawMessage
		if err := json.Unmarshal(raw, &boot); err != nil || boot == nil {
			return nil, propertyType("#/Boot", "Boot", string(raw))
		}
		if e := c.sys.setBoot(ctx, boot, cur.Boot); e != nil {
			return nil, e
		}
	}
	return noContent()
}

func (sys *System) setBoot(ctx context.Context, boot map[string]json.RawMessage, cur bootView) *rfError {
	if e := onlyKeys(boot, "#/Boot", "BootSourceOverrideTarget", "BootSourceOverrideEnabled", "BootSourceOverrideMode"); e != nil {
		return e
	}
	target, enabled, mode := cur.Target, cur.Enabled, cur.Mode
	get := func(name string, allowed []string, v *string) *rfError {
		raw, ok := boot[name]
		if !ok {
			return nil
		}
		ptr := "#/Boot/" + name
		s, e := str(raw, ptr, name)
		if e != nil {
			return e
		}
		if !slices.Contains(allowed, s) {
			return propertyNotInList(ptr, name, s)
		}
		*v = s
		return nil
	}
	_, targetSet := boot["BootSourceOverrideTarget"]
	if e := get("BootSourceOverrideTarget", sys.targets(), &target); e != nil {
		return e
	}
	if e := get("BootSourceOverrideEnabled", enabledValues, &enabled); e != nil {
		return e
	}
	if e := get("BootSourceOverrideMode", modeValues, &mode); e != nil {
		return e
	}
	if _, enabledSet := boot["BootSourceOverrideEnabled"]; targetSet && !enabledSet && enabled == enabledDisabled && target != targetNone {
		enabled = enabledOnce // a target alone overrides the next boot
	}
	if target == targetNone {
		enabled = enabledDisabled
	}
	if enabled != enabledDisabled && target == targetNone {
		target = targetHdd
	}
	if target == targetUefiHttp && mode != modeUEFI {
		return errorf(http.StatusBadRequest, "PropertyValueConflict", []string{"#/Boot/BootSourceOverrideTarget", "#/Boot/BootSourceOverrideMode"},
			[]string{"BootSourceOverrideTarget", "BootSourceOverrideMode"},
			"The property BootSourceOverrideTarget could not be written because its value UefiHttp conflicts with the value Legacy of BootSourceOverrideMode.")
	}
	bc := simulator.BootConfig{Device: simulator.BootDisk, Persistent: true, UEFI: mode == modeUEFI}
	if enabled != enabledDisabled {
		bc.Persistent = enabled == enabledContinuous
		switch target {
		case targetPxe, targetUefiHttp:
			bc.Device = simulator.BootNetwork
		case targetHdd:
			bc.Device = simulator.BootDisk
		case targetCd:
			bc.Device = simulator.BootCD
		case targetSetup:
			bc.Device = simulator.BootSetup
		}
	}
	if err := sys.m.SetBootConfig(ctx, bc); err != nil {
		return internal("set the boot device of %s: %v", sys.m.Name(), err)
	}
	sys.mu.Lock()
	sys.target, sys.enabled = target, enabled
	sys.mu.Unlock()
	return nil
}

// reset runs ComputerSystem.Reset.
func (s *Service) reset(c *call) (*result, *rfError) {
	const action = "ComputerSystem.Reset"
	obj, e := readObject(c, false)
	if e != nil {
		return nil, e
	}
	if e := onlyKeysAction(obj, action, "ResetType"); e != nil {
		return nil, e
	}
	raw, ok := obj["ResetType"]
	if !ok {
		return nil, paramMissing(action, "ResetType")
	}
	var rt string
	if err := json.Unmarshal(raw, &rt); err != nil {
		return nil, paramFormat(action, "ResetType", string(raw))
	}
	if !slices.Contains(resetTypes, rt) {
		return nil, paramValueNotInList(action, "ResetType", rt)
	}
	ctx, cancel := s.machineCtx(c.r)
	defer cancel()
	p, err := c.sys.m.Power(ctx)
	if err != nil {
		return nil, internal("read power of %s: %v", c.sys.m.Name(), err)
	}
	plan := resetPlan(rt, p == simulator.PowerOn)
	if rt == "Nmi" && p != simulator.PowerOn {
		return nil, errorf(http.StatusConflict, "ActionNotSupported", nil, []string{action},
			"The action %s with ResetType Nmi needs the system powered on.", action)
	}
	if late := time.Duration(c.faults.PowerLate); late > 0 {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			t := time.NewTimer(late)
			defer t.Stop()
			select {
			case <-t.C:
			case <-s.ctx.Done():
				return
			}
			ctx, cancel := context.WithTimeout(s.ctx, s.opts.MachineTimeout)
			defer cancel()
			if err := c.sys.power(ctx, plan); err != nil {
				s.log.Error("late power change failed", "system", c.sys.id, "reset", rt, "err", err)
			}
		}()
		return noContent()
	}
	if err := c.sys.power(ctx, plan); err != nil {
		return nil, internal("%s %s: %v", rt, c.sys.m.Name(), err)
	}
	return noContent()
}

func onlyKeysAction(obj map[string]json.RawMessage, action string, allowed ...string) *rfError {
	keys := slices.Sorted(maps.Keys(obj))
	for _, k := range keys {
		if !slices.Contains(allowed, k) {
			return paramNotSupported(action, k)
		}
	}
	return nil
}

// resetPlan is what a reset type does to a machine that is on or off. A
// restart of a machine that is off powers it on, as most BMCs do.
func resetPlan(rt string, on bool) []simulator.PowerAction {
	switch rt {
	case "On", "ForceOn":
		if on {
			return nil
		}
		return []simulator.PowerAction{simulator.ActionOn}
	case "ForceOff":
		if !on {
			return nil
		}
		return []simulator.PowerAction{simulator.ActionOff}
	case "GracefulShutdown":
		if !on {
			return nil
		}
		return []simulator.PowerAction{simulator.ActionSoftOff}
	case "PushPowerButton":
		if on {
			return []simulator.PowerAction{simulator.ActionSoftOff}
		}
		return []simulator.PowerAction{simulator.ActionOn}
	case "ForceRestart":
		if on {
			return []simulator.PowerAction{simulator.ActionReset}
		}
	case "GracefulRestart":
		if on {
			return []simulator.PowerAction{simulator.ActionSoftOff, simulator.ActionOn}
		}
	case "PowerCycle":
		if on {
			return []simulator.PowerAction{simulator.ActionCycle}
		}
	case "Nmi":
		return []simulator.PowerAction{simulator.ActionNMI}
	}
	return []simulator.PowerAction{simulator.ActionOn}
}

// power runs a plan; before the machine starts, pending BIOS settings apply
// (they take effect on reset).
func (sys *System) power(ctx context.Context, plan []simulator.PowerAction) error {
	sys.powerMu.Lock()
	defer sys.powerMu.Unlock()
	for _, a := range plan {
		if a == simulator.ActionOn || a == simulator.ActionReset || a == simulator.ActionCycle {
			if err := sys.applyBIOS(); err != nil {
				return err
			}
		}
		if err := sys.m.SetPower(ctx, a); err != nil {
			return fmt.Errorf("power %s: %w", a, err)
		}
	}
	return nil
}

func (sys *System) applyBIOS() error {
	sys.mu.Lock()
	defer sys.mu.Unlock()
	if len(sys.pending) == 0 {
		return nil
	}
	next := maps.Clone(sys.bios)
	maps.Copy(next, sys.pending)
	if hu, ok := sys.m.(hardwareUpdater); ok {
		err := hu.UpdateHardware(func(hw *simulator.Hardware) {
			if hw.BIOSSettings == nil {
				hw.BIOSSettings = map[string]string{}
			}
			for k, v := range sys.pending {
				hw.BIOSSettings[k] = attrString(v)
			}
		})
		if err != nil {
			return fmt.Errorf("apply BIOS settings to %s: %w", sys.m.Name(), err)
		}
	}
	sys.bios, sys.pending = next, map[string]any{}
	return nil
}

func attrString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

func (s *Service) getBios(c *call) (*result, *rfError) {
	base := c.sys.Path() + "/Bios"
	v := odata(base, "#Bios.v1_1_0.Bios")
	v["Id"] = "BIOS"
	v["Name"] = "BIOS Configuration Current Settings"
	v["AttributeRegistry"] = "BiosAttributeRegistry.v1_0_0"
	v["Attributes"] = c.sys.BIOSAttributes()
	v["@Redfish.Settings"] = map[string]any{
		"@odata.type":         "#Settings.v1_3_0.Settings",
		"SettingsObject":      link(base + "/Settings"),
		"SupportedApplyTimes": []string{"OnReset"},
	}
	v["Actions"] = map[string]any{
		"#Bios.ResetBios": map[string]any{"target": base + "/Actions/Bios.ResetBios"},
	}
	return ok(v)
}

func (sys *System) biosSettingsView() map[string]any {
	v := odata(sys.Path()+"/Bios/Settings", "#Bios.v1_1_0.Bios")
	v["Id"] = "Settings"
	v["Name"] = "BIOS Configuration Pending Settings"
	sys.mu.Lock()
	v["Attributes"] = maps.Clone(sys.pending)
	sys.mu.Unlock()
	return v
}

func (s *Service) getBiosSettings(c *call) (*result, *rfError) { return ok(c.sys.biosSettingsView()) }

// patchBiosSettings stages attributes for the next reset. Names must exist
// and values keep their type.
func (s *Service) patchBiosSettings(c *call) (*result, *rfError) {
	obj, e := readObject(c, false)
	if e != nil {
		return nil, e
	}
	if e := checkETag(c.r, c.sys.biosSettingsView()); e != nil {
		return nil, e
	}
	if e := onlyKeys(obj, "#", "Attributes", "@Redfish.SettingsApplyTime"); e != nil {
		return nil, e
	}
	if raw, ok := obj["@Redfish.SettingsApplyTime"]; ok {
		var at map[string]json.RawMessage
		if err := json.Unmarshal(raw, &at); err != nil || at == nil {
			return nil, propertyType("#/@Redfish.SettingsApplyTime", "@Redfish.SettingsApplyTime", string(raw))
		}
		if e := onlyKeys(at, "#/@Redfish.SettingsApplyTime", "ApplyTime"); e != nil {
			return nil, e
		}
		if v, ok := at["ApplyTime"]; ok {
			t, e := str(v, "#/@Redfish.SettingsApplyTime/ApplyTime", "ApplyTime")
			if e != nil {
				return nil, e
			}
			if t != "OnReset" {
				return nil, propertyNotInList("#/@Redfish.SettingsApplyTime/ApplyTime", "ApplyTime", t)
			}
		}
	}
	raw, ok := obj["Attributes"]
	if !ok {
		return noContent()
	}
	var attrs map[string]any
	if err := json.Unmarshal(raw, &attrs); err != nil || attrs == nil {
		return nil, propertyType("#/Attributes", "Attributes", string(raw))
	}
	c.sys.mu.Lock()
	defer c.sys.mu.Unlock()
	names := make([]string, 0, len(attrs))
	for k := range attrs {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		cur, exists := c.sys.bios[k]
		ptr := "#/Attributes/" + k
		if !exists {
			return nil, propertyUnknown(ptr, k)
		}
		if fmt.Sprintf("%T", cur) != fmt.Sprintf("%T", attrs[k]) {
			b, _ := json.Marshal(attrs[k])
			return nil, propertyType(ptr, k, string(b))
		}
	}
	maps.Copy(c.sys.pending, attrs)
	return noContent()
}

func (s *Service) resetBios(c *call) (*result, *rfError) {
	obj, e := readObject(c, true)
	if e != nil {
		return nil, e
	}
	if e := onlyKeysAction(obj, "Bios.ResetBios"); e != nil {
		return nil, e
	}
	c.sys.mu.Lock()
	c.sys.pending = maps.Clone(c.sys.biosDefault)
	c.sys.mu.Unlock()
	return noContent()
}

func (sys *System) secureBootView(ctx context.Context) (map[string]any, error) {
	bc, err := sys.m.BootConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("read boot config of %s: %w", sys.m.Name(), err)
	}
	sys.mu.Lock()
	en := sys.secureBoot
	sys.mu.Unlock()
	v := odata(sys.Path()+"/SecureBoot", "#SecureBoot.v1_1_0.SecureBoot")
	v["Id"] = "SecureBoot"
	v["Name"] = "UEFI Secure Boot"
	v["SecureBootEnable"] = en
	cur := "Disabled"
	if en && bc.UEFI {
		cur = "Enabled"
	}
	v["SecureBootCurrentBoot"] = cur
	v["SecureBootMode"] = "DeployedMode"
	v["Actions"] = map[string]any{"#SecureBoot.ResetKeys": map[string]any{
		"target":                                sys.Path() + "/SecureBoot/Actions/SecureBoot.ResetKeys",
		"ResetKeysType@Redfish.AllowableValues": []string{"ResetAllKeysToDefault", "DeleteAllKeys", "DeletePK"},
	}}
	return v, nil
}

func (s *Service) getSecureBoot(c *call) (*result, *rfError) {
	ctx, cancel := s.machineCtx(c.r)
	defer cancel()
	v, err := c.sys.secureBootView(ctx)
	if err != nil {
		return nil, internal("%v", err)
	}
	return ok(v)
}

func (s *Service) patchSecureBoot(c *call) (*result, *rfError) {
	obj, e := readObject(c, false)
	if e != nil {
		return nil, e
	}
	ctx, cancel := s.machineCtx(c.r)
	defer cancel()
	cur, err := c.sys.secureBootView(ctx)
	if err != nil {
		return nil, internal("%v", err)
	}
	if e := checkETag(c.r, cur); e != nil {
		return nil, e
	}
	if e := onlyKeys(obj, "#", "SecureBootEnable"); e != nil {
		return nil, e
	}
	if raw, ok := obj["SecureBootEnable"]; ok {
		var en bool
		if err := json.Unmarshal(raw, &en); err != nil {
			return nil, propertyType("#/SecureBootEnable", "SecureBootEnable", string(raw))
		}
		c.sys.mu.Lock()
		c.sys.secureBoot = en
		c.sys.mu.Unlock()
	}
	return noContent()
}

func (s *Service) resetKeys(c *call) (*result, *rfError) {
	const action = "SecureBoot.ResetKeys"
	obj, e := readObject(c, false)
	if e != nil {
		return nil, e
	}
	if e := onlyKeysAction(obj, action, "ResetKeysType"); e != nil {
		return nil, e
	}
	raw, ok := obj["ResetKeysType"]
	if !ok {
		return nil, paramMissing(action, "ResetKeysType")
	}
	var t string
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, paramFormat(action, "ResetKeysType", string(raw))
	}
	if !slices.Contains([]string{"ResetAllKeysToDefault", "DeleteAllKeys", "DeletePK"}, t) {
		return nil, paramValueNotInList(action, "ResetKeysType", t)
	}
	if t != "ResetAllKeysToDefault" {
		c.sys.mu.Lock()
		c.sys.secureBoot = false // without a platform key secure boot cannot run
		c.sys.mu.Unlock()
	}
	return noContent()
}

// Processors, storage and NICs: read-only views of the machine's hardware.

func (s *Service) getProcessors(c *call) (*result, *rfError) {
	return ok(collection(c.sys.Path()+"/Processors", "#ProcessorCollection.ProcessorCollection", "Processors",
		[]string{c.sys.Path() + "/Processors/CPU0"}))
}

func (s *Service) getProcessor(c *call) (*result, *rfError) {
	if c.r.PathValue("proc") != "CPU0" {
		return nil, notFound(c.r.URL.Path)
	}
	hw := c.sys.m.Hardware()
	arch, isa := "x86", "x86-64"
	switch hw.CPUArch {
	case "aarch64", "arm64":
		arch, isa = "ARM", "ARM-A64"
	case "ppc64le":
		arch, isa = "Power", "PowerISA"
	}
	v := odata(c.sys.Path()+"/Processors/CPU0", "#Processor.v1_3_1.Processor")
	v["Id"] = "CPU0"
	v["Name"] = "Processor"
	v["Socket"] = "CPU 0"
	v["ProcessorType"] = "CPU"
	v["ProcessorArchitecture"] = arch
	v["InstructionSet"] = isa
	v["Model"] = hw.CPUModel
	v["TotalCores"] = hw.CPUs
	v["TotalThreads"] = hw.CPUs
	v["Status"] = statusOK
	return ok(v)
}

func (s *Service) getSimpleStorageCollection(c *call) (*result, *rfError) {
	return ok(collection(c.sys.Path()+"/SimpleStorage", "#SimpleStorageCollection.SimpleStorageCollection", "Simple Storage Collection",
		[]string{c.sys.Path() + "/SimpleStorage/1"}))
}

func (s *Service) getSimpleStorage(c *call) (*result, *rfError) {
	if c.r.PathValue("st") != "1" {
		return nil, notFound(c.r.URL.Path)
	}
	hw := c.sys.m.Hardware()
	devs := make([]any, 0, len(hw.Disks))
	for _, d := range hw.Disks {
		devs = append(devs, map[string]any{"Name": d.Name, "CapacityBytes": d.SizeBytes, "Status": statusOK})
	}
	v := odata(c.sys.Path()+"/SimpleStorage/1", "#SimpleStorage.v1_2_0.SimpleStorage")
	v["Id"] = "1"
	v["Name"] = "Simple Storage Controller"
	v["Devices"] = devs
	v["Status"] = statusOK
	return ok(v)
}

func (s *Service) getStorageCollection(c *call) (*result, *rfError) {
	return ok(collection(c.sys.Path()+"/Storage", "#StorageCollection.StorageCollection", "Storage Collection",
		[]string{c.sys.Path() + "/Storage/1"}))
}

func (s *Service) getStorage(c *call) (*result, *rfError) {
	if c.r.PathValue("st") != "1" {
		return nil, notFound(c.r.URL.Path)
	}
	hw := c.sys.m.Hardware()
	drives := make([]any, 0, len(hw.Disks))
	for i := range hw.Disks {
		drives = append(drives, link(fmt.Sprintf("%s/Storage/1/Drives/%d", c.sys.Path(), i)))
	}
	v := odata(c.sys.Path()+"/Storage/1", "#Storage.v1_4_0.Storage")
	v["Id"] = "1"
	v["Name"] = "Storage Controller"
	v["Drives"] = drives
	v["Drives@odata.count"] = len(drives)
	v["Status"] = statusOK
	return ok(v)
}

func (s *Service) getDrive(c *call) (*result, *rfError) {
	hw := c.sys.m.Hardware()
	i, err := strconv.Atoi(c.r.PathValue("drive"))
	if c.r.PathValue("st") != "1" || err != nil || i < 0 || i >= len(hw.Disks) {
		return nil, notFound(c.r.URL.Path)
	}
	d := hw.Disks[i]
	mt := "SSD"
	if d.Rotational {
		mt = "HDD"
	}
	v := odata(fmt.Sprintf("%s/Storage/1/Drives/%d", c.sys.Path(), i), "#Drive.v1_4_0.Drive")
	v["Id"] = strconv.Itoa(i)
	v["Name"] = d.Name
	v["CapacityBytes"] = d.SizeBytes
	v["MediaType"] = mt
	v["Protocol"] = "SATA"
	v["Status"] = statusOK
	return ok(v)
}

func (s *Service) getNICs(c *call) (*result, *rfError) {
	hw := c.sys.m.Hardware()
	ids := make([]string, len(hw.NICs))
	for i := range hw.NICs {
		ids[i] = fmt.Sprintf("%s/EthernetInterfaces/%d", c.sys.Path(), i)
	}
	return ok(collection(c.sys.Path()+"/EthernetInterfaces", "#EthernetInterfaceCollection.EthernetInterfaceCollection", "Ethernet Interface Collection", ids))
}

func (s *Service) getNIC(c *call) (*result, *rfError) {
	hw := c.sys.m.Hardware()
	i, err := strconv.Atoi(c.r.PathValue("nic"))
	if err != nil || i < 0 || i >= len(hw.NICs) || strconv.Itoa(i) != c.r.PathValue("nic") {
		return nil, notFound(c.r.URL.Path)
	}
	n := hw.NICs[i]
	v := odata(fmt.Sprintf("%s/EthernetInterfaces/%d", c.sys.Path(), i), "#EthernetInterface.v1_4_0.EthernetInterface")
	v["Id"] = strconv.Itoa(i)
	v["Name"] = n.Name
	v["MACAddress"] = n.MAC
	v["PermanentMACAddress"] = n.MAC
	v["SpeedMbps"] = 1000
	v["LinkStatus"] = "LinkUp"
	v["Status"] = statusOK
	return ok(v)
}
