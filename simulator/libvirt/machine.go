package libvirtvm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bootfiles"
)

// Machine is one libvirt domain as a simulator.Machine. Power actions map to
// libvirt calls; boot device changes rewrite the domain XML and take effect at
// the next start, like virtualbmc. A reset or power cycle restarts the QEMU
// process so that a changed boot device is honoured, as on real hardware.
type Machine struct {
	c       *Conn
	dom     libvirt.Domain
	name    string
	uuid    string
	hw      simulator.Hardware
	console string
	log     *slog.Logger

	// managed is set for domains a Fleet defined: their network boot reads
	// the per-MAC entry in bootDir; foreign domains just get <boot dev>.
	managed  bool
	bootDir  string
	pxe      PXEMode
	mac      string
	hostPort int
	// cdPath is where an inserted CD image is kept (managed domains).
	cdPath string

	// cd is the ISO in the CD drive ("" empty); guarded by mu.
	cd string

	mu         sync.Mutex
	persistent simulator.BootConfig
	oneTime    *simulator.BootConfig

	// bootMark is the console log's size when the domain last started: what
	// follows it is this boot's output (the log is appended to across starts).
	bootMark atomic.Int64
}

var _ simulator.Machine = (*Machine)(nil)

func (m *Machine) Name() string                 { return m.name }
func (m *Machine) UUID() string                 { return m.uuid }
func (m *Machine) Hardware() simulator.Hardware { return m.hw }
func (m *Machine) DomainName() string           { return m.dom.Name }
func (m *Machine) ConsolePath() string          { return m.console }
func (m *Machine) String() string               { return m.dom.Name }
func (m *Machine) domainErr(what string) string { return what + " domain " + m.dom.Name }
func (m *Machine) inactiveXMLFlags() libvirt.DomainXMLFlags {
	// Secure: keep secrets (e.g. VNC passwords) through the rewrite, as
	// virtualbmc does; Inactive: edit what the next start uses.
	return libvirt.DomainXMLSecure | libvirt.DomainXMLInactive
}

// AgentPort is the host port (on 127.0.0.1) forwarded to the guest agent's
// port 9999; 0 for foreign domains.
func (m *Machine) AgentPort() int { return m.hostPort }

// AgentURL is where the host reaches the guest's agent, and what the agent
// advertises (IPA's advertise host/port): http://127.0.0.1:<port>.
func (m *Machine) AgentURL() string {
	if m.hostPort == 0 {
		return ""
	}
	return fmt.Sprintf("http://127.0.0.1:%d", m.hostPort)
}

// DiskPath is the host file backing the machine's disk ("" if unknown).
func (m *Machine) DiskPath() string {
	if len(m.hw.Disks) == 0 {
		return ""
	}
	return m.hw.Disks[0].Path
}

// Power reads the domain's state: running, blocked, paused or suspended
// count as on (a paused guest is a hung machine, still powered).
func (m *Machine) Power(ctx context.Context) (simulator.PowerState, error) {
	st, err := m.state(ctx)
	if err != nil {
		return "", err
	}
	return powerOf(st), nil
}

func powerOf(st libvirt.DomainState) simulator.PowerState {
	switch st {
	case libvirt.DomainShutoff, libvirt.DomainCrashed, libvirt.DomainNostate:
		return simulator.PowerOff
	}
	return simulator.PowerOn
}

func (m *Machine) state(ctx context.Context) (libvirt.DomainState, error) {
	st, err := callT(ctx, m.c, m.domainErr("get state of"), func() (int32, error) {
		s, _, err := m.c.lv.DomainGetState(m.dom, 0)
		return s, err
	})
	return libvirt.DomainState(st), err
}

// SetPower performs a power action. Reset and cycle restart the domain (and
// start it when it is off); soft off sends an ACPI power button press.
func (m *Machine) SetPower(ctx context.Context, a simulator.PowerAction) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, err := m.Power(ctx)
	if err != nil {
		return err
	}
	switch a {
	case simulator.ActionOn:
		if p == simulator.PowerOn {
			return nil
		}
		return m.start(ctx)
	case simulator.ActionOff:
		return m.destroy(ctx)
	case simulator.ActionSoftOff:
		if p == simulator.PowerOff {
			return nil
		}
		return call(ctx, m.c, m.domainErr("ACPI shutdown"), func() error {
			return m.c.lv.DomainShutdownFlags(m.dom, libvirt.DomainShutdownAcpiPowerBtn)
		})
	case simulator.ActionReset, simulator.ActionCycle:
		if err := m.destroy(ctx); err != nil {
			return err
		}
		return m.start(ctx)
	case simulator.ActionNMI:
		return call(ctx, m.c, m.domainErr("inject NMI into"), func() error { return m.c.lv.DomainInjectNmi(m.dom, 0) })
	}
	return fmt.Errorf("power action %q on %s: unknown action", a, m.dom.Name)
}

// destroy is a hard power off; off already is fine.
func (m *Machine) destroy(ctx context.Context) error {
	err := call(ctx, m.c, m.domainErr("destroy"), func() error { return m.c.lv.DomainDestroy(m.dom) })
	if err != nil && isInvalidOp(err) {
		return nil
	}
	return err
}

// start applies the effective boot selection and starts the domain; after a
// one-time selection the definition goes back to the persistent one, which
// the next start uses.
func (m *Machine) start(ctx context.Context) error {
	cfg, oneTime := m.persistent, false
	if m.oneTime != nil {
		cfg, oneTime = *m.oneTime, true
	}
	t0 := time.Now()
	if err := m.rewrite(ctx, cfg, true); err != nil {
		return err
	}
	t1 := time.Now()
	if m.console != "" {
		if st, err := os.Stat(m.console); err == nil {
			m.bootMark.Store(st.Size())
		} else {
			m.bootMark.Store(0)
		}
	}
	if err := call(ctx, m.c, m.domainErr("start"), func() error { return m.c.lv.DomainCreate(m.dom) }); err != nil {
		return err
	}
	t2 := time.Now()
	m.log.Info("domain started", "boot", cfg.Device, "one_time", oneTime, "define", t1.Sub(t0).Round(time.Millisecond), "create", t2.Sub(t1).Round(time.Millisecond))
	if oneTime {
		m.oneTime = nil
		if err := m.rewrite(ctx, m.persistent, false); err != nil {
			return fmt.Errorf("restore persistent boot device after one-time boot: %w", err)
		}
	}
	return nil
}

// BootConfig is what the machine boots next.
func (m *Machine) BootConfig(ctx context.Context) (simulator.BootConfig, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.oneTime != nil {
		return *m.oneTime, nil
	}
	return m.persistent, nil
}

// SetBootConfig selects the next boot device: persistent replaces the
// default, one-time applies to the next start only. The domain definition is
// rewritten now (a running domain keeps running what it booted).
func (m *Machine) SetBootConfig(ctx context.Context, b simulator.BootConfig) error {
	switch {
	case b.Device == simulator.BootNetwork, b.Device == simulator.BootDisk:
	case b.Device == simulator.BootCD && m.managed:
		// The CD drive's content, or an empty drive that boots nothing.
	default:
		return fmt.Errorf("set boot device of %s: unknown device %q", m.dom.Name, b.Device)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if b.UEFI {
		// The domains boot SeaBIOS; the flag is kept so it reads back.
		m.log.Warn("UEFI boot requested; libvirt machines boot BIOS")
	}
	if b.Persistent {
		m.persistent, m.oneTime = b, nil
	} else {
		m.oneTime = &b
	}
	return m.rewrite(ctx, b, false)
}

// rewrite reads the domain definition, replaces its boot selection with cfg
// and defines it again. booting says the domain starts right after.
func (m *Machine) rewrite(ctx context.Context, cfg simulator.BootConfig, booting bool) error {
	sel := m.selection(cfg, booting)
	raw, err := callT(ctx, m.c, m.domainErr("read XML of"), func() (string, error) {
		return m.c.lv.DomainGetXMLDesc(m.dom, m.inactiveXMLFlags())
	})
	if err != nil {
		return err
	}
	var d libvirtxml.Domain
	if err := d.Unmarshal(raw); err != nil {
		return fmt.Errorf("parse XML of domain %s: %w", m.dom.Name, err)
	}
	applyBoot(&d, sel)
	out, err := d.Marshal()
	if err != nil {
		return fmt.Errorf("render XML of domain %s: %w", m.dom.Name, err)
	}
	_, err = callT(ctx, m.c, m.domainErr("redefine"), func() (libvirt.Domain, error) { return m.c.lv.DomainDefineXML(out) })
	return err
}

// selection turns a boot config into domain XML terms. A managed domain's
// network boot reads the per-MAC entry now, so the latest entry boots.
func (m *Machine) selection(cfg simulator.BootConfig, booting bool) bootSelection {
	dev := "hd"
	switch cfg.Device {
	case simulator.BootNetwork:
		dev = "network"
	case simulator.BootCD:
		dev = "cdrom"
	}
	if !m.managed {
		return bootSelection{device: dev}
	}
	nic := &userNIC{MAC: m.mac, HostPort: m.hostPort}
	sel := bootSelection{device: dev, managed: true, nic: nic, cd: m.cd}
	if dev != "network" {
		return sel
	}
	e, err := bootfiles.Read(m.bootDir, m.mac)
	if m.pxe == PXEIPXE {
		script, _ := bootfiles.ScriptName(m.mac)
		if err == nil {
			// Serve the entry with this network's facts added, as the
			// direct boot below does, under a name of this machine's own.
			e.Cmdline = m.networkCmdline(e.Cmdline)
			if d, derr := bootfiles.Dashed(m.mac); derr == nil {
				if werr := bootfiles.WriteScript(m.bootDir, d+".vm.ipxe", e); werr == nil {
					script = d + ".vm.ipxe"
				} else {
					m.log.Warn("iPXE script with the network's facts", "err", werr)
				}
			}
		}
		nic.TFTPRoot, nic.Bootfile = m.bootDir, script
		return sel
	}
	if err != nil {
		// Like a PXE boot with nothing served: the machine powers on and
		// finds nothing to boot. (Before a start, the entry may come later.)
		if booting {
			m.log.Warn("network boot without a boot entry", "mac", m.mac, "err", err)
		}
		return sel
	}
	sel.kernel = elfKernel(filepath.Join(m.bootDir, filepath.FromSlash(e.Kernel)))
	if e.Initrd != "" {
		sel.initrd = filepath.Join(m.bootDir, filepath.FromSlash(e.Initrd))
	}
	sel.cmdline = m.networkCmdline(e.Cmdline)
	return sel
}

// networkCmdline is a per-MAC entry's kernel command line as this machine's
// network serves it. Whoever wrote the entry (the lab for the agent, the
// PXE driver's conductor for its deploy ramdisk) names things as the host
// sees them and cannot know how the guest is wired; on a real site DHCP and
// the boot server supply those facts. This network is QEMU's user-mode
// stack with one host port forwarded to the guest's port 9999, so:
//
//   - ipa-api-url on the host's loopback (http://127.0.0.1:6385, how the
//     conductor knows itself) becomes the guest's view of it, 10.0.2.2;
//   - without ipa-advertise-host, the forward is appended
//     (ipa-advertise-host=127.0.0.1 ipa-advertise-port=<host port>): where
//     the host, and so the conductor, reaches what the guest serves.
//
// Doing it here, rather than giving the driver a second "URL ramdisks use
// to reach me" setting, keeps the conductor's configuration its own view,
// lets an unchanged driver (or a real Ironic configured with a loopback
// api_url) boot VMs, and puts the one piece only the network knows (the
// forwarded port) next to where the forward is made. The agent entries the
// lab writes carry both already and pass unchanged.
func (m *Machine) networkCmdline(cmdline string) string {
	words := strings.Fields(cmdline)
	advertised := false
	for i, w := range words {
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case "ipa-api-url", "ipa_api_url":
			words[i] = k + "=" + GuestURL(v)
		case "ipa-advertise-host", "ipa_advertise_host":
			advertised = true
		}
	}
	if !advertised && m.hostPort != 0 {
		words = append(words, "ipa-advertise-host=127.0.0.1", "ipa-advertise-port="+strconv.Itoa(m.hostPort))
	}
	return strings.Join(words, " ")
}

// elfKernel is the kernel a direct boot loads for an entry's kernel: the
// ELF vmlinux next to a bzImage named vmlinuz (the same kernel decompressed,
// as the agent ramdisk installs it: images/ramdisk.ELFKernelName) when there
// is one. QEMU boots the ELF via PVH, skipping SeaBIOS' kernel loader and
// the kernel's self-decompression: ~0.5 s of each boot under TCG. iPXE
// keeps the bzImage.
func elfKernel(kernel string) string {
	if filepath.Base(kernel) != "vmlinuz" {
		return kernel
	}
	elf := filepath.Join(filepath.Dir(kernel), "vmlinux")
	if _, err := os.Stat(elf); err != nil {
		return kernel
	}
	return elf
}

// ConsoleLog is everything the machine printed on its serial console, across
// starts (the log is appended to).
func (m *Machine) ConsoleLog() (string, error) {
	if m.console == "" {
		return "", nil
	}
	b, err := os.ReadFile(m.console)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	return string(b), err
}

// ConsoleSinceBoot is what the machine printed on its serial console since
// it last started (simulator.BootConsole): a check that the machine booted an
// image must not be fooled by an earlier boot's output.
func (m *Machine) ConsoleSinceBoot() (string, error) {
	log, err := m.ConsoleLog()
	if err != nil {
		return "", err
	}
	if mark := m.bootMark.Load(); mark > 0 && mark <= int64(len(log)) {
		return log[mark:], nil
	}
	return log, nil
}

var _ simulator.BootConsole = (*Machine)(nil)

// GuestURL rewrites a URL on the host's loopback (127.0.0.1, localhost,
// [::1]) to how a guest reaches it through QEMU's user-mode stack: 10.0.2.2.
func GuestURL(hostURL string) string {
	u, err := url.Parse(hostURL)
	if err != nil {
		return hostURL
	}
	switch u.Hostname() {
	case "127.0.0.1", "localhost", "::1":
		if p := u.Port(); p != "" {
			u.Host = net.JoinHostPort(GuestGateway, p)
		} else {
			u.Host = GuestGateway
		}
	}
	return u.String()
}

// GuestGateway is the host as a guest sees it (QEMU user-mode networking).
const GuestGateway = "10.0.2.2"

// AgentCmdline is the kernel command line that boots the agent ramdisk on
// this machine: the driver API (given as the host sees it) rewritten for the
// guest, and the forwarded port advertised as the agent's address, as IPA's
// ipa-advertise-host/port do. extra words are appended (e.g.
// "ironlab.dialect=legacy").
func (m *Machine) AgentCmdline(apiURL string, extra ...string) string {
	words := []string{"console=ttyS0", "quiet", "panic=-1",
		"ipa-api-url=" + GuestURL(apiURL),
		"ipa-advertise-host=127.0.0.1",
		"ipa-advertise-port=" + strconv.Itoa(m.hostPort),
	}
	if d, err := bootfiles.Dashed(m.mac); err == nil {
		words = append(words, "BOOTIF=01-"+d)
	}
	return strings.Join(append(words, extra...), " ")
}
