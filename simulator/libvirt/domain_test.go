package libvirtvm

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"libvirt.org/go/libvirtxml"

	"github.com/ironlab/ironlab/simulator"
)

func testSpec() domainSpec {
	return domainSpec{
		Name: "ironlab-lab-node-0", Meta: nodeMeta{UUID: "u-1", Lab: "lab", Node: "node-0", PID: 42, Disk: "/s/node-0.raw"},
		Accel: AccelTCG, MemoryMiB: 256, TBCacheMiB: 32, Disk: "/s/node-0.raw", Console: "/s/node-0.console.log",
		MAC: "52:54:00:00:00:01", HostPort: 40001,
	}
}

// roundTrip renders and parses a domain, as libvirt's define + dumpxml would.
func roundTrip(t *testing.T, d *libvirtxml.Domain) *libvirtxml.Domain {
	t.Helper()
	x, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var back libvirtxml.Domain
	if err := back.Unmarshal(x); err != nil {
		t.Fatal(err)
	}
	return &back
}

func qemuArgs(d *libvirtxml.Domain) []string {
	var a []string
	if d.QEMUCommandline != nil {
		for _, x := range d.QEMUCommandline.Args {
			a = append(a, x.Value)
		}
	}
	return a
}

func TestApplyBoot(t *testing.T) {
	nic := &userNIC{MAC: "52:54:00:00:00:01", HostPort: 40001}
	ipxe := &userNIC{MAC: "52:54:00:00:00:01", HostPort: 40001, TFTPRoot: "/boot", Bootfile: "52-54-00-00-00-01.ipxe"}
	tests := map[string]struct {
		sel        bootSelection
		wantBoot   []string
		wantKernel string
		wantArgs   []string
	}{
		"disk": {
			sel:      bootSelection{device: "hd", managed: true, nic: nic},
			wantBoot: []string{"hd"},
			wantArgs: []string{"-netdev", "user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:40001-:9999", "-device", "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,bus=pci.0,addr=0x10,romfile="},
		},
		"direct kernel": {
			sel:        bootSelection{device: "network", managed: true, nic: nic, kernel: "/boot/agent/vmlinuz", initrd: "/boot/agent/initramfs.gz", cmdline: "console=ttyS0"},
			wantKernel: "/boot/agent/vmlinuz",
			wantArgs:   []string{"-netdev", "user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:40001-:9999", "-device", "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,bus=pci.0,addr=0x10,romfile="},
		},
		"ipxe": {
			sel:      bootSelection{device: "network", managed: true, nic: ipxe},
			wantBoot: []string{"network"},
			wantArgs: []string{"-netdev", "user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:40001-:9999,tftp=/boot,bootfile=52-54-00-00-00-01.ipxe", "-device", "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,bus=pci.0,addr=0x10,bootindex=9"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := newDomain(testSpec())
			// Start from the opposite state so the rewrite must clear it.
			applyBoot(d, bootSelection{device: "network", managed: true, nic: nic, kernel: "/old", cmdline: "old"})
			d.UUID = "11111111-2222-3333-4444-555555555555"
			d.Devices.Disks[0].Boot = &libvirtxml.DomainDeviceBoot{Order: 1}
			applyBoot(d, tc.sel)
			d = roundTrip(t, d)
			var boots []string
			for _, b := range d.OS.BootDevices {
				boots = append(boots, b.Dev)
			}
			if diff := cmp.Diff(tc.wantBoot, boots); diff != "" {
				t.Errorf("<os><boot> (-want +got):\n%s", diff)
			}
			if d.OS.Kernel != tc.wantKernel {
				t.Errorf("kernel %q, want %q", d.OS.Kernel, tc.wantKernel)
			}
			if d.Devices.Disks[0].Boot != nil {
				t.Errorf("per-device boot order left on the disk")
			}
			if d.UUID != "11111111-2222-3333-4444-555555555555" {
				t.Errorf("uuid changed to %q", d.UUID)
			}
			if diff := cmp.Diff(tc.wantArgs, qemuArgs(d)); diff != "" {
				t.Errorf("qemu args (-want +got):\n%s", diff)
			}
			if hostPortOf(d) != 40001 {
				t.Errorf("hostPortOf = %d", hostPortOf(d))
			}
		})
	}
}

// A foreign domain (ironlab bmc) keeps its kernel and NICs: only the boot
// device changes.
func TestApplyBootForeignDomain(t *testing.T) {
	d := &libvirtxml.Domain{
		OS: &libvirtxml.DomainOS{Kernel: "/k", BootDevices: []libvirtxml.DomainBootDevice{{Dev: "hd"}}},
		Devices: &libvirtxml.DomainDeviceList{Interfaces: []libvirtxml.DomainInterface{{
			Boot: &libvirtxml.DomainDeviceBoot{Order: 2}, MAC: &libvirtxml.DomainInterfaceMAC{Address: "52:54:00:aa:bb:cc"},
		}}},
	}
	applyBoot(d, bootSelection{device: "network"})
	// Like virtualbmc: the kernel stays, the NIC's boot order goes, and
	// <os><boot dev='network'/> is set.
	if d.OS.Kernel != "/k" || d.Devices.Interfaces[0].Boot != nil || len(d.OS.BootDevices) != 1 || d.OS.BootDevices[0].Dev != "network" {
		t.Fatalf("foreign rewrite: kernel %q, nic boot %v, boot devs %v", d.OS.Kernel, d.Devices.Interfaces[0].Boot, d.OS.BootDevices)
	}
	d.OS.Kernel = ""
	if got := bootDeviceOf(d); got != "network" {
		t.Fatalf("bootDeviceOf = %q, want network", got)
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	s := testSpec()
	d := roundTrip(t, newDomain(s))
	got, ok := parseMeta(d)
	if !ok {
		t.Fatal("no ironlab metadata after a round trip")
	}
	want := s.Meta
	want.XMLName = got.XMLName
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	if _, ok := parseMeta(&libvirtxml.Domain{Metadata: &libvirtxml.DomainMetadata{XML: "<other xmlns='x'/>"}}); ok {
		t.Error("foreign metadata parsed as ironlab's")
	}
}

func TestDomainShape(t *testing.T) {
	x, err := newDomain(testSpec()).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`<domain type="qemu"`, `<tb-cache unit="MiB">32</tb-cache>`, `append="on"`,
		`<controller type="usb" model="none"`, `<memballoon model="none"`, `<on_poweroff>destroy</on_poweroff>`,
		`<model fallback="forbid">qemu64</model>`, `<feature policy="require" name="rdrand">`,
	} {
		if !strings.Contains(x, want) {
			t.Errorf("domain XML lacks %s:\n%s", want, x)
		}
	}
	// The network rule: no libvirt <interface> (which could name a network
	// or bridge); the only NIC is QEMU user-mode via <qemu:commandline>.
	if strings.Contains(x, "<interface") {
		t.Errorf("domain XML has a libvirt interface:\n%s", x)
	}
}

func TestGuestURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:6385":    "http://10.0.2.2:6385",
		"http://localhost:6385/v1": "http://10.0.2.2:6385/v1",
		"http://[::1]:80":          "http://10.0.2.2:80",
		"http://192.0.2.1:6385":    "http://192.0.2.1:6385",
	} {
		if got := GuestURL(in); got != want {
			t.Errorf("GuestURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// A managed domain has an empty IDE CD drive; a selection with an ISO puts
// it there and a boot from cdrom lists that device alone; ejecting empties
// the drive again. A domain defined without the drive gets one.
func TestCDROM(t *testing.T) {
	nic := &userNIC{MAC: "52:54:00:00:00:01", HostPort: 40001}
	cdOf := func(d *libvirtxml.Domain) (n int, src string) {
		for _, disk := range d.Devices.Disks {
			if disk.Device == "cdrom" {
				n++
				if disk.Target.Dev != "hdc" || disk.Target.Bus != "ide" || disk.ReadOnly == nil {
					t.Errorf("CD drive %+v, want read-only ide hdc", disk.Target)
				}
				if disk.Source != nil && disk.Source.File != nil {
					src = disk.Source.File.File
				}
			}
		}
		return n, src
	}
	d := roundTrip(t, newDomain(testSpec()))
	if n, src := cdOf(d); n != 1 || src != "" {
		t.Fatalf("new domain: %d CD drives holding %q, want one empty", n, src)
	}
	applyBoot(d, bootSelection{device: "cdrom", managed: true, nic: nic, cd: "/s/node-0.cd.iso"})
	d = roundTrip(t, d)
	if n, src := cdOf(d); n != 1 || src != "/s/node-0.cd.iso" {
		t.Fatalf("inserted: %d CD drives holding %q", n, src)
	}
	if len(d.OS.BootDevices) != 1 || d.OS.BootDevices[0].Dev != "cdrom" || d.OS.Kernel != "" {
		t.Errorf("boot from the CD: boot devices %v, kernel %q", d.OS.BootDevices, d.OS.Kernel)
	}
	applyBoot(d, bootSelection{device: "hd", managed: true, nic: nic})
	if n, src := cdOf(roundTrip(t, d)); n != 1 || src != "" {
		t.Errorf("ejected: %d CD drives holding %q", n, src)
	}
	old := newDomain(testSpec())
	old.Devices.Disks = old.Devices.Disks[:1]
	applyBoot(old, bootSelection{device: "cdrom", managed: true, nic: nic, cd: "/x.iso"})
	if n, src := cdOf(roundTrip(t, old)); n != 1 || src != "/x.iso" {
		t.Errorf("domain without a drive: %d CD drives holding %q", n, src)
	}
}

func TestLoopbackURLAndISOCheck(t *testing.T) {
	for u, ok := range map[string]bool{
		"http://127.0.0.1:8080/a.iso": true, "https://localhost/a.iso": true, "http://[::1]:1/a": true,
		"http://192.0.2.1/a.iso": false, "ftp://127.0.0.1/a.iso": false, "a.iso": false,
	} {
		if err := loopbackURL(u); (err == nil) != ok {
			t.Errorf("loopbackURL(%q) = %v, want ok %v", u, err, ok)
		}
	}
	dir := t.TempDir()
	iso := make([]byte, 17*2048)
	copy(iso[16*2048:], "\x01CD001")
	good, bad := dir+"/good", dir+"/bad"
	os.WriteFile(good, iso, 0o644)
	os.WriteFile(bad, []byte("not an iso"), 0o644)
	if err := checkISO(good); err != nil {
		t.Errorf("checkISO(an ISO): %v", err)
	}
	if err := checkISO(bad); err == nil {
		t.Errorf("checkISO(text) accepted it")
	}
}

func TestSupportsBootDevice(t *testing.T) {
	managed, foreign := &Machine{managed: true, cdPath: "/s/n.cd.iso"}, &Machine{}
	for _, c := range []struct {
		m    *Machine
		dev  simulator.BootDevice
		want bool
	}{
		{managed, simulator.BootNetwork, true}, {managed, simulator.BootDisk, true}, {managed, simulator.BootCD, true},
		{managed, simulator.BootSetup, false}, {foreign, simulator.BootCD, false}, {foreign, simulator.BootDisk, true},
	} {
		if got := c.m.SupportsBootDevice(c.dev); got != c.want {
			t.Errorf("managed %v: SupportsBootDevice(%s) = %v", c.m.managed, c.dev, got)
		}
	}
}
