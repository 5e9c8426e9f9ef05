package libvirtvm

import (
	"encoding/xml"
	"fmt"
	"strconv"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// metadataNS tags the domains ironlab defines, with the node and owner.
const metadataNS = "urn:ironlab:node:1"

// nodeMeta is the <ironlab:node> element in a domain's <metadata>.
type nodeMeta struct {
	XMLName xml.Name `xml:"urn:ironlab:node:1 node"`
	UUID    string   `xml:"uuid,attr"`
	Lab     string   `xml:"lab,attr"`
	Node    string   `xml:"name,attr"`
	PID     int      `xml:"pid,attr"`
	Disk    string   `xml:"disk,attr"`
}

func (m nodeMeta) xml() string {
	return fmt.Sprintf(`<ironlab:node xmlns:ironlab=%q uuid=%q lab=%q name=%q pid="%d" disk=%q/>`,
		metadataNS, m.UUID, m.Lab, m.Node, m.PID, m.Disk)
}

// parseMeta finds ironlab's element in a domain's metadata; ok is false for
// domains ironlab did not define.
func parseMeta(d *libvirtxml.Domain) (nodeMeta, bool) {
	if d.Metadata == nil || !strings.Contains(d.Metadata.XML, metadataNS) {
		return nodeMeta{}, false
	}
	dec := xml.NewDecoder(strings.NewReader("<m>" + d.Metadata.XML + "</m>"))
	for {
		tok, err := dec.Token()
		if err != nil {
			return nodeMeta{}, false
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Space == metadataNS && se.Name.Local == "node" {
			var m nodeMeta
			if err := dec.DecodeElement(&m, &se); err != nil {
				return nodeMeta{}, false
			}
			return m, true
		}
	}
}

// Accel is the accelerator a domain runs under.
type Accel string

const (
	AccelAuto Accel = "auto" // KVM when a probe boot works, TCG otherwise
	AccelKVM  Accel = "kvm"
	AccelTCG  Accel = "tcg"
)

// PXEMode is how a network boot happens.
type PXEMode string

const (
	// PXEDirect turns the per-MAC boot entry into a libvirt direct kernel
	// boot (about 3 s to the agent under TCG).
	PXEDirect PXEMode = "direct"
	// PXEIPXE boots through QEMU's iPXE option ROM, DHCP and TFTP from slirp
	// rooted in the boot folder (about 22 s, mostly iPXE's DHCP wait).
	PXEIPXE PXEMode = "ipxe"
)

// guestAgentPort is where the agent listens inside the guest.
const guestAgentPort = 9999

// domainSpec is what a managed domain is made of.
type domainSpec struct {
	Name       string
	Meta       nodeMeta
	Accel      Accel // kvm or tcg
	MemoryMiB  uint
	TBCacheMiB uint
	Disk       string
	Console    string
	MAC        string
	HostPort   int // 127.0.0.1:<HostPort> -> guest :9999
}

// newDomain builds a managed domain's XML (boot selection applied later).
func newDomain(s domainSpec) *libvirtxml.Domain {
	typ := "qemu"
	var features *libvirtxml.DomainFeatureList
	if s.Accel == AccelKVM {
		typ = "kvm"
		features = &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}}
	} else {
		features = &libvirtxml.DomainFeatureList{
			ACPI: &libvirtxml.DomainFeature{},
			// TCG reserves a large translation cache by default; capped,
			// a 256 MiB guest costs ~215 MiB RSS.
			TCG: &libvirtxml.DomainFeatureTCG{TBCache: &libvirtxml.DomainFeatureTCGTBCache{Unit: "MiB", Size: s.TBCacheMiB}},
		}
	}
	port := uint(0)
	var cpu *libvirtxml.DomainCPU
	if s.Accel != AccelKVM {
		cpu = tcgCPU()
	}
	return &libvirtxml.Domain{
		Type:     typ,
		Name:     s.Name,
		Metadata: &libvirtxml.DomainMetadata{XML: s.Meta.xml()},
		Memory:   &libvirtxml.DomainMemory{Value: s.MemoryMiB, Unit: "MiB"},
		VCPU:     &libvirtxml.DomainVCPU{Value: 1},
		OS: &libvirtxml.DomainOS{
			Type: &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "pc", Type: "hvm"},
			// SeaBIOS and iPXE print to VGA only unless told to use serial.
			BIOS: &libvirtxml.DomainBIOS{UseSerial: "yes"},
		},
		Features:   features,
		CPU:        cpu,
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Disks: []libvirtxml.DomainDisk{{
				Device: "disk",
				Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
				Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: s.Disk}},
				Target: &libvirtxml.DomainDiskTarget{Dev: "vda", Bus: "virtio"},
			}, cdromDisk("")},
			Controllers: []libvirtxml.DomainController{{Type: "usb", Model: "none"}},
			Serials: []libvirtxml.DomainSerial{{
				Source: &libvirtxml.DomainChardevSource{File: &libvirtxml.DomainChardevSourceFile{Path: s.Console, Append: "on"}},
				Target: &libvirtxml.DomainSerialTarget{Port: &port},
			}},
			MemBalloon: &libvirtxml.DomainMemBalloon{Model: "none"},
		},
	}
}

// tcgCPU is QEMU's default model (qemu64) plus RDRAND, which TCG
// emulates. With it the guest kernel seeds its random pool at once; without
// it, the first blocking getrandom(2) (the agent's Go packages call
// crypto/rand at init) waits while the kernel gathers jitter entropy, which
// took 1.3-1.5 s of every boot under TCG. Other models cost more than they
// give: Haswell's AVX2 made Go's sha256 slower under TCG (24 vs 30 MB/s)
// and sha512 4x slower, and qemu64 with AVX and XSAVE hangs the kernel's
// FPU setup.
func tcgCPU() *libvirtxml.DomainCPU {
	return &libvirtxml.DomainCPU{
		Mode: "custom", Match: "exact", Check: "none",
		Model:    &libvirtxml.DomainCPUModel{Value: "qemu64", Fallback: "forbid"},
		Features: []libvirtxml.DomainCPUFeature{{Policy: "require", Name: "rdrand"}},
	}
}

// cdromDev is the virtual CD drive of a managed domain: IDE, which the
// pc machine has and SeaBIOS boots El Torito images from.
const cdromDev = "hdc"

// cdromDisk is the CD drive with the ISO file in it ("" for an empty drive).
func cdromDisk(iso string) libvirtxml.DomainDisk {
	d := libvirtxml.DomainDisk{
		Device:   "cdrom",
		Driver:   &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
		Target:   &libvirtxml.DomainDiskTarget{Dev: cdromDev, Bus: "ide"},
		ReadOnly: &libvirtxml.DomainDiskReadOnly{},
	}
	if iso != "" {
		d.Source = &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: iso}}
	}
	return d
}

// setCD puts iso ("": nothing) in the domain's CD drive, adding the drive
// to a domain defined before it had one.
func setCD(d *libvirtxml.Domain, iso string) {
	if d.Devices == nil {
		d.Devices = &libvirtxml.DomainDeviceList{}
	}
	for i, disk := range d.Devices.Disks {
		if disk.Device == "cdrom" && disk.Target != nil && disk.Target.Dev == cdromDev {
			cd := cdromDisk(iso)
			cd.Address, cd.Alias = disk.Address, disk.Alias
			d.Devices.Disks[i] = cd
			return
		}
	}
	d.Devices.Disks = append(d.Devices.Disks, cdromDisk(iso))
}

// bootSelection is what a domain boots at its next start.
type bootSelection struct {
	device string // "hd", "network" or "cdrom"
	// cd is the ISO file in a managed domain's CD drive ("" empty).
	cd string
	// Direct kernel boot (managed domains, network, PXEDirect).
	kernel, initrd, cmdline string
	// managed: ironlab owns the kernel and QEMU arguments of this domain.
	managed bool
	// QEMU user-mode NIC of a managed domain; nil for foreign domains.
	nic *userNIC
}

// userNIC is the QEMU user-mode NIC of a managed domain, passed through
// <qemu:commandline> because libvirt 9's <interface type='user'> cannot
// forward host ports (passt is compiled out of Debian 12's libvirt).
type userNIC struct {
	MAC      string
	HostPort int
	// iPXE: TFTP root and the bootfile the DHCP server names; "" for none,
	// and then the NIC carries no option ROM at all.
	TFTPRoot, Bootfile string
}

func (n userNIC) args() []libvirtxml.DomainQEMUCommandlineArg {
	netdev := fmt.Sprintf("user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:%d-:%d", n.HostPort, guestAgentPort)
	// bus/addr explicit: without them QEMU collides with libvirt's slot 2.
	dev := "virtio-net-pci,netdev=net0,mac=" + n.MAC + ",bus=pci.0,addr=0x10"
	if n.TFTPRoot != "" {
		netdev += ",tftp=" + n.TFTPRoot + ",bootfile=" + n.Bootfile
		// libvirt's strict boot order only tries devices with a bootindex.
		dev += ",bootindex=9"
	} else {
		dev += ",romfile="
	}
	return []libvirtxml.DomainQEMUCommandlineArg{{Value: "-netdev"}, {Value: netdev}, {Value: "-device"}, {Value: dev}}
}

// applyBoot rewrites a domain's boot selection the way virtualbmc does: drop
// <os><boot> and every per-device boot order, then set the new device. The
// <uuid> and everything else stay as they were.
func applyBoot(d *libvirtxml.Domain, b bootSelection) {
	if d.OS == nil {
		d.OS = &libvirtxml.DomainOS{}
	}
	d.OS.BootDevices = nil
	if d.Devices != nil {
		for i := range d.Devices.Disks {
			d.Devices.Disks[i].Boot = nil
		}
		for i := range d.Devices.Interfaces {
			d.Devices.Interfaces[i].Boot = nil
		}
		for i := range d.Devices.Hostdevs {
			d.Devices.Hostdevs[i].Boot = nil
		}
		for i := range d.Devices.Filesystems {
			d.Devices.Filesystems[i].Boot = nil
		}
	}
	if b.managed {
		d.OS.Kernel, d.OS.Initrd, d.OS.Cmdline = b.kernel, b.initrd, b.cmdline
		setCD(d, b.cd)
	}
	if b.kernel == "" {
		d.OS.BootDevices = []libvirtxml.DomainBootDevice{{Dev: b.device}}
	}
	if b.nic != nil {
		d.QEMUCommandline = &libvirtxml.DomainQEMUCommandline{Args: b.nic.args()}
	}
}

// bootDeviceOf reads the boot device a (foreign) domain's XML selects.
func bootDeviceOf(d *libvirtxml.Domain) string {
	if d.OS != nil {
		if d.OS.Kernel != "" {
			return "network"
		}
		if len(d.OS.BootDevices) > 0 {
			return d.OS.BootDevices[0].Dev
		}
	}
	// Per-device boot order: the lowest order wins.
	best, dev := uint(0), ""
	if d.Devices != nil {
		for _, disk := range d.Devices.Disks {
			if disk.Boot != nil && (dev == "" || disk.Boot.Order < best) {
				best, dev = disk.Boot.Order, "hd"
			}
		}
		for _, nic := range d.Devices.Interfaces {
			if nic.Boot != nil && (dev == "" || nic.Boot.Order < best) {
				best, dev = nic.Boot.Order, "network"
			}
		}
	}
	if dev == "" {
		return "hd"
	}
	return dev
}

// hostPortOf reads the forwarded agent port back from a managed domain.
func hostPortOf(d *libvirtxml.Domain) int {
	if d.QEMUCommandline == nil {
		return 0
	}
	for _, a := range d.QEMUCommandline.Args {
		if _, rest, ok := strings.Cut(a.Value, "hostfwd=tcp:127.0.0.1:"); ok {
			p, _, _ := strings.Cut(rest, "-")
			n, _ := strconv.Atoi(p)
			return n
		}
	}
	return 0
}
