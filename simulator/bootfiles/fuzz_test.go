package bootfiles

import (
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const fuzzMAC = "52:54:00:12:34:56"

// FuzzWriteRead writes boot entries and reads them back: what Write accepts,
// Read must return unchanged (the libvirt backend boots what Read gives, so
// a drift would boot another kernel or command line), and nothing lands
// outside the boot folder. The corpus holds the entries the lab writes (the
// agent ramdisk, the PXE deploy ramdisk, VM command lines).
func FuzzWriteRead(f *testing.F) {
	f.Fuzz(func(t *testing.T, kernel, initrd, cmdline string) {
		dir := t.TempDir()
		e := Entry{Kernel: kernel, Initrd: initrd, Cmdline: cmdline}
		if err := Write(dir, fuzzMAC, e); err != nil {
			return
		}
		for _, p := range []string{kernel, initrd} {
			if p != "" && !filepath.IsLocal(filepath.FromSlash(p)) {
				t.Fatalf("accepted path %q outside the boot folder", p)
			}
		}
		got, err := Read(dir, fuzzMAC)
		if err != nil {
			t.Fatalf("Write accepted %+v; Read: %v", e, err)
		}
		if diff := cmp.Diff(e, got); diff != "" {
			t.Fatalf("entry changed between Write and Read (-wrote +read):\n%s", diff)
		}
		pxl, err := os.ReadFile(filepath.Join(dir, "pxelinux.cfg", "01-52-54-00-12-34-56"))
		if err != nil || strings.Count(string(pxl), "\n") != 4 {
			t.Fatalf("pxelinux config of %+v is not four lines: %q (%v)", e, pxl, err)
		}
	})
}

// FuzzRead reads iPXE scripts someone else may have put in the boot folder:
// Read either refuses one or returns an entry that Write accepts and that
// reads back the same.
func FuzzRead(f *testing.F) {
	f.Fuzz(func(t *testing.T, script []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "52-54-00-12-34-56.ipxe"), script, 0o644); err != nil {
			t.Fatal(err)
		}
		e, err := Read(dir, fuzzMAC)
		if err != nil {
			if !strings.Contains(err.Error(), "boot entry") {
				t.Fatalf("error %q does not say it is about a boot entry", err)
			}
			return
		}
		if e.Kernel == "" || path.IsAbs(e.Kernel) || strings.ContainsAny(e.Cmdline, "\r\n") {
			t.Fatalf("Read returned %+v", e)
		}
		if err := Write(dir, fuzzMAC, e); err != nil {
			t.Fatalf("Read returned %+v, which Write refuses: %v", e, err)
		}
		again, err := Read(dir, fuzzMAC)
		if err != nil || again != e {
			t.Fatalf("%+v written and read again is %+v (%v)", e, again, err)
		}
	})
}
