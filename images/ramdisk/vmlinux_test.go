package ramdisk

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

// TestExtractVmlinux decompresses the Debian guest kernel with lz4 and
// finds its PVH entry.
func TestExtractVmlinux(t *testing.T) {
	labtest.Require(t, "lz4")
	k := testKernel(t)
	dst := filepath.Join(t.TempDir(), ELFKernelName)
	if err := extractVmlinux(context.Background(), k.Image, dst); err != nil {
		t.Fatal(err)
	}
	// The bzImage itself is not an ELF kernel: the check must refuse it.
	if err := checkPVH(k.Image); err == nil {
		t.Fatalf("checkPVH accepted the bzImage %s", k.Image)
	}
	if st, err := os.Stat(dst); err != nil || st.Size() < 1<<20 {
		t.Fatalf("vmlinux: %v, %v", st, err)
	}
}

func TestCheckPVHRefusesNonELF(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(p, []byte("not an elf"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkPVH(p); err == nil {
		t.Fatal("checkPVH accepted a non-ELF file")
	}
}
