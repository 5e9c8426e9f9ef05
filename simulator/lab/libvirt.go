package lab

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/images/ramdisk"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bootfiles"
	libvirtvm "github.com/ironlab/ironlab/simulator/libvirt"
)

// LibvirtSpec are the settings of the libvirt backend (Spec.Backend
// "libvirt"): every node is a QEMU guest that network-boots the agent
// ramdisk and boots its disk after a deploy.
type LibvirtSpec struct {
	// URI and Socket say how to reach libvirt (default qemu:///system
	// through the local daemon's socket).
	URI    string
	Socket string
	// Accel is auto (KVM when a probe boot works, else TCG), kvm or tcg.
	Accel string
	// PXE is direct (the boot entry becomes a direct kernel boot, ~3 s) or
	// ipxe (QEMU's iPXE ROM through slirp's TFTP, ~22 s).
	PXE string
	// MemoryMB is each guest's RAM (default 256). The groups' memory_mb is
	// what the node reports to the driver on the fake backend only.
	MemoryMB int
	// AgentBinary is the static ironlab binary that becomes /init; ""
	// means this binary if it is a static ironlab, else `go build
	// ./cmd/ironlab` in SourceDir (ironlab's commands pass
	// $IRONLAB_AGENT_BINARY here).
	AgentBinary string
	// SourceDir is the module root to build the agent from ("" finds the
	// current directory's module with `go env GOMOD`).
	SourceDir string
	// CacheDir keeps the guest kernel and built ramdisks (default
	// ramdisk.DefaultCacheDir()).
	CacheDir string
	// Progress receives the ramdisk builder's progress lines (nil: silent).
	Progress io.Writer
}

// vmBackend is a lab's libvirt fleet and what its machines network-boot.
type vmBackend struct {
	l          *Lab
	conn       *libvirtvm.Conn
	fleet      *libvirtvm.Fleet
	bootDir    string
	kernel     string // boot-folder relative paths of the agent ramdisk
	initrd     string
	stopSignal func()

	mu       sync.Mutex
	machines map[string]*libvirtvm.Machine // by node name
	faults   map[string]string             // node name -> base64 faults for the command line
	closed   bool
}

// libvirtSetupTimeout bounds connecting, building the ramdisk (a kernel
// download from the Debian mirror and a go build on a cold cache) and
// probing the accelerator.
const libvirtSetupTimeout = 10 * time.Minute

// newVMBackend connects to libvirt, builds the agent ramdisk (cached),
// installs it in the lab's boot folder and prepares the fleet (stale
// domains of crashed runs removed, accelerator settled).
func newVMBackend(l *Lab) (*vmBackend, error) {
	ls := l.spec.Libvirt
	ctx, cancel := context.WithTimeout(context.Background(), libvirtSetupTimeout)
	defer cancel()
	// libvirt's qemu user opens the disks, console logs and boot files
	// under the state folder: it must be able to traverse it.
	if err := os.MkdirAll(l.spec.StateDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(l.spec.StateDir, 0o755); err != nil {
		return nil, err
	}
	if dir, ok := untraversable(l.spec.StateDir); ok {
		return nil, fmt.Errorf("lab %s: libvirt's qemu user cannot reach %s: %s is not searchable by others (chmod o+x it, or use another --state-dir)", l.spec.Name, l.spec.StateDir, dir)
	}
	o := ramdisk.Options{CacheDir: ls.CacheDir, Binary: ls.AgentBinary, SourceDir: ls.SourceDir, Progress: ls.Progress}
	if o.Binary == "" && o.SourceDir == "" {
		o.SourceDir = moduleRoot(ctx)
	}
	rd, err := ramdisk.Build(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("lab %s: agent ramdisk: %w", l.spec.Name, err)
	}
	v := &vmBackend{l: l, bootDir: l.BootDir(), machines: map[string]*libvirtvm.Machine{}, faults: map[string]string{}}
	if err := os.MkdirAll(v.bootDir, 0o755); err != nil {
		return nil, err
	}
	if v.kernel, v.initrd, err = rd.Install(v.bootDir, "agent"); err != nil {
		return nil, fmt.Errorf("lab %s: install the agent ramdisk in %s: %w", l.spec.Name, v.bootDir, err)
	}
	v.conn, err = libvirtvm.Connect(ctx, libvirtvm.ConnOptions{URI: ls.URI, Socket: ls.Socket})
	if err != nil {
		return nil, fmt.Errorf("lab %s: %w", l.spec.Name, err)
	}
	v.fleet, err = libvirtvm.NewFleet(ctx, v.conn, libvirtvm.FleetConfig{
		Lab: l.spec.Name, StateDir: filepath.Join(l.spec.StateDir, "vms"), BootDir: v.bootDir,
		Accel: libvirtvm.Accel(ls.Accel), PXE: libvirtvm.PXEMode(ls.PXE), MemoryMiB: uint(max(ls.MemoryMB, 0)),
		// The probe boots what the nodes boot, from the traversable boot folder.
		ProbeKernel: filepath.Join(v.bootDir, v.kernel), ProbeInitrd: filepath.Join(v.bootDir, v.initrd),
		Logger: l.log,
	})
	if err != nil {
		v.conn.Close()
		return nil, fmt.Errorf("lab %s: %w", l.spec.Name, err)
	}
	// SIGINT/SIGTERM tear the domains down even when the program is busy
	// elsewhere; the program's own handling follows.
	v.stopSignal = v.fleet.CloseOnSignal()
	return v, nil
}

// untraversable finds the first folder above (and including) dir that
// others cannot search, if any.
func untraversable(dir string) (string, bool) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", false
	}
	for d := abs; ; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o001 == 0 {
			return d, true
		}
		if d == filepath.Dir(d) {
			return "", false
		}
	}
}

// moduleRoot is the folder of the Go module around the current directory,
// or "" (then the ramdisk builder uses this binary, or fails clearly).
func moduleRoot(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return ""
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return ""
	}
	return filepath.Dir(gomod)
}

// machine defines the node's domain (powered off, empty disk) with the
// node's name, UUID and MAC; its hardware is the domain's.
func (v *vmBackend) machine(n *Node, hw simulator.Hardware) (simulator.Machine, error) {
	if len(hw.NICs) != 1 {
		return nil, errOneNIC
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := v.fleet.Add(ctx, libvirtvm.NodeSpec{Name: n.Name, UUID: n.UUID, MAC: hw.NICs[0].MAC, DiskBytes: n.Hardware.DiskSize})
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	v.machines[n.Name] = m
	v.mu.Unlock()
	return m, nil
}

// start writes every agent node's boot entry: the agent ramdisk with a
// command line pointing at the driver API as the guest sees it (10.0.2.2).
// A PXE-deployed node's entry is the PXE driver's to write (its deploy
// ramdisk, the same kernel and initramfs in pxe-deploy mode); until then
// the node finds nothing to boot on the network, as on a real site.
func (v *vmBackend) start() error {
	l := v.l
	for _, n := range l.nodes {
		if n.Deploy == DeployPXE {
			continue
		}
		if err := v.writeEntry(l, n); err != nil {
			return err
		}
	}
	return nil
}

func (v *vmBackend) writeEntry(l *Lab, n *Node) error {
	cmdline, err := v.agentCmdline(l, n)
	if err != nil {
		return err
	}
	e := bootfiles.Entry{Kernel: v.kernel, Initrd: v.initrd, Cmdline: cmdline}
	if err := bootfiles.Write(v.bootDir, n.MACs[0], e); err != nil {
		return fmt.Errorf("node %s: boot entry: %w", n.Name, err)
	}
	return nil
}

// agentISO builds the ISO that boots node n's agent from a virtual CD: the
// agent ramdisk's bzImage and initramfs behind ISOLINUX, with the command
// line its network boot gets, in the boot folder's agent-iso/<node>.iso.
func (v *vmBackend) agentISO(ctx context.Context, n *Node) (string, error) {
	l := v.l
	if l.driverURL == "" {
		return "", fmt.Errorf("node %s: the agent ISO needs the driver's URL: start the lab first", n.Name)
	}
	cmdline, err := v.agentCmdline(l, n)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(v.bootDir, "agent-iso")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, n.Name+".iso")
	if err := ramdisk.BuildISO(ctx, filepath.Join(v.bootDir, filepath.FromSlash(v.kernel)), filepath.Join(v.bootDir, filepath.FromSlash(v.initrd)), cmdline, out); err != nil {
		return "", fmt.Errorf("node %s: %w", n.Name, err)
	}
	return out, nil
}

// agentCmdline is the kernel command line that boots node n's agent.
func (v *vmBackend) agentCmdline(l *Lab, n *Node) (string, error) {
	v.mu.Lock()
	m, faults := v.machines[n.Name], v.faults[n.Name]
	v.mu.Unlock()
	if m == nil {
		return "", fmt.Errorf("node %s has no domain", n.Name)
	}
	extra := []string{"ironlab.dialect=" + n.Dialect, "ironlab.driver=" + n.Driver}
	if d := l.spec.LookupInterval; d > 0 {
		extra = append(extra, "ipa-lookup-interval="+strconv.FormatFloat(d.Seconds(), 'f', -1, 64))
	}
	if d := l.spec.HeartbeatErrorBackoff; d > 0 {
		extra = append(extra, "ironlab.heartbeat-error-backoff="+d.String())
	}
	if faults != "" {
		extra = append(extra, "ironlab.faults="+faults)
	}
	return m.AgentCmdline(l.driverURL, extra...), nil
}

// checkAgentFaults: a guest's agent is out of the lab's reach once it
// runs; its faults go on the command line of every later boot, which the
// PXE driver writes itself for PXE-deployed nodes.
func (v *vmBackend) checkAgentFaults(n *Node, everyBoot bool) error {
	if n.Deploy == DeployPXE {
		return fmt.Errorf("node %s (%s): agent faults on the libvirt backend go on the agent ramdisk's command line, which the PXE driver writes on this class", n.Name, n.Driver)
	}
	if !everyBoot {
		return fmt.Errorf("node %s: until_reboot needs the fake backend: the libvirt backend cannot reach a running guest's agent, it puts faults on every later boot's command line", n.Name)
	}
	return nil
}

// setAgentFaults gives the node's agent ramdisk fault knobs from its next
// boot on: a running guest's agent cannot be reached from the lab.
func (v *vmBackend) setAgentFaults(n *Node, f fakeagent.Faults, _ bool) error {
	l := v.l
	enc := ""
	if f != (fakeagent.Faults{}) {
		b, err := json.Marshal(f)
		if err != nil {
			return err
		}
		enc = base64.StdEncoding.EncodeToString(b)
	}
	v.mu.Lock()
	v.faults[n.Name] = enc
	v.mu.Unlock()
	if l.driverURL == "" {
		return nil // written at Start
	}
	return v.writeEntry(l, n)
}

// close destroys and undefines every domain and removes their disks; the
// console logs stay for the results.
func (v *vmBackend) close() error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed = true
	v.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []error
	if v.fleet != nil {
		errs = append(errs, v.fleet.Close(ctx))
	}
	if v.stopSignal != nil {
		v.stopSignal()
	}
	if v.conn != nil {
		errs = append(errs, v.conn.Close())
	}
	return errors.Join(errs...)
}

// deployRamdisk is the agent ramdisk's files in the boot folder.
func (v *vmBackend) deployRamdisk() (kernel, initrd string) {
	return filepath.Join(v.bootDir, v.kernel), filepath.Join(v.bootDir, v.initrd)
}

// Accel is the accelerator the lab's VMs run under and why ("tcg
// (requested)"); "" on a backend without one (fake).
func (l *Lab) Accel() string {
	if a, ok := l.backend.(accelerated); ok {
		return a.accel()
	}
	return ""
}

func (v *vmBackend) accel() string {
	a, why := v.fleet.Accel()
	return fmt.Sprintf("%s (%s)", a, why)
}

// guestURL: QEMU's user-mode network shows the host's loopback at 10.0.2.2.
func (v *vmBackend) guestURL(u string) string { return libvirtvm.GuestURL(u) }

// ImageURL is the URL of an image as the lab's machines reach the image
// server, for the driver's instance_info: 127.0.0.1 for in-process agents,
// 10.0.2.2 (QEMU's user-mode view of the host's loopback) for VMs.
func (l *Lab) ImageURL(id string) string {
	return l.backend.guestURL(l.Images.URL(id))
}

// ImageURLFor is the image URL for a node's instance_info: who downloads
// it decides the view. The agent (in the machine) downloads on agent
// deploys: ImageURL. The conductor downloads on PXE deploys (it streams
// the image itself), so the host's loopback URL, on either backend.
func (l *Lab) ImageURLFor(n *Node, id string) string {
	if n.Deploy == DeployPXE {
		return l.Images.URL(id)
	}
	return l.ImageURL(id)
}
