package ramdisk

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

// TestInitramfsLayout writes an initramfs from stand-in files, gzip and
// LZ4, and reads it back: every header is newc (070701, no checksum
// variant), /init is executable, modules come with their load order.
func TestInitramfsLayout(t *testing.T) {
	t.Run("gzip", func(t *testing.T) { testInitramfsLayout(t, false) })
	t.Run("lz4", func(t *testing.T) {
		labtest.Require(t, "lz4")
		testInitramfsLayout(t, true)
	})
}

func testInitramfsLayout(t *testing.T, lz4 bool) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "ironlab")
	os.WriteFile(bin, []byte("\x7fELF-not-really"), 0o755)
	var mods []Module
	for _, n := range []string{"virtio_ring", "virtio", "virtio_pci"} {
		p := filepath.Join(dir, n+".ko")
		os.WriteFile(p, []byte("module "+n), 0o644)
		mods = append(mods, Module{Name: n, Path: p})
	}
	out := filepath.Join(dir, InitrdName)
	if err := writeInitramfs(context.Background(), out, bin, mods, "release=test\n", lz4); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(out)
	var plain []byte
	if lz4 {
		// The legacy frame: the only LZ4 format the kernel unpacks.
		if !bytes.HasPrefix(raw, lz4Legacy) {
			t.Fatalf("initramfs starts % x, want the LZ4 legacy magic % x", raw[:min(4, len(raw))], lz4Legacy)
		}
		cmd := exec.Command("lz4", "-dc")
		cmd.Stdin = bytes.NewReader(raw)
		var err error
		if plain, err = cmd.Output(); err != nil {
			t.Fatal(err)
		}
	} else {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		plain, _ = io.ReadAll(zr)
	}
	if n, m := bytes.Count(plain, []byte("070701")), bytes.Count(plain, []byte("070702")); m != 0 || n < 12 {
		t.Fatalf("headers: %d newc, %d crc; want all newc", n, m)
	}
	r := cpio.NewReader(bytes.NewReader(plain))
	got := map[string]string{}
	modes := map[string]cpio.FileMode{}
	var names []string
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		modes[h.Name] = h.Mode
		b, _ := io.ReadAll(r)
		got[h.Name] = string(b)
	}
	if got["init"] != "\x7fELF-not-really" || modes["init"].Perm() != 0o755 || !modes["init"].IsRegular() {
		t.Errorf("init: %q mode %v", got["init"], modes["init"])
	}
	if diff := cmp.Diff("virtio_ring\nvirtio\nvirtio_pci\n", got[strings.TrimPrefix(ModuleOrderFile, "/")]); diff != "" {
		t.Errorf("load order (-want +got):\n%s", diff)
	}
	for _, m := range mods {
		if got["lib/modules/"+m.Name+".ko"] != "module "+m.Name {
			t.Errorf("module %s missing or wrong", m.Name)
		}
	}
	for _, d := range []string{"dev", "proc", "sys", "tmp"} {
		if !modes[d].IsDir() {
			t.Errorf("no directory %s in %v", d, names)
		}
	}
	// Same inputs, same bytes: the cache can key on input hashes.
	out2 := filepath.Join(dir, "again.img")
	writeInitramfs(context.Background(), out2, bin, mods, "release=test\n", lz4)
	raw2, _ := os.ReadFile(out2)
	if !bytes.Equal(raw, raw2) {
		t.Error("initramfs is not reproducible")
	}
}

// TestModuleOrderFromCachedKernel resolves the virtio modules of the Debian
// guest kernel (fetched into the cache if not there yet); it checks each
// module comes after its dependencies.
func TestModuleOrderFromCachedKernel(t *testing.T) {
	k := testKernel(t)
	mods, err := resolveModules(k, Wanted)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range mods {
		pos[m.Name] = i
	}
	for _, m := range mods {
		for _, d := range m.Depends {
			if pos[d] >= pos[m.Name] {
				t.Errorf("%s loads before its dependency %s", m.Name, d)
			}
		}
	}
	for _, w := range append(Wanted, "virtio_ring", "virtio", "net_failover", "failover") {
		if _, ok := pos[w]; !ok {
			t.Errorf("module %s missing from %v", w, mods)
		}
	}
}

// testKernel is the Debian guest kernel in the cache, fetched the way
// `ironlab images build` does (apt-get download, dpkg -x) when it is not
// there yet; the tests of this package need the real one.
func testKernel(t *testing.T) Kernel {
	t.Helper()
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg"} {
		labtest.Require(t, tool)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := fetchKernel(ctx, DefaultCacheDir(), t.Logf)
	if err != nil {
		labtest.Missing(t, fmt.Sprintf("the Debian guest kernel %s (%v)", KernelMeta, err), "apt-get update, then ironlab images build")
	}
	return k
}
