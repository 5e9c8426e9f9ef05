package libvirtvm

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/ironlab/ironlab/images/ramdisk"
	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator"
)

// cdSource is the file in the domain's CD drive, in the definition
// (inactive) or the running guest.
func cdSource(t testing.TB, m *Machine, flags libvirt.DomainXMLFlags) string {
	t.Helper()
	raw, err := m.c.lv.DomainGetXMLDesc(m.dom, flags)
	if err != nil {
		t.Fatal(err)
	}
	var d libvirtxml.Domain
	if err := d.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	for _, disk := range d.Devices.Disks {
		if disk.Device == "cdrom" {
			if disk.Source == nil || disk.Source.File == nil {
				return ""
			}
			return disk.Source.File.File
		}
	}
	t.Fatalf("%s has no CD drive", m.DomainName())
	return ""
}

// TestVirtualMediaBootsISO: an ISO built from the agent ramdisk (ISOLINUX,
// El Torito) is fetched over HTTP into the domain's CD drive; a one-time
// boot from the CD runs ISOLINUX, the kernel and /init with the ISO's
// command line, which reaches the host; after it the machine boots its
// disk again (the image's marker on the console). A failed fetch leaves the drive as it was; an eject while the
// guest runs empties the running guest's drive too.
func TestVirtualMediaBootsISO(t *testing.T) {
	c := connect(t)
	if why := ramdisk.ISOTools(); why != "" {
		labtest.Missing(t, "genisoimage and isolinux", why)
	}
	f := newFleet(t, c, PXEDirect)
	ctx := context.Background()
	host := newHostServer(t)
	m, err := f.Add(ctx, NodeSpec{Name: "node-0", UUID: "8f7c1b4e-0000-4000-8000-000000000009", MAC: "52:54:00:10:00:09",
		Boot: simulator.BootConfig{Device: simulator.BootDisk, Persistent: true}})
	if err != nil {
		t.Fatal(err)
	}
	info := writeImage(t, m, "cd-then-disk")
	r := testRamdisk(t)
	iso := filepath.Join(vmDir(t), "agent.iso")
	if err := ramdisk.BuildISO(ctx, r.Kernel, r.Initrd, "console=ttyS0 quiet panic=-1 ironlab.fetch="+host.URL+"/from-cd", iso); err != nil {
		t.Fatal(err)
	}
	files := httptest.NewServer(http.FileServer(http.Dir(filepath.Dir(iso))))
	defer files.Close()
	if err := m.InsertMedia(ctx, files.URL+"/agent.iso"); err != nil {
		t.Fatal(err)
	}
	if got := cdSource(t, m, libvirt.DomainXMLInactive); got == "" || got != m.Media() {
		t.Fatalf("definition's CD drive holds %q, Media() %q", got, m.Media())
	}
	if err := m.InsertMedia(ctx, files.URL+"/missing.iso"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("insert of a 404: %v", err)
	}
	if err := m.InsertMedia(ctx, files.URL+"/"); err == nil || !strings.Contains(err.Error(), "not an ISO 9660 image") {
		t.Errorf("insert of a directory listing: %v", err)
	}
	if cdSource(t, m, libvirt.DomainXMLInactive) == "" {
		t.Fatalf("a failed insert emptied the drive")
	}
	if err := m.SetBootConfig(ctx, simulator.BootConfig{Device: simulator.BootCD}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := m.SetPower(ctx, simulator.ActionOn); err != nil {
		t.Fatal(err)
	}
	host.wait(t, "/from-cd", 120*time.Second)
	t.Logf("from power on to the CD's /init reaching the host: %v", time.Since(t0).Round(100*time.Millisecond))
	log := mustConsole(t, m)
	for _, want := range []string{"Booting from DVD/CD", "ISOLINUX"} {
		if !strings.Contains(log, want) {
			t.Errorf("console lacks %q: was this a boot from the CD?\n%s", want, tail(log, 3000))
		}
	}
	if got, _ := m.BootConfig(ctx); got.Device != simulator.BootDisk || !got.Persistent {
		t.Errorf("BootConfig after the one-time CD boot = %+v, want persistent disk", got)
	}
	waitPower(t, m, simulator.PowerOff, 30*time.Second)
	if strings.Contains(mustConsole(t, m), info.Marker()) {
		t.Fatalf("disk marker on the console before the disk boot")
	}
	// The next boot is the disk, CD still in the drive; the image's boot
	// sector prints its marker and halts, the guest stays up: eject live.
	if err := m.SetPower(ctx, simulator.ActionOn); err != nil {
		t.Fatal(err)
	}
	waitConsole(t, m, info.Marker(), 60*time.Second)
	if cdSource(t, m, 0) == "" {
		t.Fatalf("running guest's CD drive is empty before the eject")
	}
	if err := m.EjectMedia(ctx); err != nil {
		t.Fatal(err)
	}
	if live, def := cdSource(t, m, 0), cdSource(t, m, libvirt.DomainXMLInactive); live != "" || def != "" || m.Media() != "" {
		t.Errorf("after eject: running guest's drive %q, definition's %q, Media() %q", live, def, m.Media())
	}
}
