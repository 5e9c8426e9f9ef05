package ramdisk

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/images/configdrive"
	"github.com/ironlab/ironlab/scenarios/labtest"
)

// The agent ISO is an El Torito (no emulation) image booting ISOLINUX,
// whose isolinux.cfg boots the kernel and initrd with the command line,
// as Ironic lays its virtual media out.
func TestBuildISO(t *testing.T) {
	if why := ISOTools(); why != "" {
		labtest.Missing(t, "genisoimage and isolinux", why)
	}
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "bz"), filepath.Join(dir, "rd")
	os.WriteFile(kernel, bytes.Repeat([]byte("K"), 5000), 0o644)
	os.WriteFile(initrd, bytes.Repeat([]byte("I"), 7000), 0o644)
	out := filepath.Join(dir, "agent.iso")
	cmdline := "console=ttyS0 ipa-api-url=http://10.0.2.2:6385 BOOTIF=01-52-54-00-00-00-01"
	if err := BuildISO(context.Background(), kernel, initrd, cmdline, out); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	iso, err := configdrive.OpenISO(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := iso.ReadFile(ISOCmdlineFile)
	if err != nil || !strings.Contains(string(cfg), "kernel /vmlinuz\n") || !strings.Contains(string(cfg), "append initrd=/initrd "+cmdline+"\n") {
		t.Fatalf("%s: %q (%v)", ISOCmdlineFile, cfg, err)
	}
	for name, want := range map[string]string{"vmlinuz": kernel, "initrd": initrd, "isolinux/ldlinux.c32": LdlinuxC32} {
		got, err := iso.ReadFile(name)
		w, _ := os.ReadFile(want)
		if err != nil || !bytes.Equal(got, w) {
			t.Errorf("%s in the ISO: %d bytes (%v), want %s's %d", name, len(got), err, want, len(w))
		}
	}
	// Sector 17: the El Torito boot record, pointing at the boot catalog,
	// whose default entry boots (0x88) without emulation (0) 4 sectors of
	// a patched isolinux.bin (its boot info table names the PVD, sector 16).
	const sector = 2048
	br := img[17*sector:]
	if br[0] != 0 || string(br[1:6]) != "CD001" || !strings.HasPrefix(string(br[7:39]), "EL TORITO SPECIFICATION") {
		t.Fatalf("sector 17 is no El Torito boot record: % x", br[:40])
	}
	cat := img[int(binary.LittleEndian.Uint32(br[71:]))*sector:]
	if cat[0] != 1 || cat[30] != 0x55 || cat[31] != 0xaa {
		t.Fatalf("boot catalog validation entry % x", cat[:32])
	}
	def := cat[32:]
	if def[0] != 0x88 || def[1] != 0 || binary.LittleEndian.Uint16(def[6:]) != 4 {
		t.Fatalf("boot catalog default entry % x", def[:12])
	}
	loader := img[int(binary.LittleEndian.Uint32(def[8:]))*sector:]
	if pvd := binary.LittleEndian.Uint32(loader[8:]); pvd != 16 {
		t.Errorf("isolinux.bin's boot info table names sector %d as the PVD, want 16 (-boot-info-table)", pvd)
	}
	orig, _ := os.ReadFile(IsolinuxBin)
	if !bytes.Equal(orig[:8], loader[:8]) || !bytes.Equal(orig[64:512], loader[64:512]) {
		t.Errorf("the boot image is not isolinux.bin")
	}
}
