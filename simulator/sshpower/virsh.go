package sshpower

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/ironlab/ironlab/simulator"
)

// Run interprets one command line as the host's shell would run it: env
// assignments, virsh with its options and subcommand, then a pipeline of
// the filters SSHPower used (awk, tr -d, head, tail, grep). env holds
// variables the client set on the session. It returns stdout, stderr and
// the exit status.
func (s *Server) Run(ctx context.Context, line string, env map[string]string) (string, string, int) {
	segs, err := splitPipeline(line)
	if err != nil {
		return "", "sh: " + err.Error() + "\n", 2
	}
	if len(segs) == 0 || len(segs[0]) == 0 {
		return "", "", 0
	}
	vars := map[string]string{}
	for k, v := range env {
		vars[k] = v
	}
	words := segs[0]
	for len(words) > 0 && isAssignment(words[0]) {
		k, v, _ := strings.Cut(words[0], "=")
		vars[k] = v
		words = words[1:]
	}
	if len(words) == 0 {
		return "", "", 0
	}
	if path.Base(words[0]) != "virsh" {
		return "", fmt.Sprintf("sh: 1: %s: not found\n", words[0]), 127
	}
	out, errOut, status := s.virsh(ctx, words[1:], vars)
	for _, f := range segs[1:] {
		if status != 0 {
			break
		}
		out, errOut, status = filter(f, out)
	}
	return out, errOut, status
}

func isAssignment(w string) bool {
	k, _, ok := strings.Cut(w, "=")
	return ok && k != "" && !strings.ContainsAny(k, "/-.")
}

// splitPipeline splits a command line into pipeline segments of unquoted
// words, following sh's quoting: '...' literal, "..." with \" \\ \$ \`
// escapes, and \x outside quotes.
func splitPipeline(line string) ([][]string, error) {
	var segs [][]string
	var words []string
	var cur strings.Builder
	inWord := false
	flush := func() {
		if inWord {
			words = append(words, cur.String())
			cur.Reset()
			inWord = false
		}
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated quoted string")
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) && strings.IndexByte("\"\\$`", line[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, fmt.Errorf("unterminated quoted string")
			}
			inWord = true
		case c == '\\':
			if i+1 < len(line) {
				i++
				cur.WriteByte(line[i])
			}
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			flush()
		case c == '|':
			flush()
			segs = append(segs, words)
			words = nil
		case c == ';' || c == '&' || c == '>' || c == '<' || c == '`' || c == '$' && i+1 < len(line) && line[i+1] == '(':
			return nil, fmt.Errorf("%q is not supported by this host's shell", string(c))
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	flush()
	segs = append(segs, words)
	for _, s := range segs {
		if len(s) == 0 {
			return nil, fmt.Errorf("syntax error: empty pipeline segment")
		}
	}
	return segs, nil
}

func (s *Server) machine(nameOrUUID string) (simulator.Machine, bool) {
	for _, m := range s.cfg.Machines() {
		if m.Name() == nameOrUUID || strings.EqualFold(m.UUID(), nameOrUUID) {
			return m, true
		}
	}
	return nil, false
}

// virsh runs a virsh invocation (args after the program name).
func (s *Server) virsh(ctx context.Context, args []string, vars map[string]string) (string, string, int) {
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch a := args[0]; {
		case a == "-c" || a == "--connect":
			if len(args) < 2 {
				return "", "error: option '--connect' requires an argument\n", 1
			}
			args = args[2:]
		case strings.HasPrefix(a, "--connect="):
			args = args[1:]
		case a == "-q" || a == "--quiet":
			args = args[1:]
		default:
			return "", fmt.Sprintf("error: unsupported option '%s'\n", a), 1
		}
	}
	if len(args) == 0 {
		return "", "error: this host's virsh has no interactive mode; give a command\n", 1
	}
	cmd, args := args[0], args[1:]
	if cmd == "list" {
		return s.list(ctx, args)
	}
	domainCmds := map[string]bool{"start": true, "destroy": true, "reset": true, "shutdown": true, "reboot": true,
		"domstate": true, "dumpxml": true, "edit": true, "domname": true, "domuuid": true}
	if !domainCmds[cmd] {
		return "", fmt.Sprintf("error: unknown command: '%s'\n", cmd), 1
	}
	var dom string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			continue // --graceful, --inactive, ...: accepted and ignored
		}
		if dom != "" {
			return "", fmt.Sprintf("error: unexpected data '%s'\n", a), 1
		}
		dom = a
	}
	if dom == "" {
		return "", "error: command '" + cmd + "' requires <domain> option\n", 1
	}
	m, ok := s.machine(dom)
	if !ok {
		return "", fmt.Sprintf("error: failed to get domain '%s'\n", dom), 1
	}
	name := m.Name()
	st, err := m.Power(ctx)
	if err != nil {
		return "", fmt.Sprintf("error: failed to get the state of domain '%s': %v\n", name, err), 1
	}
	running := st == simulator.PowerOn
	notValid := func(verb, why string) (string, string, int) {
		return "", fmt.Sprintf("error: Failed to %s domain '%s'\nerror: Requested operation is not valid: %s\n", verb, name, why), 1
	}
	act := func(a simulator.PowerAction, done string) (string, string, int) {
		if err := m.SetPower(ctx, a); err != nil {
			return "", fmt.Sprintf("error: domain '%s': %v\n", name, err), 1
		}
		return fmt.Sprintf("Domain '%s' %s\n\n", name, done), "", 0
	}
	switch cmd {
	case "domname":
		return name + "\n\n", "", 0
	case "domuuid":
		return m.UUID() + "\n\n", "", 0
	case "domstate":
		if running {
			return "running\n\n", "", 0
		}
		return "shut off\n\n", "", 0
	case "start":
		if running {
			return notValid("start", "domain is already active")
		}
		return act(simulator.ActionOn, "started")
	case "destroy":
		if !running {
			return notValid("destroy", "domain is not running")
		}
		return act(simulator.ActionOff, "destroyed")
	case "shutdown":
		if !running {
			return notValid("shutdown", "domain is not running")
		}
		return act(simulator.ActionSoftOff, "is being shutdown")
	case "reset":
		if !running {
			return notValid("reset", "domain is not running")
		}
		return act(simulator.ActionReset, "was reset")
	case "reboot":
		if !running {
			return notValid("reboot", "domain is not running")
		}
		return act(simulator.ActionReset, "is being rebooted")
	case "dumpxml":
		return s.domainXML(ctx, m), "", 0
	case "edit":
		return s.edit(ctx, m, vars)
	}
	return "", fmt.Sprintf("error: unknown command: '%s'\n", cmd), 1
}

func (s *Server) list(ctx context.Context, args []string) (string, string, int) {
	all, names := false, false
	for _, a := range args {
		switch a {
		case "--all":
			all = true
		case "--name":
			names = true
		case "--state-running":
		default:
			return "", fmt.Sprintf("error: command 'list' doesn't support option %s\n", a), 1
		}
	}
	var b strings.Builder
	if !names {
		b.WriteString(" Id   Name           State\n-----------------------------------\n")
	}
	id := 0
	for _, m := range s.cfg.Machines() {
		st, _ := m.Power(ctx)
		on := st == simulator.PowerOn
		if on {
			id++
		}
		if !on && !all {
			continue
		}
		switch {
		case names:
			b.WriteString(m.Name() + "\n")
		case on:
			fmt.Fprintf(&b, " %-4d %-14s running\n", id, m.Name())
		default:
			fmt.Fprintf(&b, " %-4s %-14s shut off\n", "-", m.Name())
		}
	}
	b.WriteString("\n")
	return b.String(), "", 0
}

// domainXML is the subset of libvirt's domain XML that SSHPower's pipelines read.
func (s *Server) domainXML(ctx context.Context, m simulator.Machine) string {
	hw := m.Hardware()
	bc, _ := m.BootConfig(ctx)
	dev := "hd"
	if bc.Device == simulator.BootNetwork {
		dev = "network"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<domain type='kvm'>\n  <name>%s</name>\n  <uuid>%s</uuid>\n", m.Name(), m.UUID())
	fmt.Fprintf(&b, "  <memory unit='KiB'>%d</memory>\n  <vcpu placement='static'>%d</vcpu>\n", hw.MemoryMB*1024, hw.CPUs)
	b.WriteString("  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n")
	if bc.UEFI {
		b.WriteString("    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>\n")
	}
	fmt.Fprintf(&b, "    <boot dev='%s'/>\n  </os>\n  <devices>\n", dev)
	for _, d := range hw.Disks {
		fmt.Fprintf(&b, "    <disk type='file' device='disk'>\n      <source file='%s'/>\n      <target dev='%s' bus='virtio'/>\n    </disk>\n", d.Path, d.Name)
	}
	for _, n := range hw.NICs {
		fmt.Fprintf(&b, "    <interface type='user'>\n      <mac address='%s'/>\n      <model type='virtio'/>\n    </interface>\n", n.MAC)
	}
	b.WriteString("  </devices>\n</domain>\n\n")
	return b.String()
}

var bootDevRe = regexp.MustCompile(`<boot dev=\\?["']?([a-z]+)`)

// edit is `virsh edit` with SSHPower's EDITOR: a sed script that replaces
// the <boot dev=.../> lines of the domain's <os> with one device. The
// device is persistent, as a domain XML edit is.
func (s *Server) edit(ctx context.Context, m simulator.Machine, vars map[string]string) (string, string, int) {
	ed := vars["EDITOR"]
	if ed == "" {
		ed = vars["VISUAL"]
	}
	if ed == "" {
		return "", "error: this host has no interactive editor: set EDITOR to a sed script\n", 1
	}
	mm := bootDevRe.FindStringSubmatch(ed)
	if mm == nil || !strings.HasPrefix(strings.TrimSpace(ed), "sed") {
		return "", fmt.Sprintf("error: this host's editor only runs SSHPower's sed boot-device script, not %q\n", ed), 1
	}
	var dev simulator.BootDevice
	switch mm[1] {
	case "hd":
		dev = simulator.BootDisk
	case "network":
		dev = simulator.BootNetwork
	default:
		return "", fmt.Sprintf("error: XML error: boot device '%s' is not available on this host (hd, network)\n", mm[1]), 1
	}
	cur, err := m.BootConfig(ctx)
	if err != nil {
		return "", fmt.Sprintf("error: domain '%s': %v\n", m.Name(), err), 1
	}
	if err := m.SetBootConfig(ctx, simulator.BootConfig{Device: dev, Persistent: true, UEFI: cur.UEFI}); err != nil {
		return "", fmt.Sprintf("error: domain '%s': %v\n", m.Name(), err), 1
	}
	return fmt.Sprintf("Domain '%s' XML configuration edited.\n\n", m.Name()), "", 0
}

var (
	macAttrRe  = regexp.MustCompile(`mac address=['"]([^'"]+)['"]`)
	bootAttrRe = regexp.MustCompile(`boot dev=['"]([^'"]+)['"]`)
)

// filter runs one pipeline stage over in.
func filter(words []string, in string) (string, string, int) {
	lines := strings.Split(strings.TrimSuffix(in, "\n"), "\n")
	if in == "" {
		lines = nil
	}
	join := func(ls []string) string {
		if len(ls) == 0 {
			return ""
		}
		return strings.Join(ls, "\n") + "\n"
	}
	switch words[0] {
	case "awk":
		prog := strings.Join(words[1:], " ")
		var re *regexp.Regexp
		switch {
		case strings.Contains(prog, "mac address"):
			re = macAttrRe
		case strings.Contains(prog, "boot dev="):
			re = bootAttrRe
		default:
			return "", "awk: this host only runs SSHPower's MAC and boot device programs\n", 2
		}
		var out []string
		for _, m := range re.FindAllStringSubmatch(in, -1) {
			out = append(out, m[1])
		}
		return join(out), "", 0
	case "tr":
		if len(words) != 3 || words[1] != "-d" {
			return "", "tr: only 'tr -d SET' is supported\n", 1
		}
		return strings.NewReplacer(deleteSet(words[2])...).Replace(in), "", 0
	case "head", "tail":
		n, from := 10, false
		args := words[1:]
		if len(args) == 2 && args[0] == "-n" {
			args = args[1:]
		}
		if len(args) == 1 {
			a := strings.TrimPrefix(args[0], "-")
			if words[0] == "tail" && strings.HasPrefix(a, "+") {
				from, a = true, a[1:]
			}
			v, err := strconv.Atoi(a)
			if err != nil || v < 0 {
				return "", fmt.Sprintf("%s: invalid number of lines: '%s'\n", words[0], args[0]), 1
			}
			n = v
		} else if len(args) > 1 {
			return "", words[0] + ": too many arguments\n", 1
		}
		switch {
		case words[0] == "head":
			return join(lines[:min(n, len(lines))]), "", 0
		case from:
			return join(lines[min(max(n-1, 0), len(lines)):]), "", 0
		default:
			return join(lines[max(len(lines)-n, 0):]), "", 0
		}
	case "grep":
		invert := false
		args := words[1:]
		if len(args) > 0 && args[0] == "-v" {
			invert, args = true, args[1:]
		}
		if len(args) != 1 {
			return "", "grep: only 'grep [-v] WORD' is supported\n", 2
		}
		var out []string
		for _, l := range lines {
			if strings.Contains(l, args[0]) != invert {
				out = append(out, l)
			}
		}
		if len(out) == 0 {
			return "", "", 1
		}
		return join(out), "", 0
	}
	return "", fmt.Sprintf("sh: 1: %s: not found\n", words[0]), 127
}

func deleteSet(set string) []string {
	var r []string
	for _, c := range set {
		r = append(r, string(c), "")
	}
	return r
}
