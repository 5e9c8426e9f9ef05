// Package fake is the in-process Machine backend: thousands of machines in
// one process, each a few goroutines and a sparse disk file. Powering on with
// boot device network boots what the lab serves (the in-process agent);
// powering on with boot device disk "executes" the disk's boot sector by
// printing its marker line on the console, so a test checks what really
// landed on the disk.
package fake

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/simulator"
)

// Faults are the machine's fault knobs, settable at runtime (the
// simulator.FaultInjector capability).
type Faults = simulator.MachineFaults

// Options build a Machine.
type Options struct {
	Name     string
	UUID     string
	Hardware simulator.Hardware // Disks[i].Path is created as a sparse file of SizeBytes
	Boot     simulator.BootConfig
	NetBoot  simulator.NetBooter // what a network boot runs; nil: nothing answers
	// POSTTime is how long firmware takes before a network boot starts what
	// the lab serves (real servers spend minutes in POST).
	POSTTime time.Duration
}

// CDBooter is a NetBooter that can also run what a virtual CD boots, given
// the kernel command line of the CD's boot loader (the agent's options in an
// ISO that Ironic's redfish-virtual-media built). Without it, or for a CD
// with no such line, a CD boot runs NetBoot.
type CDBooter interface {
	CDBoot(ctx context.Context, m simulator.Machine, cmdline string) error
}

// Machine is one fake machine.
type Machine struct {
	name, uuid string
	netboot    simulator.NetBooter
	post       time.Duration

	mu         sync.Mutex
	hw         simulator.Hardware
	power      simulator.PowerState
	persistent simulator.BootConfig // what it boots when no one-time choice is pending
	once       *simulator.BootConfig
	console    strings.Builder
	faults     Faults
	boots      int
	media      string             // the virtual CD's image URL, "" when empty
	stop       context.CancelFunc // ends what the current boot runs
	done       chan struct{}
}

// New makes a powered-off machine and its sparse disk files.
func New(o Options) (*Machine, error) {
	for _, d := range o.Hardware.Disks {
		if err := os.MkdirAll(filepath.Dir(d.Path), 0o755); err != nil {
			return nil, fmt.Errorf("machine %s: disk %s: %w", o.Name, d.Name, err)
		}
		f, err := os.OpenFile(d.Path, os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, fmt.Errorf("machine %s: disk %s: %w", o.Name, d.Name, err)
		}
		err = f.Truncate(d.SizeBytes)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("machine %s: disk %s: %w", o.Name, d.Name, err)
		}
	}
	if o.Boot.Device == "" {
		o.Boot.Device = simulator.BootDisk
	}
	o.Boot.Persistent = true
	return &Machine{name: o.Name, uuid: o.UUID, netboot: o.NetBoot, post: o.POSTTime, hw: o.Hardware, power: simulator.PowerOff, persistent: o.Boot}, nil
}

func (m *Machine) Name() string { return m.name }
func (m *Machine) UUID() string { return m.uuid }

func (m *Machine) Power(ctx context.Context) (simulator.PowerState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.power, nil
}

// SetFaults replaces the machine's fault knobs.
func (m *Machine) SetFaults(f Faults) {
	m.mu.Lock()
	m.faults = f
	m.mu.Unlock()
}

// Boots counts how often the machine has booted.
func (m *Machine) Boots() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.boots
}

func (m *Machine) SetPower(ctx context.Context, a simulator.PowerAction) error {
	m.mu.Lock()
	lag := m.faults.PowerLag
	m.mu.Unlock()
	if lag > 0 {
		select {
		case <-time.After(lag):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	switch a {
	case simulator.ActionOn:
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.power == simulator.PowerOn {
			return nil
		}
		m.boot()
	case simulator.ActionOff, simulator.ActionSoftOff:
		m.halt()
	case simulator.ActionReset, simulator.ActionCycle:
		m.halt()
		m.mu.Lock()
		defer m.mu.Unlock()
		m.boot()
	case simulator.ActionNMI:
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.power == simulator.PowerOn {
			m.printf("NMI received\n")
		}
	default:
		return fmt.Errorf("machine %s: unknown power action %q", m.name, a)
	}
	return nil
}

// halt stops what runs and powers off; it waits for the booted system to end.
func (m *Machine) halt() {
	m.mu.Lock()
	stop, done := m.stop, m.done
	m.stop, m.done = nil, nil
	m.power = simulator.PowerOff
	m.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// boot starts the machine from its next boot device. m.mu is held.
func (m *Machine) boot() {
	m.power = simulator.PowerOn
	m.boots++
	dev := m.persistent
	if m.once != nil {
		dev, m.once = *m.once, nil
	}
	m.printf("ironlab fake BIOS: boot #%d from %s\n", m.boots, dev.Device)
	if m.faults.FailBoot {
		m.printf("boot failed: no bootable device\n")
		return
	}
	switch dev.Device {
	case simulator.BootDisk:
		m.bootDisk()
	case simulator.BootSetup:
		m.printf("firmware setup: waiting at the setup menu\n")
	case simulator.BootCD:
		if m.media == "" {
			m.printf("boot failed: virtual CD: no media inserted\n")
			return
		}
		m.run(m.media)
	case simulator.BootNetwork:
		if m.netboot == nil {
			m.printf("PXE: no boot file offered\n")
			return
		}
		m.run("")
	}
}

// run boots what the lab serves in the background: the network boot, or,
// with a CD image URL, that image first fetched and checked. m.mu is held.
func (m *Machine) run(cdImage string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	m.stop, m.done = cancel, done
	go func() {
		defer close(done)
		if m.post > 0 {
			select {
			case <-time.After(m.post):
			case <-ctx.Done():
				return
			}
		}
		cmdline := ""
		if cdImage != "" {
			n, sum, line, err := fetchImage(ctx, cdImage)
			m.mu.Lock()
			if err != nil {
				if ctx.Err() == nil {
					m.printf("boot failed: virtual CD %s: %v\n", cdImage, err)
				}
				m.mu.Unlock()
				return
			}
			m.printf("virtual CD: booting %s (%d bytes, sha256 %s)\n", cdImage, n, sum)
			if line != "" {
				m.printf("virtual CD: kernel command line: %s\n", line)
			}
			cmdline = line
			nb := m.netboot
			if nb == nil {
				m.printf("virtual CD: the image's system has nothing to run\n")
			}
			m.mu.Unlock()
			if nb == nil {
				return
			}
		}
		var err error
		if cb, ok := m.netboot.(CDBooter); ok && cmdline != "" {
			err = cb.CDBoot(ctx, m, cmdline)
		} else {
			err = m.netboot.NetBoot(ctx, m)
		}
		if err != nil && ctx.Err() == nil {
			m.mu.Lock()
			m.printf("network boot: %v\n", err)
			m.mu.Unlock()
		}
	}()
}

// bootDisk prints the disk's marker, as the image's boot sector does on COM1.
func (m *Machine) bootDisk() {
	if len(m.hw.Disks) == 0 {
		m.printf("boot failed: no disk\n")
		return
	}
	f, err := os.Open(m.hw.Disks[0].Path)
	if err != nil {
		m.printf("boot failed: %v\n", err)
		return
	}
	defer f.Close()
	h, err := images.ReadHeader(f)
	if err != nil {
		m.printf("boot failed: disk %s is not bootable\n", m.hw.Disks[0].Name)
		return
	}
	m.printf("%s\n", images.Marker(h.ID, h.PayloadSHA256))
}

// ConsolePrintf prints on the machine's console (simulator.ConsoleWriter).
func (m *Machine) ConsolePrintf(format string, a ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.printf(format, a...)
}

var _ simulator.ConsoleWriter = (*Machine)(nil)

func (m *Machine) printf(format string, a ...any) {
	fmt.Fprintf(&m.console, format, a...)
}

func (m *Machine) BootConfig(ctx context.Context) (simulator.BootConfig, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.once != nil {
		return *m.once, nil
	}
	return m.persistent, nil
}

func (m *Machine) SetBootConfig(ctx context.Context, b simulator.BootConfig) error {
	switch b.Device {
	case simulator.BootDisk, simulator.BootNetwork, simulator.BootCD, simulator.BootSetup:
	default:
		return fmt.Errorf("machine %s: unknown boot device %q", m.name, b.Device)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if b.Persistent {
		m.persistent, m.once = b, nil
	} else {
		m.once = &b
	}
	return nil
}

// InsertMedia puts an image URL in the machine's virtual CD drive; a boot
// from BootCD fetches it.
func (m *Machine) InsertMedia(ctx context.Context, imageURL string) error {
	if err := loopbackURL(imageURL); err != nil {
		return fmt.Errorf("machine %s: insert virtual CD: %w", m.name, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.media = imageURL
	return nil
}

// EjectMedia empties the virtual CD drive.
func (m *Machine) EjectMedia(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.media = ""
	return nil
}

// Media is the image URL in the virtual CD drive ("" when empty).
func (m *Machine) Media() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.media
}

func (m *Machine) Hardware() simulator.Hardware {
	m.mu.Lock()
	defer m.mu.Unlock()
	hw := m.hw
	hw.NICs = append([]simulator.NIC(nil), m.hw.NICs...)
	hw.Disks = append([]simulator.Disk(nil), m.hw.Disks...)
	hw.UEFIBootEntries = append([]simulator.UEFIBootEntry(nil), m.hw.UEFIBootEntries...)
	if m.hw.BIOSSettings != nil {
		hw.BIOSSettings = make(map[string]string, len(m.hw.BIOSSettings))
		for k, v := range m.hw.BIOSSettings {
			hw.BIOSSettings[k] = v
		}
	}
	return hw
}

// UpdateHardware changes what the machine is made of (firmware updates and
// BIOS settings applied by clean steps); the next inventory shows it.
func (m *Machine) UpdateHardware(f func(*simulator.Hardware)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(&m.hw)
	return nil
}

func (m *Machine) ConsoleLog() (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.console.String(), nil
}

// Close powers the machine off and waits for what it ran to stop.
func (m *Machine) Close() error {
	m.halt()
	return nil
}
