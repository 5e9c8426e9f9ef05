// Package lab assembles a lab from a spec: machines of one backend with
// stable identities derived from the seed, built as their group's hardware
// says (its BMC, firmware, disks, NICs), the image server, and what the
// machines boot from the network (the in-process agents of the fake
// backend). How the nodes are enrolled in a driver is not the lab's
// business (see package enroll); the lab takes the part it acts on,
// Enrollment, as data.
package lab

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/internal/httpstop"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bmc"
	"github.com/ironlab/ironlab/simulator/imageserver"
	"github.com/ironlab/ironlab/simulator/redfish"
)

// GroupSpec is a set of alike nodes: their hardware, their BMC's
// credentials, and what the lab must know of their enrollment.
type GroupSpec struct {
	Name  string
	Count int
	Hardware
	BMCUser     string
	BMCPassword string
	Enrollment  Enrollment
}

// Spec describes a lab.
type Spec struct {
	Name     string
	Seed     int64
	StateDir string // machines' disks, console logs, boot folder
	// ImageDir caches built images across runs (default StateDir/images).
	ImageDir string
	Backend  string // "fake" or "libvirt"
	// Libvirt configures the libvirt backend.
	Libvirt LibvirtSpec
	Groups  []GroupSpec
	Images  []images.Spec
	// BMCAddressing is "port" (127.0.0.1:BMCBasePort+i) or "ip" (127.0.x.y:623).
	BMCAddressing string
	// BMCBasePort is the first BMC's UDP port; 0 lets each BMC take a free port.
	BMCBasePort int
	// RedfishPort is the TCP port of the first Redfish listener (a
	// group's shared one, or a per-node group's node's); each next one
	// takes the next port. 0 takes free ports.
	RedfishPort int
	// RedfishHTTP serves Redfish over plain http instead of https.
	RedfishHTTP bool
	// Agent timing knobs for in-process agents (zero: IPA's defaults).
	LookupInterval        time.Duration
	HeartbeatErrorBackoff time.Duration
	ForcedHeartbeatGap    time.Duration
	Logger                *slog.Logger
}

// Node is one node of the lab: its hardware and machine, how it is reached
// out of band, and the enrollment data the lab was given for it.
type Node struct {
	Name  string
	UUID  string
	Group string
	// Hardware is what the node is made of (its group's).
	Hardware Hardware
	// Enrollment is how the node is enrolled, as the lab was told.
	Enrollment
	MACs    []string
	Machine simulator.Machine
	// BMC is the node's virtual IPMI BMC (Hardware.BMC ipmi), else nil.
	BMC      *bmc.BMC
	BMCCreds bmc.Credentials
	// SSH is the node's login on the lab's SSH virtualization host
	// (Hardware.BMC ssh), else nil.
	SSH *SSHLogin
	// Redfish is the node's system on its group's Redfish service
	// (Hardware.BMC redfish), else nil.
	Redfish    *redfish.System
	redfishSvc *redfishService

	lab           *Lab
	mu            sync.Mutex
	agent         *fakeagent.Agent
	agentFaults   fakeagent.Faults  // every boot
	pendingFaults *fakeagent.Faults // the next boot only
	rescueHash    string            // the last rescue.finalize_rescue's password hash
}

// RescuePasswordHash is the crypt(3) hash the node's agent got with its
// last rescue.finalize_rescue (the rescue user's password), "" if none.
func (n *Node) RescuePasswordHash() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rescueHash
}

// SSHLogin is a login on the lab's SSH host, whose virsh finds the node's
// VM by the node's UUID.
type SSHLogin struct {
	Address  string
	Port     int
	Username string
	Password string
}

// Agent is the node's running in-process agent, if any.
func (n *Node) Agent() *fakeagent.Agent {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.agent
}

// SetAgentFaults sets the fault knobs of the node's running agent or, when
// none runs, of the next agent it boots. With everyBoot they also apply to
// every agent the node boots later (a faulty ramdisk); otherwise a reboot
// brings a healthy agent. A backend that cannot deliver them says so.
func (n *Node) SetAgentFaults(f fakeagent.Faults, everyBoot bool) error {
	if err := f.Validate(); err != nil {
		return err
	}
	if err := n.CheckAgentFaults(everyBoot); err != nil {
		return err
	}
	return n.lab.backend.setAgentFaults(n, f, everyBoot)
}

// CheckAgentFaults says why the node's backend cannot give its agents
// faults (for every boot, or until the next reboot), if it cannot.
func (n *Node) CheckAgentFaults(everyBoot bool) error {
	return n.lab.backend.checkAgentFaults(n, everyBoot)
}

// setInProcessFaults sets the faults of the node's in-process agents.
func (n *Node) setInProcessFaults(f fakeagent.Faults, everyBoot bool) error {
	n.mu.Lock()
	n.agentFaults = fakeagent.Faults{}
	if everyBoot {
		n.agentFaults = f
	}
	a := n.agent
	n.pendingFaults = nil
	if a == nil {
		n.pendingFaults = &f
	}
	n.mu.Unlock()
	if a != nil {
		return a.SetFaults(f)
	}
	return nil
}

// bootFaults are the faults of an agent booting now: the pending ones of
// a fault set while no agent ran (once), else the every-boot ones. n.mu is
// held.
func (n *Node) bootFaults() fakeagent.Faults {
	if p := n.pendingFaults; p != nil {
		n.pendingFaults = nil
		return *p
	}
	return n.agentFaults
}

// DiskPath is where the node's first disk lives on the lab host.
func (n *Node) DiskPath() string {
	hw := n.Machine.Hardware()
	if len(hw.Disks) == 0 {
		return ""
	}
	return hw.Disks[0].Path
}

// Lab is a running lab.
type Lab struct {
	spec   Spec
	log    *slog.Logger
	nodes  []*Node
	byName map[string]*Node
	Images *imageserver.Server

	backend  backend // fake or libvirt, chosen by Spec.Backend
	mux      *fakeagent.Mux
	agentSrv *httpstop.Server
	// agentServed reports how the agents' API server stopped: a failure
	// is logged at once and returned by Close.
	agentServed chan error
	agentAddr   string
	driverURL   string
	// agentTotals counts the in-process agents' lookups and heartbeats.
	agentTotals fakeagent.Totals

	hosts   hosts                      // deploy ramdisks' Mux, SSH host
	redfish map[string]*redfishService // by group
	// bootFilesOnce serves deploy_kernel and deploy_ramdisk for a real Ironic.
	bootFilesOnce sync.Once
	cancel        context.CancelFunc
	wg            sync.WaitGroup
}

// New builds the lab's machines, images and BMCs; nothing runs until Start.
func New(spec Spec) (*Lab, error) {
	if spec.Logger == nil {
		spec.Logger = slog.Default()
	}
	if spec.Backend == "" {
		spec.Backend = "fake"
	}
	if spec.Backend != "fake" && spec.Backend != "libvirt" {
		return nil, fmt.Errorf("lab %s: backend %q: want fake or libvirt", spec.Name, spec.Backend)
	}
	if spec.StateDir == "" {
		return nil, fmt.Errorf("lab %s: no state directory", spec.Name)
	}
	if spec.ImageDir == "" {
		spec.ImageDir = filepath.Join(spec.StateDir, "images")
	}
	l := &Lab{spec: spec, log: spec.Logger, byName: map[string]*Node{}}
	l.Images = imageserver.New(spec.ImageDir, spec.Logger)
	for _, im := range spec.Images {
		if _, err := l.Images.Build(im); err != nil {
			return nil, fmt.Errorf("lab %s: build image %s: %w", spec.Name, im.ID, err)
		}
	}
	switch spec.Backend {
	case "fake":
		l.backend = fakeBackend{l}
	case "libvirt":
		vm, err := newVMBackend(l)
		if err != nil {
			l.Images.Close()
			return nil, err
		}
		l.backend = vm
	}
	macs := map[string]bool{}
	for _, g := range spec.Groups {
		for i := 0; i < g.Count; i++ {
			n, err := l.newNode(g, i, len(l.nodes), macs)
			if err != nil {
				l.Close()
				return nil, err
			}
			l.nodes = append(l.nodes, n)
			l.byName[n.Name] = n
		}
	}
	return l, nil
}

func (l *Lab) newNode(g GroupSpec, i, index int, macs map[string]bool) (*Node, error) {
	if g.NICs == 0 {
		g.NICs = 1
	}
	if err := g.check(); err != nil {
		return nil, fmt.Errorf("lab %s: %w", l.spec.Name, err)
	}
	name := fmt.Sprintf("%s-%d", g.Name, i)
	n := &Node{
		Name: name, UUID: DeriveUUID(l.spec.Seed, l.spec.Name, name), Group: g.Name,
		Hardware: g.Hardware, Enrollment: g.Enrollment, lab: l,
		BMCCreds: bmc.Credentials{Username: g.BMCUser, Password: g.BMCPassword},
	}
	if n.BMCCreds.Username == "" {
		n.BMCCreds = bmc.DefaultCredentials()
	}
	hw := simulator.Hardware{
		CPUs: g.CPUs, CPUArch: "x86_64", CPUModel: "ironlab virtual CPU", MemoryMB: g.MemoryMB,
		Disks:  []simulator.Disk{{Name: "vda", SizeBytes: g.DiskSize, SecureErase: g.SecureErase, Path: filepath.Join(l.spec.StateDir, "disks", name+".raw")}},
		Vendor: "ironlab", Product: "virtual machine (" + string(g.BMC) + " BMC)", SerialNumber: strings.ToUpper(n.UUID[:8]),
		BIOSVersion: "1.0.0", BIOSSettings: map[string]string{"vt": "on"},
	}
	for j := 0; j < g.NICs; j++ {
		key := name // the first NIC's MAC is what it always was
		if j > 0 {
			key = fmt.Sprintf("%s/eth%d", name, j)
		}
		mac := DeriveMAC(l.spec.Seed, l.spec.Name, key, macs)
		n.MACs = append(n.MACs, mac)
		hw.NICs = append(hw.NICs, simulator.NIC{Name: fmt.Sprintf("eth%d", j), MAC: mac})
	}
	m, err := l.backend.machine(n, hw)
	if err != nil {
		return nil, fmt.Errorf("lab %s: node %s: %w", l.spec.Name, name, err)
	}
	n.Machine = m
	switch g.BMC {
	case BMCIPMI:
		b, err := bmc.New(m, l.bmcAddr(index), bmc.Options{Credentials: n.BMCCreds, Logger: l.log})
		if err != nil {
			return nil, fmt.Errorf("lab %s: node %s: BMC: %w", l.spec.Name, name, err)
		}
		n.BMC = b
	case BMCRedfish:
		if err := l.redfishAccess(n, g); err != nil {
			return nil, err
		}
	case BMCSSH:
		if err := l.sshAccess(n); err != nil {
			return nil, err
		}
	case BMCNone:
	}
	return n, nil
}

func (l *Lab) bmcAddr(i int) string {
	if l.spec.BMCAddressing == "ip" {
		// 127.0.0.x for the first 250 nodes, then 127.0.1.x, ...
		return fmt.Sprintf("127.0.%d.%d:623", i/250, 2+i%250)
	}
	if l.spec.BMCBasePort == 0 {
		return "127.0.0.1:0"
	}
	return fmt.Sprintf("127.0.0.1:%d", l.spec.BMCBasePort+i)
}

// DeriveUUID gives a node a stable UUID from the lab's seed and its name.
func DeriveUUID(seed int64, lab, node string) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("ironlab-uuid/%d/%s/%s", seed, lab, node)))
	h[6] = h[6]&0x0f | 0x40 // version 4 layout
	h[8] = h[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// DeriveMAC gives a node a stable MAC in QEMU's 52:54:00 range; taken ones
// (in used) are skipped deterministically.
func DeriveMAC(seed int64, lab, node string, used map[string]bool) string {
	for try := 0; ; try++ {
		h := sha256.Sum256([]byte(fmt.Sprintf("ironlab-mac/%d/%s/%s/%d", seed, lab, node, try)))
		mac := fmt.Sprintf("52:54:00:%02x:%02x:%02x", h[0], h[1], h[2])
		if !used[mac] {
			used[mac] = true
			return mac
		}
	}
}

// Nodes are the lab's nodes in spec order.
func (l *Lab) Nodes() []*Node { return l.nodes }

// Node finds a node by name.
func (l *Lab) Node(name string) (*Node, bool) {
	n, ok := l.byName[name]
	return n, ok
}

// Start serves the images, the BMCs and the agents' API, and powers on the
// machines of nodes without a BMC into the network boot (the spec's
// long-running model: FakePower never reaches a machine, so its agent runs
// from the start).
func (l *Lab) Start(ctx context.Context, driverURL string) error {
	l.driverURL = strings.TrimRight(driverURL, "/")
	ctx, l.cancel = context.WithCancel(ctx)
	if err := l.Images.Start("127.0.0.1:0"); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("lab %s: agent listener: %w", l.spec.Name, err)
	}
	l.agentAddr = ln.Addr().String()
	l.mux = fakeagent.NewMux("http://" + l.agentAddr)
	// https for agents that use auto-TLS, http for the others, on one port.
	aln, err := l.mux.Listener(ln)
	if err != nil {
		ln.Close()
		return fmt.Errorf("lab %s: agent listener: %w", l.spec.Name, err)
	}
	l.agentSrv = httpstop.New(&http.Server{Handler: l.agentHandler(), ReadHeaderTimeout: 10 * time.Second})
	l.agentServed = make(chan error, 1)
	go func() {
		err := l.agentSrv.Serve(aln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		} else {
			err = fmt.Errorf("lab %s: agents' API on %s stopped: %w", l.spec.Name, l.agentAddr, err)
			l.log.Error("agents' API stopped", "err", err)
		}
		l.agentServed <- err
	}()
	if err := l.backend.start(); err != nil {
		return err
	}
	for _, n := range l.nodes {
		if n.BMC != nil {
			n.BMC.Start(ctx)
		}
	}
	l.startSSH()
	for _, n := range l.nodes {
		// No BMC: nobody powers the machine, so it runs from the start.
		if n.Hardware.BMC == BMCNone {
			m := n.Machine
			if err := m.SetBootConfig(ctx, simulator.BootConfig{Device: simulator.BootNetwork, Persistent: true, UEFI: n.Hardware.Firmware == "uefi"}); err != nil {
				return err
			}
			if err := m.SetPower(ctx, simulator.ActionOn); err != nil {
				return fmt.Errorf("lab %s: power on %s: %w", l.spec.Name, n.Name, err)
			}
		}
	}
	return nil
}

// AgentAddr is where the in-process agents' API listens.
func (l *Lab) AgentAddr() string { return l.agentAddr }

// AgentTotals is what the lab's in-process agents sent the driver so far,
// over every boot: lookups tried, heartbeats accepted, heartbeats failed.
func (l *Lab) AgentTotals() fakeagent.TotalsSnapshot { return l.agentTotals.Snapshot() }

// Close stops every machine, BMC, agent and server of the lab.
func (l *Lab) Close() error {
	if l.cancel != nil {
		l.cancel()
	}
	var errs []error
	errs = append(errs, l.closeRedfish()) // before the machines: it waits for late power changes
	if l.backend != nil {
		errs = append(errs, l.backend.close())
	}
	var wg sync.WaitGroup
	for _, n := range l.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c, ok := n.Machine.(interface{ Close() error }); ok {
				c.Close()
			}
			if n.BMC != nil {
				n.BMC.Close()
			}
		}()
	}
	wg.Wait()
	if l.agentSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		errs = append(errs, l.agentSrv.Shutdown(ctx), <-l.agentServed)
		cancel()
	}
	errs = append(errs, l.Images.Close(), l.closeSSH())
	return errors.Join(errs...)
}

// ConsoleLog writes every machine's console to dir/<node>.log.
func (l *Lab) SaveConsoleLogs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, n := range l.nodes {
		s, err := n.Machine.ConsoleLog()
		if err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, n.Name+".log"), []byte(s), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ImageIDs are the ids of the images the lab serves, in spec order.
func (l *Lab) ImageIDs() []string {
	var ids []string
	for _, im := range l.spec.Images {
		ids = append(ids, im.ID)
	}
	return ids
}
