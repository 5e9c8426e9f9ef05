//go:build linux

package fakeagent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An odd size: the tail MiB does not start on a block boundary.
const zeroTestSize = 5<<20 + 1536

// metadataErased is the disk as erase_devices_metadata must leave it: the
// fill everywhere but the first and last MiB, which read zero.
func metadataErased(size int) []byte {
	want := bytes.Repeat([]byte{0xA5}, size)
	clear(want[:mib])
	clear(want[size-mib:])
	return want
}

func filledFileDisk(t *testing.T) (string, *FileDisk) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk")
	fillDisk(t, path, zeroTestSize)
	d, err := OpenFileDisk(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return path, d
}

// allocated is the bytes the file system has allocated to path.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func checkErased(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != zeroTestSize {
		t.Fatalf("size after erase = %d, want %d (unchanged)", len(b), zeroTestSize)
	}
	want := metadataErased(zeroTestSize)
	if i := firstDiff(b, want); i >= 0 {
		t.Fatalf("byte %d after erase = 0x%02x, want 0x%02x (first and last MiB zero, the rest untouched)", i, b[i], want[i])
	}
}

// On a sparse file the metadata erase punches holes: the bytes read zero
// and the blocks are given back, nothing written.
func TestEraseMetadataPunchesHoles(t *testing.T) {
	path, d := filledFileDisk(t)
	if err := d.ZeroRange(0, 4096); errors.Is(err, errors.ErrUnsupported) {
		t.Skipf("the file system of %s cannot punch holes: %v", path, err)
	} else if err != nil {
		t.Fatal(err)
	}
	before := allocated(t, path)
	if err := (&Agent{}).eraseDiskMetadata(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	checkErased(t, path)
	// Less than 2 MiB stays allocated beyond what the erase freed (the
	// partial blocks at the tail's start are zeroed in place).
	if after := allocated(t, path); before-after < 2*mib-8192 {
		t.Errorf("allocated bytes %d -> %d: the erase wrote zeros instead of punching holes", before, after)
	}
}

// noZeroRange is a Disk that is not a file: only ReadAt/WriteAt/Size/Sync.
type noZeroRange struct{ Disk }

// refusingDisk is a file disk whose zeroing the file system refuses (or,
// with err, fails).
type refusingDisk struct {
	*FileDisk
	err   error
	calls int
}

func (r *refusingDisk) ZeroRange(off, length int64) error {
	r.calls++
	return r.err
}

func TestEraseMetadataFallsBackToWritingZeros(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(*FileDisk) Disk
	}{
		{"not a file", func(d *FileDisk) Disk { return noZeroRange{d} }},
		{"EOPNOTSUPP", func(d *FileDisk) Disk { return &refusingDisk{FileDisk: d, err: wrapZeroErr(syscall.EOPNOTSUPP)} }},
		{"ENOTTY", func(d *FileDisk) Disk { return &refusingDisk{FileDisk: d, err: wrapZeroErr(syscall.ENOTTY)} }},
		{"EINVAL", func(d *FileDisk) Disk { return &refusingDisk{FileDisk: d, err: wrapZeroErr(syscall.EINVAL)} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, d := filledFileDisk(t)
			disk := tc.wrap(d)
			before := allocated(t, path)
			if err := (&Agent{}).eraseDiskMetadata(context.Background(), disk); err != nil {
				t.Fatal(err)
			}
			checkErased(t, path)
			if after := allocated(t, path); after < before {
				t.Errorf("allocated bytes %d -> %d: holes were punched on the fallback path", before, after)
			}
			if r, ok := disk.(*refusingDisk); ok && r.calls != 2 {
				t.Errorf("ZeroRange called %d times, want 2 (head, tail): within a region, once it said unsupported it is not asked again", r.calls)
			}
		})
	}
}

// wrapZeroErr is an errno as FileDisk.ZeroRange reports it: "unsupported"
// ones wrap errors.ErrUnsupported.
func wrapZeroErr(errno syscall.Errno) error {
	if !unsupported(errno) {
		return errno
	}
	return errors.Join(errors.ErrUnsupported, errno)
}

// A disk that fails (not "unsupported") fails the erase: no silent fallback
// that would hide an I/O error.
func TestEraseMetadataReportsZeroingFailure(t *testing.T) {
	_, d := filledFileDisk(t)
	disk := &refusingDisk{FileDisk: d, err: wrapZeroErr(syscall.EIO)}
	err := (&Agent{}).eraseDiskMetadata(context.Background(), disk)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("erase on a failing disk = %v, want EIO", err)
	}
}

// The slow-disk fault: zeroing 2 MiB without writing them still takes
// 2 MiB / bps, as it did when every byte was written.
func TestEraseMetadataThrottled(t *testing.T) {
	const bps = 8 << 20
	path, d := filledFileDisk(t)
	a := &Agent{faults: Faults{DiskWriteBytesPerSecond: bps}}
	start := time.Now()
	if err := a.eraseDiskMetadata(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if took, want := time.Since(start), time.Duration(float64(2*mib)/bps*float64(time.Second)); took < want {
		t.Errorf("erase of 2 MiB at %d B/s took %v, want at least %v", bps, took, want)
	}
	checkErased(t, path)

	// Cancelled while throttled: the context's error, promptly.
	ctx, cancel := context.WithCancel(context.Background())
	a.faults.DiskWriteBytesPerSecond = 1 // a byte a second: only cancelling ends it
	time.AfterFunc(50*time.Millisecond, cancel)
	if err := a.eraseDiskMetadata(ctx, d); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled throttled erase = %v, want context.Canceled", err)
	}
}

func TestZeroRangeRefusesBeyondTheDisk(t *testing.T) {
	_, d := filledFileDisk(t)
	for _, r := range [][2]int64{{-1, 10}, {zeroTestSize - 10, 11}, {zeroTestSize + 1, 0}} {
		err := d.ZeroRange(r[0], r[1])
		if err == nil || !strings.Contains(err.Error(), "beyond its size") {
			t.Errorf("ZeroRange(%d, %d) = %v, want a beyond-its-size error", r[0], r[1], err)
		}
	}
}

// A block device (the VM's /dev/vda; here a loop device) is zeroed with
// BLKZEROOUT, and reads as erase_devices_metadata promises.
func TestEraseMetadataBlockDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to attach a loop device")
	}
	backing := filepath.Join(t.TempDir(), "backing")
	fillDisk(t, backing, 4<<20)
	out, err := exec.Command("losetup", "--find", "--show", backing).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device (losetup --find --show: %v %s)", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v %s", dev, err, out)
		}
	})
	d, err := OpenFileDisk(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !d.blockDev {
		t.Fatalf("%s not recognised as a block device", dev)
	}
	if err := d.ZeroRange(0, 4096); err != nil {
		t.Fatalf("BLKZEROOUT on %s: %v", dev, err)
	}
	// Misaligned for the device: unsupported, so the caller writes zeros.
	if err := d.ZeroRange(100, 4096); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("misaligned BLKZEROOUT = %v, want an error wrapping errors.ErrUnsupported", err)
	}
	if _, err := d.WriteAt(bytes.Repeat([]byte{0xA5}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := (&Agent{}).eraseDiskMetadata(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4<<20)
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got, metadataErased(4<<20)); i >= 0 {
		t.Errorf("%s: byte %d after erase = 0x%02x, want the first and last MiB zero and the rest untouched", dev, i, got[i])
	}
}
