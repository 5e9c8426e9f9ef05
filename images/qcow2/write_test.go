package qcow2

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

// writeImage writes src (a raw disk) as qcow2 to path.
func writeImage(t *testing.T, path string, src []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(context.Background(), f, bytes.NewReader(src), int64(len(src))); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestWriteReadBack: the written image reads back as the source, zero
// clusters take no room in the file, and a cancelled write stops.
func TestWriteReadBack(t *testing.T) {
	dir := t.TempDir()
	const size = 5<<20 + 3*512 // a short last cluster
	src := rawSource(t, filepath.Join(dir, "src.raw"), size)
	img := filepath.Join(dir, "w.qcow2")
	writeImage(t, img, src)
	d, im := convertWithGo(t, img, size)
	if im.Size() != size || im.Version() != 3 || im.ClusterSize() != 64<<10 {
		t.Fatalf("size %d version %d cluster %d, want %d 3 65536", im.Size(), im.Version(), im.ClusterSize(), size)
	}
	if i := firstDiff(d.b, src); i >= 0 {
		t.Fatalf("byte %d read back as %#x, want %#x", i, d.b[i], src[i])
	}
	var dataClusters int64
	for off := int64(0); off < size; off += 64 << 10 {
		if !allZero(src[off:min(size, off+64<<10)]) {
			dataClusters++
		}
	}
	st, _ := os.Stat(img)
	// header, refcount table, one refcount block, L1, one L2, data.
	if want := (5 + dataClusters) * 64 << 10; st.Size() != want {
		t.Errorf("file is %d bytes, want %d (%d data clusters + 5 metadata): zero clusters must stay unallocated", st.Size(), want, dataClusters)
	}
	if d.zeroed == 0 {
		t.Error("no cluster was left unallocated")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Write(ctx, &bytes.Buffer{}, bytes.NewReader(src), size); err == nil {
		t.Error("a cancelled write succeeded")
	}
	if err := Write(context.Background(), &bytes.Buffer{}, bytes.NewReader(src), 0); err == nil {
		t.Error("a zero-size image was written")
	}
}

// TestWriteQemuImgAgrees: qemu-img finds no errors or leaks in the image
// and converts it back to the source, an all-zero disk included.
func TestWriteQemuImgAgrees(t *testing.T) {
	qemuImg := labtest.Require(t, "qemu-img")
	dir := t.TempDir()
	cases := map[string][]byte{
		"mixed":    rawSource(t, filepath.Join(dir, "src.raw"), 5<<20+3*512),
		"all zero": make([]byte, 1<<20),
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			img := filepath.Join(dir, name+".qcow2")
			writeImage(t, img, src)
			out, err := exec.Command(qemuImg, "check", "--output=json", "-f", "qcow2", img).CombinedOutput()
			if err != nil {
				t.Fatalf("qemu-img check: %v\n%s", err, out)
			}
			var chk struct {
				C int `json:"corruptions"`
				L int `json:"leaks"`
				E int `json:"check-errors"`
			}
			if err := json.Unmarshal(out, &chk); err != nil {
				t.Fatalf("qemu-img check output: %v\n%s", err, out)
			}
			if chk.C != 0 || chk.L != 0 || chk.E != 0 {
				t.Fatalf("qemu-img check: %d corruptions, %d leaks, %d errors\n%s", chk.C, chk.L, chk.E, out)
			}
			raw := filepath.Join(dir, name+".raw")
			run(t, qemuImg, "convert", "-f", "qcow2", "-O", "raw", img, raw)
			got, err := os.ReadFile(raw)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(src) {
				t.Fatalf("qemu-img convert -O raw: %d bytes, want %d", len(got), len(src))
			}
			if i := firstDiff(got, src); i >= 0 {
				t.Fatalf("qemu-img convert -O raw: byte %d is %#x, want %#x", i, got[i], src[i])
			}
		})
	}
}
