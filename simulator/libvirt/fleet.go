package libvirtvm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/ironlab/ironlab/simulator"
)

// DomainPrefix starts the name of every domain ironlab defines.
const DomainPrefix = "ironlab-"

// FleetConfig is a lab's libvirt settings.
type FleetConfig struct {
	Lab string // lab name, part of every domain name: ironlab-<lab>-<node>
	// StateDir holds the disk files and serial console logs. It must be
	// traversable by libvirt's qemu user, so it is made 0755.
	StateDir string
	// BootDir is the lab's boot folder (see simulator/bootfiles): network
	// boots read each MAC's entry there, and iPXE's TFTP is rooted there.
	BootDir    string
	Accel      Accel   // auto (default), kvm or tcg
	PXE        PXEMode // direct (default) or ipxe
	MemoryMiB  uint    // per guest; default 256
	TBCacheMiB uint    // TCG translation cache; default 32
	// ProbeKernel/ProbeInitrd (absolute paths), when set, are what the
	// auto-accel KVM probe boots (the agent ramdisk, which powers off at once
	// with ironlab.probe=1); otherwise the probe boots a test disk image.
	ProbeKernel, ProbeInitrd string
	Logger                   *slog.Logger
}

// NodeSpec is one node of the fleet.
type NodeSpec struct {
	Name      string // e.g. "node-0"; [A-Za-z0-9_.-]
	UUID      string
	MAC       string
	DiskBytes int64 // default 64 MiB
	// AgentPort is the host port on 127.0.0.1 forwarded to the guest's
	// agent; 0 picks a free one.
	AgentPort int
	MemoryMiB uint // overrides the fleet's
	// Boot is the initial persistent boot selection; zero means network.
	Boot simulator.BootConfig
}

// Fleet is a lab's set of libvirt domains.
type Fleet struct {
	c           *Conn
	cfg         FleetConfig
	log         *slog.Logger
	accel       Accel
	accelReason string

	mu       sync.Mutex
	machines []*Machine
	closed   bool
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// NewFleet prepares a lab's fleet: it removes stale ironlab domains of
// crashed runs, creates the state and boot folders and settles the
// accelerator (probing KVM for auto).
func NewFleet(ctx context.Context, c *Conn, cfg FleetConfig) (*Fleet, error) {
	if !nameRE.MatchString(cfg.Lab) {
		return nil, fmt.Errorf("lab name %q: use letters, digits, . _ -", cfg.Lab)
	}
	if cfg.StateDir == "" || cfg.BootDir == "" {
		return nil, errors.New("libvirt fleet: StateDir and BootDir are required")
	}
	if cfg.Accel == "" {
		cfg.Accel = AccelAuto
	}
	if cfg.PXE == "" {
		cfg.PXE = PXEDirect
	}
	if cfg.PXE != PXEDirect && cfg.PXE != PXEIPXE {
		return nil, fmt.Errorf("pxe mode %q: want direct or ipxe", cfg.PXE)
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 256
	}
	if cfg.TBCacheMiB == 0 {
		cfg.TBCacheMiB = 32
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var err error
	if cfg.StateDir, err = filepath.Abs(cfg.StateDir); err != nil {
		return nil, err
	}
	if cfg.BootDir, err = filepath.Abs(cfg.BootDir); err != nil {
		return nil, err
	}
	for _, d := range []string{cfg.StateDir, cfg.BootDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, err
		}
	}
	f := &Fleet{c: c, cfg: cfg, log: cfg.Logger.With("lab", cfg.Lab)}
	if removed, err := CleanStale(ctx, c, f.log); err != nil {
		return nil, err
	} else if len(removed) > 0 {
		f.log.Info("removed stale domains of a crashed run", "domains", removed)
	}
	f.accel, f.accelReason, err = resolveAccel(ctx, f)
	if err != nil {
		return nil, err
	}
	f.log.Info("accelerator", "accel", f.accel, "why", f.accelReason)
	return f, nil
}

// Accel is the accelerator the fleet's domains use (kvm or tcg) and why.
func (f *Fleet) Accel() (Accel, string) { return f.accel, f.accelReason }

// Config is the fleet's settings with defaults filled in.
func (f *Fleet) Config() FleetConfig { return f.cfg }

// DomainName is the libvirt name of a lab's node.
func DomainName(lab, node string) string { return DomainPrefix + lab + "-" + node }

// Add defines a node's domain (powered off) with a fresh, zeroed disk.
func (f *Fleet) Add(ctx context.Context, n NodeSpec) (*Machine, error) {
	if !nameRE.MatchString(n.Name) {
		return nil, fmt.Errorf("node name %q: use letters, digits, . _ -", n.Name)
	}
	hw, err := net.ParseMAC(n.MAC)
	if err != nil || len(hw) != 6 {
		return nil, fmt.Errorf("node %s: bad MAC %q", n.Name, n.MAC)
	}
	mac := hw.String()
	if n.DiskBytes == 0 {
		n.DiskBytes = 64 << 20
	}
	mem := f.cfg.MemoryMiB
	if n.MemoryMiB != 0 {
		mem = n.MemoryMiB
	}
	if n.Boot.Device == "" {
		n.Boot = simulator.BootConfig{Device: simulator.BootNetwork, Persistent: true}
	}
	n.Boot.Persistent = true
	port := n.AgentPort
	if port == 0 {
		if port, err = freePort(); err != nil {
			return nil, fmt.Errorf("node %s: pick agent port: %w", n.Name, err)
		}
	}
	name := DomainName(f.cfg.Lab, n.Name)
	disk := filepath.Join(f.cfg.StateDir, n.Name+".raw")
	console := filepath.Join(f.cfg.StateDir, n.Name+".console.log")
	cdPath := filepath.Join(f.cfg.StateDir, n.Name+".cd.iso")

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errors.New("libvirt fleet is closed")
	}
	if _, err := callT(ctx, f.c, "look up domain "+name, func() (libvirt.Domain, error) { return f.c.lv.DomainLookupByName(name) }); err == nil {
		return nil, fmt.Errorf("domain %s already exists (another run of lab %q is alive?)", name, f.cfg.Lab)
	} else if !isNotFound(err) {
		return nil, err
	}
	// A fresh machine: an all-zero sparse disk and an empty console log.
	if err := os.Remove(disk); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := os.Remove(cdPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := createSparse(disk, n.DiskBytes); err != nil {
		return nil, fmt.Errorf("node %s: create disk: %w", n.Name, err)
	}
	if err := os.WriteFile(console, nil, 0o644); err != nil {
		return nil, err
	}
	d := newDomain(domainSpec{
		Name:       name,
		Meta:       nodeMeta{UUID: n.UUID, Lab: f.cfg.Lab, Node: n.Name, PID: os.Getpid(), Disk: disk},
		Accel:      f.accel,
		MemoryMiB:  mem,
		TBCacheMiB: f.cfg.TBCacheMiB,
		Disk:       disk,
		Console:    console,
		MAC:        mac,
		HostPort:   port,
	})
	m := &Machine{
		c: f.c, name: n.Name, uuid: n.UUID, console: console,
		log:     f.log.With("node", n.Name, "node_uuid", n.UUID, "domain", name),
		managed: true, bootDir: f.cfg.BootDir, pxe: f.cfg.PXE, mac: mac, hostPort: port, cdPath: cdPath,
		persistent: n.Boot,
		hw: simulator.Hardware{
			CPUs: 1, CPUArch: "x86_64", CPUModel: cpuModel(f.accel), MemoryMB: int(mem),
			NICs:         []simulator.NIC{{Name: "eth0", MAC: mac}},
			Disks:        []simulator.Disk{{Name: "vda", SizeBytes: n.DiskBytes, Path: disk}},
			Vendor:       "QEMU",
			Product:      "Standard PC (i440FX + PIIX, 1996)",
			SerialNumber: n.UUID,
			BIOSVersion:  "SeaBIOS",
		},
	}
	applyBoot(d, m.selection(n.Boot, false))
	x, err := d.Marshal()
	if err != nil {
		return nil, fmt.Errorf("render domain %s: %w", name, err)
	}
	dom, err := callT(ctx, f.c, "define domain "+name, func() (libvirt.Domain, error) { return f.c.lv.DomainDefineXML(x) })
	if err != nil {
		os.Remove(disk)
		return nil, err
	}
	m.dom = dom
	f.machines = append(f.machines, m)
	m.log.Info("domain defined", "agent_url", m.AgentURL(), "accel", f.accel)
	return m, nil
}

func cpuModel(a Accel) string {
	if a == AccelKVM {
		return "QEMU Virtual CPU (KVM)"
	}
	return "QEMU Virtual CPU (TCG)"
}

// Machines are the fleet's machines in the order they were added.
func (f *Fleet) Machines() []*Machine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Machine(nil), f.machines...)
}

// Close destroys and undefines every domain of the fleet and removes their
// disk files and CD images; console logs stay for the results. Safe to call twice.
func (f *Fleet) Close(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	var errs []error
	for _, m := range f.machines {
		if err := removeDomain(ctx, f.c, m.dom, m.DiskPath()); err != nil {
			errs = append(errs, err)
		}
		if err := os.Remove(m.cdPath); m.cdPath != "" && err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove the CD image of %s: %w", m.dom.Name, err))
		}
	}
	f.machines = nil
	return errors.Join(errs...)
}

// CloseOnSignal closes the fleet when the process gets SIGINT or SIGTERM,
// then re-raises the signal so the program's own handling (or the default
// exit) follows. The returned stop undoes it.
func (f *Fleet) CloseOnSignal() (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			f.log.Info("signal: tearing down the lab's domains", "signal", s.String())
			if err := f.Close(ctx); err != nil {
				f.log.Error("teardown on signal", "err", err)
			}
			signal.Stop(ch)
			_ = syscall.Kill(os.Getpid(), s.(syscall.Signal))
		case <-done:
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { signal.Stop(ch); close(done) }) }
}

// removeDomain powers a domain off, undefines it and removes its disk.
func removeDomain(ctx context.Context, c *Conn, dom libvirt.Domain, disk string) error {
	if err := call(ctx, c, "destroy domain "+dom.Name, func() error { return c.lv.DomainDestroy(dom) }); err != nil && !isInvalidOp(err) && !isNotFound(err) {
		return err
	}
	if err := call(ctx, c, "undefine domain "+dom.Name, func() error { return c.lv.DomainUndefineFlags(dom, 0) }); err != nil && !isNotFound(err) {
		return err
	}
	if disk != "" {
		if err := os.Remove(disk); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove disk of %s: %w", dom.Name, err)
		}
	}
	return nil
}

// CleanStale removes ironlab domains whose owning process is gone (a run that
// crashed or was killed), with their disk files. Domains without ironlab's
// metadata, or whose owner still runs, are left alone. It returns the names
// removed.
func CleanStale(ctx context.Context, c *Conn, log *slog.Logger) ([]string, error) {
	doms, err := callT(ctx, c, "list domains", func() ([]libvirt.Domain, error) {
		d, _, err := c.lv.ConnectListAllDomains(1, 0)
		return d, err
	})
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, dom := range doms {
		if !strings.HasPrefix(dom.Name, DomainPrefix) {
			continue
		}
		raw, err := callT(ctx, c, "read XML of domain "+dom.Name, func() (string, error) {
			return c.lv.DomainGetXMLDesc(dom, libvirt.DomainXMLInactive)
		})
		if err != nil {
			if isNotFound(err) {
				continue
			}
			errs = append(errs, err)
			continue
		}
		var d libvirtxml.Domain
		if err := d.Unmarshal(raw); err != nil {
			continue
		}
		meta, ok := parseMeta(&d)
		if !ok || processAlive(meta.PID) {
			continue
		}
		if err := removeDomain(ctx, c, dom, meta.Disk); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, dom.Name)
	}
	return removed, errors.Join(errs...)
}

// processAlive reports whether pid names a live process (not a zombie).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// Field 3, after the parenthesised command name, is the state.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// Adopt fronts a domain the user already has (`ironlab bmc`): power maps to
// libvirt calls and a boot device change rewrites <os><boot> like virtualbmc.
// Its current boot device is read from its XML.
func Adopt(ctx context.Context, c *Conn, domain string, log *slog.Logger) (*Machine, error) {
	if log == nil {
		log = slog.Default()
	}
	dom, err := callT(ctx, c, "look up domain "+domain, func() (libvirt.Domain, error) { return c.lv.DomainLookupByName(domain) })
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("domain %s: %w", domain, simulator.ErrNoSuchMachine)
		}
		return nil, err
	}
	raw, err := callT(ctx, c, "read XML of domain "+domain, func() (string, error) {
		return c.lv.DomainGetXMLDesc(dom, libvirt.DomainXMLSecure|libvirt.DomainXMLInactive)
	})
	if err != nil {
		return nil, err
	}
	var d libvirtxml.Domain
	if err := d.Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("parse XML of domain %s: %w", domain, err)
	}
	m := &Machine{c: c, dom: dom, name: domain, uuid: d.UUID, log: log.With("domain", domain)}
	m.persistent = simulator.BootConfig{Device: simulator.BootDisk, Persistent: true}
	if bootDeviceOf(&d) == "network" {
		m.persistent.Device = simulator.BootNetwork
	}
	m.hw = simulator.Hardware{CPUArch: "x86_64", Vendor: "QEMU"}
	if d.VCPU != nil {
		m.hw.CPUs = int(d.VCPU.Value)
	}
	if d.Memory != nil {
		m.hw.MemoryMB = int(memMiB(d.Memory.Value, d.Memory.Unit))
	}
	if d.Devices != nil {
		for _, nic := range d.Devices.Interfaces {
			if nic.MAC != nil {
				m.hw.NICs = append(m.hw.NICs, simulator.NIC{Name: fmt.Sprintf("eth%d", len(m.hw.NICs)), MAC: nic.MAC.Address})
			}
		}
		for _, disk := range d.Devices.Disks {
			if disk.Device == "disk" && disk.Source != nil && disk.Source.File != nil && disk.Target != nil {
				m.hw.Disks = append(m.hw.Disks, simulator.Disk{Name: disk.Target.Dev, Path: disk.Source.File.File})
			}
		}
		for _, s := range d.Devices.Serials {
			if s.Source != nil && s.Source.File != nil {
				m.console = s.Source.File.Path
				break
			}
		}
	}
	if meta, ok := parseMeta(&d); ok {
		// One of ours: keep its node identity and agent port.
		m.name, m.uuid, m.hostPort = meta.Node, meta.UUID, hostPortOf(&d)
	}
	return m, nil
}

func memMiB(v uint, unit string) uint {
	switch strings.ToLower(unit) {
	case "", "k", "kib":
		return v / 1024
	case "m", "mib":
		return v
	case "g", "gib":
		return v * 1024
	case "b", "bytes":
		return v >> 20
	}
	return v / 1024
}

func createSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// freePort asks the kernel for a free loopback TCP port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
