package scenarios

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/ironlab/ironlab/simulator/lab"
	"github.com/ironlab/ironlab/simulator/lab/enroll"
)

//go:embed *.yaml
var builtin embed.FS

// ErrBadScenario is wrapped by every parse and validation error.
var ErrBadScenario = errors.New("bad scenario")

// Error is a scenario error at a place in a file.
type Error struct {
	File   string
	Line   int
	Column int
	Msg    string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
}

func (e *Error) Unwrap() error { return ErrBadScenario }

// Builtin lists the names of the scenarios embedded in the binary.
func Builtin() []string {
	ents, _ := builtin.ReadDir(".")
	var names []string
	for _, e := range ents {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	return names
}

// Load reads the one scenario of a file, or of a built-in scenario by name.
func Load(name string) (*Scenario, error) {
	all, err := LoadAll(name)
	if err != nil {
		return nil, err
	}
	return all[0], nil
}

// LoadAll reads every scenario of a file (YAML documents separated by
// "---"), or of a built-in scenario by name ("deploy", or
// "scenarios/deploy.yaml" when no such file exists here).
func LoadAll(name string) ([]*Scenario, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		base := strings.TrimSuffix(filepath.Base(name), ".yaml")
		b, berr := builtin.ReadFile(base + ".yaml")
		if berr != nil {
			return nil, &Error{File: name, Msg: fmt.Sprintf("no such file and no built-in scenario %q (built-in: %s)", base, strings.Join(Builtin(), ", "))}
		}
		data, name = b, "builtin:"+base+".yaml"
	}
	return ParseAll(name, data)
}

// Parse parses and validates a file that holds one scenario.
func Parse(file string, data []byte) (*Scenario, error) {
	all, err := ParseAll(file, data)
	if err != nil {
		return nil, err
	}
	if len(all) != 1 {
		return nil, &Error{File: file, Msg: fmt.Sprintf("want one scenario, the file has %d", len(all))}
	}
	return all[0], nil
}

// ParseAll parses and validates every scenario of a file; errors name
// file, line and column.
func ParseAll(file string, data []byte) ([]*Scenario, error) {
	// goccy/go-yaml counts the CRLF after a comment as two lines: a file
	// saved with Windows line ends would get errors a line off per comment.
	data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, yamlError(file, err)
	}
	var out []*Scenario
	var errs []error
	names := map[string]bool{}
	for _, doc := range f.Docs {
		if doc.Body == nil {
			continue
		}
		var s Scenario
		if err := checkAliases(file, doc.Body); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := yaml.NodeToValue(doc.Body, &s, yaml.DisallowUnknownField()); err != nil {
			errs = append(errs, yamlError(file, err))
			continue
		}
		s.File = file
		v := validator{file: file, body: doc.Body}
		v.scenario(&s)
		if names[s.Name] {
			v.at("$.name", "a second scenario named %q in this file", s.Name)
		}
		names[s.Name] = true
		errs = append(errs, v.errs...)
		out = append(out, &s)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(out) == 0 {
		return nil, &Error{File: file, Msg: "no scenario in the file"}
	}
	return out, nil
}

func yamlError(file string, err error) error {
	var ye yaml.Error
	if errors.As(err, &ye) && ye.GetToken() != nil && ye.GetToken().Position != nil {
		p := ye.GetToken().Position
		return &Error{File: file, Line: p.Line, Column: p.Column, Msg: ye.GetMessage()}
	}
	return &Error{File: file, Msg: err.Error()}
}

// checkAliases reports an alias with no anchor before it at its place (the
// YAML decoder's own error for one in a merge key or a list has none), and a tag.
func checkAliases(file string, body ast.Node) error {
	v := &aliasVisitor{anchors: map[string]bool{}}
	ast.Walk(v, body)
	if a := v.unknown; a != nil {
		e := &Error{File: file, Msg: fmt.Sprintf("alias *%s has no anchor &%s before it", a.Value.GetToken().Value, a.Value.GetToken().Value)}
		if p := a.GetToken().Position; p != nil {
			e.Line, e.Column = p.Line, p.Column
		}
		return e
	}
	// goccy/go-yaml v1.19.2 panics on a tag over a scalar where a list is
	// expected ("groups: !x 5"; goccy/go-yaml#735, fixed after v1.19.2);
	// scenarios need no tags.
	if tag := v.tag; tag != nil {
		e := &Error{File: file, Msg: fmt.Sprintf("YAML tag %s: scenario files take no tags (quote the value instead)", tag.Start.Value)}
		if p := tag.GetToken().Position; p != nil {
			e.Line, e.Column = p.Line, p.Column
		}
		return e
	}
	return nil
}

type aliasVisitor struct {
	anchors map[string]bool
	unknown *ast.AliasNode
	tag     *ast.TagNode
}

func (v *aliasVisitor) Visit(n ast.Node) ast.Visitor {
	switch n := n.(type) {
	case *ast.AnchorNode:
		v.anchors[n.Name.GetToken().Value] = true
	case *ast.AliasNode:
		if v.unknown == nil && !v.anchors[n.Value.GetToken().Value] {
			v.unknown = n
		}
	case *ast.TagNode:
		if v.tag == nil {
			v.tag = n
		}
	}
	return v
}

type validator struct {
	file string
	body ast.Node // the scenario's YAML document
	errs []error
	// conductors are the names a conductor fault may use so far: c1..cN
	// of lab.conductors, then the ones earlier steps joined.
	conductors map[string]bool
}

// at reports a problem with the value at a YAML path such as "$.steps[2].wait.state".
func (v *validator) at(path, format string, a ...any) {
	e := &Error{File: v.file, Msg: strings.TrimPrefix(path, "$.") + ": " + fmt.Sprintf(format, a...)}
	for p := path; p != ""; p = parent(p) {
		yp, err := yaml.PathString(p)
		if err != nil {
			continue
		}
		n, err := yp.FilterNode(v.body)
		if err == nil && n != nil && n.GetToken() != nil && n.GetToken().Position != nil {
			e.Line, e.Column = n.GetToken().Position.Line, n.GetToken().Position.Column
			break
		}
	}
	v.errs = append(v.errs, e)
}

func parent(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i <= 1 {
		return ""
	}
	return p[:i]
}

var (
	nameRe    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,40}$`)
	provision = map[string]bool{
		"enroll": true, "verifying": true, "manageable": true, "available": true,
		"deploying": true, "wait call-back": true, "deploy failed": true, "active": true,
		"deleting": true, "cleaning": true, "clean wait": true, "clean failed": true,
		"rescuing": true, "rescue wait": true, "rescue": true, "rescue failed": true,
		"unrescuing": true, "unrescue failed": true,
	}
)

// MaxNodes bounds a lab so that a typo cannot exhaust the machine.
const MaxNodes = 10000

func (v *validator) scenario(s *Scenario) {
	if !nameRe.MatchString(s.Name) {
		v.at("$.name", "must be 1-41 lower-case letters, digits or dashes, got %q", s.Name)
	}
	switch s.Only {
	case "", "builtin", "ironic":
	default:
		v.at("$.only", "must be builtin or ironic, got %q", s.Only)
	}
	v.lab(&s.Lab)
	for i, g := range s.Lab.Groups {
		if g.Boot == lab.BootVirtualMedia && s.Only != "ironic" {
			v.at(fmt.Sprintf("$.lab.groups[%d].boot", i), "%s is a real Ironic's redfish-virtual-media boot, which ironlab's driver lacks: the scenario must say only: ironic", lab.BootVirtualMedia)
		}
	}
	if len(s.Steps) == 0 {
		v.at("$.steps", "a scenario needs at least one step")
	}
	for i := range s.Steps {
		v.step(fmt.Sprintf("$.steps[%d]", i), &s.Steps[i], &s.Lab)
	}
}

func (v *validator) lab(l *Lab) {
	switch l.Backend {
	case "":
		l.Backend = "fake"
	case "fake", "libvirt":
	default:
		v.at("$.lab.backend", "must be fake or libvirt, got %q", l.Backend)
	}
	l.heartbeatTimeout = 300 * time.Second
	if l.HeartbeatTimeout != "" {
		d, err := ParseDuration(l.HeartbeatTimeout)
		if err != nil || d <= 0 {
			v.at("$.lab.heartbeat_timeout", "want a positive duration like 300s, got %q", l.HeartbeatTimeout)
		}
		l.heartbeatTimeout = d
	}
	if l.IPMIMinInterval != "" {
		d, err := ParseDuration(l.IPMIMinInterval)
		if err != nil || d < 0 {
			v.at("$.lab.ipmi_min_interval", "want a duration like 5s, got %q", l.IPMIMinInterval)
		}
		l.ipmiMinInterval = d
	}
	switch l.WatchdogAction {
	case "":
		l.WatchdogAction = "reboot"
	case "reboot", "maintenance", "off":
	default:
		v.at("$.lab.watchdog_action", "must be reboot, maintenance or off, got %q", l.WatchdogAction)
	}
	if l.WatchdogMaxReboots < 0 {
		v.at("$.lab.watchdog_max_reboots", "must not be negative, got %d", l.WatchdogMaxReboots)
	}
	for field, p := range map[string]struct {
		s string
		d *time.Duration
	}{"deploy_callback_timeout": {l.DeployCallbackTimeout, &l.deployCallbackTimeout}, "clean_callback_timeout": {l.CleanCallbackTimeout, &l.cleanCallbackTimeout},
		"rescue_callback_timeout": {l.RescueCallbackTimeout, &l.rescueCallbackTimeout}} {
		*p.d = 1800 * time.Second
		if p.s != "" {
			d, err := ParseDuration(p.s)
			if err != nil || d <= 0 {
				v.at("$.lab."+field, "want a positive duration like 30s, got %q", p.s)
			}
			*p.d = d
		}
	}
	v.conductorLab(l)
	switch l.BMCAddressing {
	case "":
		l.BMCAddressing = "port"
	case "port", "ip":
	default:
		v.at("$.lab.bmc_addressing", "must be port or ip, got %q", l.BMCAddressing)
	}
	if l.BMCBasePort < 0 || l.BMCBasePort > 65535 {
		v.at("$.lab.bmc_base_port", "must be a UDP port (0 picks free ports), got %d", l.BMCBasePort)
	}
	seen := map[string]bool{}
	for i := range l.Images {
		im := &l.Images[i]
		p := fmt.Sprintf("$.lab.images[%d]", i)
		if im.ID == "" || seen[im.ID] {
			v.at(p+".id", "needs a unique id, got %q", im.ID)
		}
		seen[im.ID] = true
		im.size = 64 << 20
		if im.Size != "" {
			n, err := ParseSize(im.Size)
			if err != nil || n < 1024 || n%512 != 0 {
				v.at(p+".size", "want a size like 64MiB (a multiple of 512, at least 1KiB), got %q", im.Size)
			}
			im.size = n
		}
		switch im.Format {
		case "", "raw", "qcow2":
		default:
			v.at(p+".format", "want raw or qcow2, got %q", im.Format)
		}
	}
	if len(l.Groups) == 0 {
		v.at("$.lab.groups", "a lab needs at least one group of nodes")
	}
	total := 0
	groups := map[string]bool{}
	for i := range l.Groups {
		g := &l.Groups[i]
		p := fmt.Sprintf("$.lab.groups[%d]", i)
		if !nameRe.MatchString(g.Name) || groups[g.Name] {
			v.at(p+".name", "needs a unique name of lower-case letters, digits or dashes, got %q", g.Name)
		}
		groups[g.Name] = true
		if g.Count < 1 {
			v.at(p+".count", "must be at least 1, got %d", g.Count)
		}
		total += g.Count
		v.hardware(p, g)
		switch g.Dialect {
		case "":
			g.Dialect = "v1"
		case "v1", "legacy":
		default:
			v.at(p+".dialect", "must be v1 or legacy, got %q", g.Dialect)
		}
		switch g.Boot {
		case "", lab.BootPXE:
		case lab.BootVirtualMedia:
			if g.BMC != string(lab.BMCRedfish) {
				v.at(p+".boot", "%s needs a Redfish BMC (bmc: redfish or a *_redfish class), the group has %s", lab.BootVirtualMedia, orNone(g.BMC))
			}
		default:
			v.at(p+".boot", "must be %s or %s, got %q", lab.BootPXE, lab.BootVirtualMedia, g.Boot)
		}
		switch g.BootMode {
		case "":
			g.BootMode = "bios"
		case "bios", "uefi":
		default:
			v.at(p+".boot_mode", "must be bios or uefi, got %q", g.BootMode)
		}
		if g.CPUs == 0 {
			g.CPUs = 2
		}
		if g.MemoryMB == 0 {
			g.MemoryMB = 2048
		}
		if g.BMCUser == "" {
			g.BMCUser = "admin"
		}
		if g.BMCPassword == "" {
			g.BMCPassword = "password"
		}
		g.diskSize = 1 << 30
		if g.DiskSize != "" {
			n, err := ParseSize(g.DiskSize)
			if err != nil || n < 1<<20 || n%512 != 0 {
				v.at(p+".disk_size", "want a size like 1GiB (at least 1MiB), got %q", g.DiskSize)
			}
			g.diskSize = n
		}
		if g.POSTTime != "" {
			d, err := ParseDuration(g.POSTTime)
			if err != nil || d < 0 {
				v.at(p+".post_time", "want a duration like 2s, got %q", g.POSTTime)
			}
			g.postTime = d
		}
		for _, im := range l.Images {
			if im.size > g.diskSize {
				v.at(p+".disk_size", "disk of %d bytes is smaller than image %s (%d bytes)", g.diskSize, im.ID, im.size)
			}
		}
	}
	if total > MaxNodes {
		v.at("$.lab.groups", "%d nodes in all; at most %d fit one lab", total, MaxNodes)
	}
	v.vmLab(l) // the groups' hardware is known now
}

// hardware checks a group's hardware and derives its enrollment through
// the one mapping (package enroll): the class the hardware maps to, or the
// group's own class, which must drive that hardware; alone, a class
// implies its hardware.
func (v *validator) hardware(p string, g *Group) {
	switch lab.BMC(g.BMC) {
	case "", lab.BMCIPMI, lab.BMCRedfish, lab.BMCSSH, lab.BMCNone:
	default:
		v.at(p+".bmc", "must be ipmi, redfish, ssh or none, got %q", g.BMC)
		return
	}
	switch lab.Deploy(g.Deploy) {
	case "", lab.DeployAgent, lab.DeployPXE:
	default:
		v.at(p+".deploy", "must be agent or pxe, got %q", g.Deploy)
		return
	}
	if g.NICs < 0 || g.NICs > 8 {
		v.at(p+".nics", "must be 1 to 8 (0 means 1), got %d", g.NICs)
	}
	c, err := enroll.Resolve(lab.BMC(g.BMC), lab.Deploy(g.Deploy), g.Driver)
	if err != nil {
		field := ".driver"
		if g.Driver == "" {
			field = ".bmc"
		}
		v.at(p+field, "%v", err)
		return
	}
	g.Driver, g.BMC, g.Deploy = c.Name, string(c.BMC), string(c.Deploy)
	switch lab.RedfishListen(g.RedfishListen) {
	case "", lab.RedfishShared:
	case lab.RedfishPerNode:
		if c.BMC != lab.BMCRedfish {
			v.at(p+".redfish_listen", "per-node needs bmc redfish; group %s has bmc %s", g.Name, c.BMC)
		}
	default:
		v.at(p+".redfish_listen", "must be shared or per-node, got %q", g.RedfishListen)
	}
}

func (v *validator) step(p string, st *Step, l *Lab) {
	var set []string
	check := func(name string, isSet bool, nodes []string) {
		if !isSet {
			return
		}
		set = append(set, name)
		v.nodes(p+"."+name+".nodes", nodes, l)
	}
	check("enroll", st.Enroll != nil, targetNodes(st.Enroll))
	check("manage", st.Manage != nil, targetNodes(st.Manage))
	check("provide", st.Provide != nil, targetNodes(st.Provide))
	check("undeploy", st.Undeploy != nil, targetNodes(st.Undeploy))
	if st.Deploy != nil {
		check("deploy", true, st.Deploy.Nodes)
		if !hasImage(l, st.Deploy.Image) {
			v.at(p+".deploy.image", "no image %q in lab.images", st.Deploy.Image)
		}
		switch st.Deploy.Checksum {
		case "":
			st.Deploy.Checksum = "sha512"
		case "sha512", "sha256", "md5":
		default:
			v.at(p+".deploy.checksum", "must be sha512, sha256 or md5, got %q", st.Deploy.Checksum)
		}
	}
	if st.Wait != nil {
		check("wait", true, st.Wait.Nodes)
		switch {
		case st.Wait.State != "" && st.Wait.Event != "":
			v.at(p+".wait", "wait for a state or for an event, not both")
		case st.Wait.Event != "" && st.Wait.AllowFailed:
			v.at(p+".wait.allow_failed", "goes with a wait for a state")
		case st.Wait.Event != "":
		case !provision[st.Wait.State]:
			v.at(p+".wait.state", "unknown provision state %q (one of %s)", st.Wait.State, keys(provision))
		}
		st.Wait.timeout = 5 * time.Minute
		if st.Wait.Timeout != "" {
			d, err := ParseDuration(st.Wait.Timeout)
			if err != nil || d <= 0 {
				v.at(p+".wait.timeout", "want a positive duration like 60s, got %q", st.Wait.Timeout)
			}
			st.Wait.timeout = d
		}
	}
	if c := st.Clean; c != nil {
		check("clean", true, c.Nodes)
		if len(c.Steps) == 0 {
			v.at(p+".clean.steps", "a manual clean needs at least one step")
		}
		for j, cs := range c.Steps {
			if cs.Step == "" || cs.Interface == "" {
				v.at(fmt.Sprintf("%s.clean.steps[%d]", p, j), "a clean step needs interface and step (e.g. {interface: deploy, step: erase_devices})")
			}
		}
	}
	if st.Abort != nil {
		check("abort", true, st.Abort.Nodes)
	}
	if st.Rescue != nil {
		check("rescue", true, st.Rescue.Nodes)
		if strings.TrimSpace(st.Rescue.Password) == "" {
			v.at(p+".rescue.password", "the rescue user needs a non-empty password (Ironic refuses an empty one)")
		}
	}
	check("unrescue", st.Unrescue != nil, targetNodes(st.Unrescue))
	if st.Power != nil {
		check("power", true, st.Power.Nodes)
		switch st.Power.Target {
		case "power on", "power off", "rebooting", "soft power off":
		default:
			v.at(p+".power.target", `must be "power on", "power off", "rebooting" or "soft power off", got %q`, st.Power.Target)
		}
	}
	if vm := st.VirtualMedia; vm != nil {
		check("virtual_media", true, vm.Nodes)
		v.redfishOnly(p+".virtual_media", vm.Nodes, l)
		sources := 0
		for _, set := range []bool{vm.Image != "", vm.MissingImage, vm.AgentISO} {
			if set {
				sources++
			}
		}
		switch {
		case sources > 1:
			v.at(p+".virtual_media", "set one of image, missing_image and agent_iso")
		case sources == 0:
			v.at(p+".virtual_media", "needs image (a lab image), missing_image: true or agent_iso: true")
		case vm.AgentISO && vm.ExpectFailure:
			v.at(p+".virtual_media.expect_failure", "an agent_iso insert is expected to work; use image or missing_image with expect_failure")
		case vm.Image != "" && !hasImage(l, vm.Image):
			v.at(p+".virtual_media.image", "no image %q in lab.images", vm.Image)
		}
	}
	if fu := st.FirmwareUpdate; fu != nil {
		check("firmware_update", true, fu.Nodes)
		v.redfishOnly(p+".firmware_update", fu.Nodes, l)
		if !firmwareVersion.MatchString(fu.Version) {
			v.at(p+".firmware_update.version", "want a version like 2.1.0, got %q", fu.Version)
		}
		switch fu.Target {
		case "":
			fu.Target = "bios"
		case "bios", "bmc":
		default:
			v.at(p+".firmware_update.target", "must be bios or bmc, got %q", fu.Target)
		}
	}
	if f := st.Fault; f != nil {
		check("fault", true, f.Nodes)
		v.fault(p+".fault", f, l)
	}
	if e := st.Expect; e != nil {
		check("expect", true, e.Nodes)
		v.expect(p+".expect", e, l)
	}
	if st.Sleep != "" {
		set = append(set, "sleep")
		d, err := ParseDuration(st.Sleep)
		if err != nil || d < 0 {
			v.at(p+".sleep", "want a duration like 2s, got %q", st.Sleep)
		}
		st.sleep = d
	}
	switch st.Only {
	case "", "builtin", "ironic":
	default:
		v.at(p+".only", "must be builtin or ironic, got %q", st.Only)
	}
	if len(set) != 1 {
		v.at(p, "a step needs exactly one of enroll, manage, provide, deploy, undeploy, clean, abort, rescue, unrescue, power, fault, wait, expect, sleep, virtual_media, firmware_update; got %d (%s)", len(set), strings.Join(set, ", "))
	}
	if yp, err := yaml.PathString(p); err == nil {
		if n, err := yp.FilterNode(v.body); err == nil && n.GetToken() != nil && n.GetToken().Position != nil {
			st.line = n.GetToken().Position.Line
		}
	}
}

func (v *validator) fault(p string, f *Fault, l *Lab) {
	if f.After != "" {
		d, err := ParseDuration(f.After)
		if err != nil || d < 0 {
			v.at(p+".after", "want a duration like 5s, got %q", f.After)
		}
		f.after = d
	}
	if f.AfterEvents < 0 {
		v.at(p+".after_events", "must not be negative, got %d", f.AfterEvents)
	}
	if f.Agent == nil && f.Machine == nil && f.BMC == nil && f.Redfish == nil && f.Image == nil && f.Conductor == nil {
		v.at(p, "injects nothing: set agent, machine, bmc, redfish, image or conductor")
	}
	if f.Redfish != nil {
		v.redfishOnly(p+".redfish", f.Nodes, l)
		if err := f.Redfish.Validate(); err != nil {
			v.at(p+".redfish", "%v", err)
		}
	}
	if f.Agent != nil {
		if err := f.Agent.Validate(); err != nil {
			v.at(p+".agent", "%v", err)
		}
	}
	if f.UntilReboot && f.Agent == nil {
		v.at(p+".until_reboot", "goes with agent")
	}
	if f.BMC != nil {
		for _, g := range l.Groups {
			if !selected(f.Nodes, g) {
				continue
			}
			if g.BMC != string(lab.BMCIPMI) {
				v.at(p+".bmc", "group %s (%s) has no BMC: its power is not IPMI", g.Name, g.Driver)
			}
		}
	}
	for _, g := range l.Groups {
		if !selected(f.Nodes, g) {
			continue
		}
		if field, why := faultOnBackend(f, l.Backend, g); why != "" {
			v.at(p+"."+field, "group %s: %s", g.Name, why)
		}
	}
	if f.Image != nil && !hasImage(l, f.Image.ID) {
		v.at(p+".image.id", "no image %q in lab.images", f.Image.ID)
	}
	if c := f.Conductor; c != nil {
		v.conductorFault(p+".conductor", c, l)
	}
}

// conductorLab checks lab.conductors, lab.store and lab.conductor_timeout,
// and names the conductors c1..cN when they share a PostgreSQL.
func (v *validator) conductorLab(l *Lab) {
	v.conductors = map[string]bool{}
	switch {
	case l.Conductors < 0 || l.Conductors > 16:
		v.at("$.lab.conductors", "must be 1 to 16 (0 means 1), got %d", l.Conductors)
	case l.Conductors == 0:
		l.Conductors = 1
	}
	switch l.Store {
	case "":
		l.Store = "sqlite"
		if l.Conductors > 1 {
			l.Store = "postgres"
		}
	case "postgres":
	case "sqlite":
		if l.Conductors > 1 {
			v.at("$.lab.store", "%d conductors share one database: want postgres (SQLite is one conductor's file), got sqlite", l.Conductors)
		}
	default:
		v.at("$.lab.store", "must be sqlite or postgres, got %q", l.Store)
	}
	if l.Store == "postgres" {
		for i := 1; i <= l.Conductors; i++ {
			v.conductors[fmt.Sprintf("c%d", i)] = true
		}
	}
	l.conductorTimeout = 3 * time.Second
	if l.ConductorTimeout != "" {
		d, err := ParseDuration(l.ConductorTimeout)
		if err != nil || d < 500*time.Millisecond {
			v.at("$.lab.conductor_timeout", "want a duration of at least 0.5s like 3s, got %q", l.ConductorTimeout)
		}
		l.conductorTimeout = d
	}
	if l.ConductorTimeout != "" && l.Store != "postgres" {
		v.at("$.lab.conductor_timeout", "goes with store: postgres (conductors that heartbeat in a shared database)")
	}
}

var conductorName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)

// conductorFault checks a conductor fault at path p: the conductor it
// names exists (or, to join, does not yet), and kill, pause and restart go
// together as they can.
func (v *validator) conductorFault(p string, c *ConductorFault, l *Lab) {
	named := l.Store == "postgres"
	switch {
	case c.Name == "" && named:
		v.at(p+".name", "which conductor? the lab has %s", conductorList(v.conductors))
	case c.Name != "" && !named:
		v.at(p+".name", "conductor names go with lab.store: postgres (lab.conductors: N names them c1..cN)")
	case c.Join && !conductorName.MatchString(c.Name):
		v.at(p+".name", "a new conductor needs a name of lower-case letters, digits or dashes, got %q", c.Name)
	case c.Join && v.conductors[c.Name]:
		v.at(p+".name", "conductor %q is in the lab already; join starts a new one", c.Name)
	case c.Join:
		v.conductors[c.Name] = true
	case named && !v.conductors[c.Name]:
		v.at(p+".name", "no conductor %q in the lab (it has %s; a fault with join: true adds one)", c.Name, conductorList(v.conductors))
	}
	if c.Join && (c.Pause != "" || c.RestartAfter != "") {
		v.at(p+".join", "a joining conductor starts; pause and restart_after are for one that runs")
	}
	if c.Pause != "" {
		d, err := ParseDuration(c.Pause)
		if err != nil || d <= 0 {
			v.at(p+".pause", "want a positive duration like 10s, got %q", c.Pause)
		}
		c.pause = d
		if c.RestartAfter != "" {
			v.at(p+".restart_after", "a paused conductor goes on after the pause (SIGCONT); restart_after is for a killed one")
		}
	}
	if !named {
		c.restartAfter, c.restart = time.Second, true
	}
	if c.RestartAfter != "" {
		d, err := ParseDuration(c.RestartAfter)
		if err != nil || d < 0 {
			v.at(p+".restart_after", "want a duration like 1s, got %q", c.RestartAfter)
		}
		c.restartAfter, c.restart = d, true
	}
	if c.KillAt != "" && !provision[c.KillAt] && !strings.Contains(c.KillAt, ".") && !strings.Contains(c.KillAt, " ") {
		v.at(p+".kill_at", "want a provision state (%s) or an event name such as deploy.execute_deploy_step, got %q", keys(provision), c.KillAt)
	}
}

func conductorList(m map[string]bool) string {
	if len(m) == 0 {
		return "no named conductors"
	}
	return keys(m)
}

// redfishOnly checks a selector picks only groups with a Redfish BMC.
func (v *validator) redfishOnly(p string, sel []string, l *Lab) {
	for _, g := range l.Groups {
		if selected(sel, g) && g.BMC != string(lab.BMCRedfish) {
			v.at(p, "group %s (%s) has no Redfish BMC", g.Name, g.Driver)
		}
	}
}

// firmwareVersion is what a lab firmware image may carry.
var firmwareVersion = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)

// selected says whether a selector picks (some of) a group.
func selected(sel []string, g Group) bool {
	if len(sel) == 0 {
		return true
	}
	for _, s := range sel {
		if s == g.Name || strings.HasPrefix(s, g.Name+"-") {
			return true
		}
	}
	return false
}

func targetNodes(t *Target) []string {
	if t == nil {
		return nil
	}
	return t.Nodes
}

func hasImage(l *Lab, id string) bool {
	for _, im := range l.Images {
		if im.ID == id {
			return true
		}
	}
	return false
}

// nodes checks a selector names groups or nodes of the lab (node names are
// <group>-<index>).
func (v *validator) nodes(p string, sel []string, l *Lab) {
	for i, n := range sel {
		if !selectorKnown(n, l) {
			v.at(fmt.Sprintf("%s[%d]", p, i), "no group or node %q in the lab", n)
		}
	}
}

func selectorKnown(n string, l *Lab) bool {
	for _, g := range l.Groups {
		if n == g.Name {
			return true
		}
		if idx, ok := strings.CutPrefix(n, g.Name+"-"); ok {
			if i, err := strconv.Atoi(idx); err == nil && i >= 0 && i < g.Count {
				return true
			}
		}
	}
	return false
}

func keys(m map[string]bool) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slicesSort(ks)
	return strings.Join(ks, ", ")
}

// ParseDuration takes Go durations ("90s", "1m30s") or plain seconds ("90", "0.5").
func ParseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Duration(f * float64(time.Second)), nil
	}
	return time.ParseDuration(s)
}

// ParseSize takes bytes ("1048576") or a size with a binary unit ("64MiB",
// "1GiB", "512KiB"; "M" and "G" mean the same).
func ParseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}}
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

func slicesSort(s []string) { sort.Strings(s) }

func orNone(s string) string {
	if s == "" {
		return "none named"
	}
	return s
}
