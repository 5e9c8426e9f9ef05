package qcow2

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

// memDisk is a WriterAt that records what was zeroed.
type memDisk struct {
	b      []byte
	zeroed int64
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > int64(len(m.b)) {
		return 0, errors.New("write beyond the disk")
	}
	return copy(m.b[off:], p), nil
}

func (m *memDisk) zero(off, n int64) error {
	clear(m.b[off : off+n])
	m.zeroed += n
	return nil
}

// rawSource is a raw disk with data, holes and zero runs in odd places.
func rawSource(t *testing.T, path string, size int64) []byte {
	t.Helper()
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for _, run := range []struct{ off, n int64 }{{0, 4096}, {70000, 300}, {1 << 20, 200000}, {size - 5000, 5000}} {
		for i := run.off; i < run.off+run.n; i++ {
			b[i] = byte(r.Uint32())
		}
	}
	// A compressible run as well, so -c really compresses something.
	copy(b[3<<20:], bytes.Repeat([]byte("ironlab qcow2 "), 10000))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func convertWithGo(t *testing.T, path string, diskSize int64) (*memDisk, *Image) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // the Image reads it on
	st, _ := f.Stat()
	im, err := Open(f, st.Size())
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	// The target starts dirty: unallocated clusters must still read as zero.
	d := &memDisk{b: bytes.Repeat([]byte{0xEE}, int(diskSize))}
	if err := im.Convert(context.Background(), d, d.zero); err != nil {
		t.Fatalf("convert %s: %v", path, err)
	}
	return d, im
}

// TestConvertEqualsQemuImg: images made by qemu-img (v2, v3, several
// cluster sizes, compressed, with zero clusters) convert to exactly what
// `qemu-img convert -O raw` writes.
func TestConvertEqualsQemuImg(t *testing.T) {
	qemuImg := labtest.Require(t, "qemu-img")
	dir := t.TempDir()
	const size = 5<<20 + 3*512 // not a multiple of any cluster size
	src := filepath.Join(dir, "src.raw")
	rawSource(t, src, size)
	cases := map[string][]string{
		"v3 64k":             {"-o", "compat=1.1"},
		"v2 64k":             {"-o", "compat=0.10"},
		"v3 4k clusters":     {"-o", "compat=1.1,cluster_size=4096"},
		"v3 512b clusters":   {"-o", "compat=1.1,cluster_size=512"},
		"v3 2M clusters":     {"-o", "compat=1.1,cluster_size=2M"},
		"v3 compressed zlib": {"-c", "-o", "compat=1.1"},
		"v2 compressed":      {"-c", "-o", "compat=0.10"},
		"v3 preallocated":    {"-o", "compat=1.1,preallocation=metadata"},
	}
	for name, opts := range cases {
		t.Run(name, func(t *testing.T) {
			img := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".qcow2")
			run(t, qemuImg, append(append([]string{"convert", "-f", "raw", "-O", "qcow2"}, opts...), src, img)...)
			want := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".raw")
			run(t, qemuImg, "convert", "-f", "qcow2", "-O", "raw", img, want)
			wantB, _ := os.ReadFile(want)
			d, im := convertWithGo(t, img, size+1<<20)
			if im.Size() != size || int64(len(wantB)) != size {
				t.Fatalf("virtual size %d, qemu-img's raw %d bytes, want %d", im.Size(), len(wantB), size)
			}
			if i := firstDiff(d.b[:size], wantB); i >= 0 {
				t.Fatalf("byte %d differs from qemu-img convert -O raw: %#x, want %#x", i, d.b[i], wantB[i])
			}
			if !bytes.Equal(d.b[size:], bytes.Repeat([]byte{0xEE}, 1<<20)) {
				t.Error("the disk past the virtual size was touched")
			}
			// ReadAt agrees with Convert at an unaligned offset.
			got := make([]byte, 100000)
			if _, err := im.ReadAt(got, 1<<20-777); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, wantB[1<<20-777:1<<20-777+100000]) {
				t.Error("ReadAt at an unaligned offset differs from qemu-img's raw")
			}
		})
	}

	t.Run("v3 zero clusters over data", func(t *testing.T) {
		// qemu-io comes in qemu-utils with qemu-img.
		qemuIO := filepath.Join(filepath.Dir(qemuImg), "qemu-io")
		if _, err := os.Stat(qemuIO); err != nil {
			t.Fatalf("qemu-io is not next to %s: %v", qemuImg, err)
		}
		img := filepath.Join(dir, "zero.qcow2")
		run(t, qemuImg, "convert", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", src, img)
		// write -z leaves zero-flagged L2 entries over allocated clusters.
		run(t, qemuIO, "-f", "qcow2", "-c", "write -z 0 65536", "-c", "write -z 1048576 131072", img)
		want := filepath.Join(dir, "zero.raw")
		run(t, qemuImg, "convert", "-f", "qcow2", "-O", "raw", img, want)
		wantB, _ := os.ReadFile(want)
		d, _ := convertWithGo(t, img, size)
		if i := firstDiff(d.b, wantB); i >= 0 {
			t.Fatalf("byte %d differs from qemu-img convert -O raw", i)
		}
		if d.zeroed < 65536+131072 {
			t.Errorf("%d bytes zeroed, want at least the zero clusters", d.zeroed)
		}
	})

	t.Run("empty image", func(t *testing.T) {
		img := filepath.Join(dir, "empty.qcow2")
		run(t, qemuImg, "create", "-f", "qcow2", img, "3M")
		d, _ := convertWithGo(t, img, 3<<20)
		if !bytes.Equal(d.b, make([]byte, 3<<20)) || d.zeroed != 3<<20 {
			t.Errorf("an empty image must zero the whole virtual disk (zeroed %d)", d.zeroed)
		}
	})

	t.Run("backing file refused", func(t *testing.T) {
		base := filepath.Join(dir, "base.qcow2")
		run(t, qemuImg, "create", "-f", "qcow2", base, "1M")
		over := filepath.Join(dir, "over.qcow2")
		run(t, qemuImg, "create", "-f", "qcow2", "-F", "qcow2", "-b", base, over)
		openErr(t, over, "backing file")
	})

	t.Run("zstd refused", func(t *testing.T) {
		img := filepath.Join(dir, "zstd.qcow2")
		out, err := exec.Command(qemuImg, "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1,compression_type=zstd", src, img).CombinedOutput()
		if err != nil {
			t.Skipf("this qemu-img cannot write zstd: %s", out)
		}
		f, _ := os.Open(img)
		defer f.Close()
		st, _ := f.Stat()
		im, err := Open(f, st.Size())
		if err != nil {
			t.Fatal(err)
		}
		d := &memDisk{b: make([]byte, size)}
		err = im.Convert(context.Background(), d, d.zero)
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "zstd") {
			t.Errorf("convert zstd image: err = %v, want ErrUnsupported naming zstd", err)
		}
	})
}

func openErr(t *testing.T, path, want string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	_, err = Open(f, st.Size())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Open(%s) err = %v, want one about %q", filepath.Base(path), err, want)
	}
}

func firstDiff(a, b []byte) int {
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// header builds a minimal qcow2 v3 header for the refusal cases; patch
// changes it.
func header(patch func(h []byte)) []byte {
	h := make([]byte, 3*65536)
	be := binary.BigEndian
	copy(h, Magic)
	be.PutUint32(h[4:], 3)
	be.PutUint32(h[20:], 16)      // 64 KiB clusters
	be.PutUint64(h[24:], 1<<20)   // 1 MiB virtual
	be.PutUint32(h[36:], 1)       // l1_size
	be.PutUint64(h[40:], 65536)   // l1 at cluster 1
	be.PutUint64(h[48:], 2*65536) // refcount table
	be.PutUint32(h[100:], 104)
	if patch != nil {
		patch(h)
	}
	return h
}

func TestOpenRefusesClearly(t *testing.T) {
	be := binary.BigEndian
	for name, tc := range map[string]struct {
		img  []byte
		want string
	}{
		"not qcow2":           {[]byte(strings.Repeat("x", 200)), "not a qcow2"},
		"short":               {Magic, "header"},
		"version 4":           {header(func(h []byte) { be.PutUint32(h[4:], 4) }), "version 4"},
		"encrypted":           {header(func(h []byte) { be.PutUint32(h[32:], 2) }), "encrypted"},
		"corrupt":             {header(func(h []byte) { be.PutUint64(h[72:], featCorrupt) }), "corrupt"},
		"external data":       {header(func(h []byte) { be.PutUint64(h[72:], featExternalData) }), "external"},
		"extended L2":         {header(func(h []byte) { be.PutUint64(h[72:], featExtendedL2) }), "extended L2"},
		"unknown feature":     {header(func(h []byte) { be.PutUint64(h[72:], 1<<40) }), "unknown incompatible"},
		"cluster bits":        {header(func(h []byte) { be.PutUint32(h[20:], 40) }), "cluster_bits"},
		"L1 too small":        {header(func(h []byte) { be.PutUint64(h[24:], 1<<40) }), "L1 table has"},
		"L1 beyond file":      {header(func(h []byte) { be.PutUint64(h[40:], 1<<30) }), "beyond the end"},
		"L1 unaligned":        {header(func(h []byte) { be.PutUint64(h[40:], 65537) }), "not cluster-aligned"},
		"virtual size absurd": {header(func(h []byte) { be.PutUint64(h[24:], 1<<62) }), "virtual size"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Open(bytes.NewReader(tc.img), int64(len(tc.img)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one about %q", err, tc.want)
			}
		})
	}
}

func TestConvertRefusesBadTables(t *testing.T) {
	be := binary.BigEndian
	img := header(func(h []byte) {
		be.PutUint64(h[65536:], 1<<30) // L1[0] -> an L2 table beyond the file
	})
	im, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	d := &memDisk{b: make([]byte, 1<<20)}
	if err := im.Convert(context.Background(), d, d.zero); err == nil || !strings.Contains(err.Error(), "L2 table") {
		t.Errorf("err = %v, want one about the L2 table", err)
	}
	if _, err := im.ReadAt(make([]byte, 10), 0); err == nil {
		t.Error("ReadAt through a bad L1 entry succeeded")
	}
	if _, err := im.ReadAt(make([]byte, 10), 1<<20); err != io.EOF {
		t.Errorf("ReadAt at the end: %v, want EOF", err)
	}
}
