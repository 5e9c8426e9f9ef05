package fakeagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Disk is where the agent writes: a sparse file in the fake backend, the
// block device (/dev/vda) inside a VM.
type Disk interface {
	io.ReaderAt
	io.WriterAt
	// Size is the disk's size in bytes.
	Size() int64
	// Sync flushes written bytes to stable storage.
	Sync() error
}

// holePuncher is implemented by disks that can deallocate a range so that it
// reads as zeros: the emulated secure-erase path.
type holePuncher interface {
	PunchHole(off, length int64) error
}

// zeroer is implemented by disks that can make a range read as zeros
// without writing the zeros: a hole punched in a sparse file, BLKZEROOUT on
// a block device. An error wrapping errors.ErrUnsupported means this disk
// cannot (the file system, the device or the range refuses): write zeros.
type zeroer interface {
	ZeroRange(off, length int64) error
}

// dataFinder is implemented by disks that know where their data lives
// (SEEK_DATA/SEEK_HOLE on sparse files); holes already read as zeros.
type dataFinder interface {
	// NextData returns the next data extent at or after off, or ok=false.
	NextData(off int64) (start, end int64, ok bool, err error)
}

// FileDisk is a Disk backed by a regular file or a block device.
type FileDisk struct {
	f    *os.File
	size int64
	// blockDev: the path is a block device (zeroed with BLKZEROOUT, not
	// a punched hole).
	blockDev bool
	// toggle (nil where the kernel or the file system refuses O_DIRECT)
	// holds f's status flags: an aligned write turns O_DIRECT on around
	// itself (setDirect), so image bytes go to the disk without filling
	// the page cache, as IPA's qemu-img -t directsync writes them. A
	// second descriptor per disk would do the same at twice the
	// descriptors, and a 10,000-node lab runs close to its limit. mu keeps every other read
	// and write off f while O_DIRECT is on; buffered (under mu) is set
	// once a direct write failed in a way the next would too.
	toggle   *directFlags
	mu       sync.Mutex
	buffered bool
}

// directFlags are a file's status flags without and with O_DIRECT.
type directFlags struct{ off, on int }

// DirectAlign is the alignment (memory, offset and length) of the writes
// FileDisk sends with O_DIRECT; a multiple of every logical block size.
const DirectAlign = 4096

// OpenFileDisk opens path (a file or a block device) read-write. Aligned
// writes go with O_DIRECT, toggled on its one descriptor. In a VM under
// TCG, 64 MiB written to the block device through the page cache took
// 0.45-1.6 s of guest CPU (copies, page cache bookkeeping, writeback) and
// 0.12-0.4 s direct, where QEMU copies from the guest's buffer itself. On
// the fake backend's sparse files, 10,000 nodes' images would otherwise
// take 10 GiB of page cache that nothing reads again soon, and on a VM
// whose host backs memory lazily each new page of it costs several times
// what the copy does.
func OpenFileDisk(path string) (*FileDisk, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open disk %s: %w", path, err)
	}
	// Seek to the end works for files and block devices alike; Stat's size
	// is 0 for a block device.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("size of disk %s: %w", path, err)
	}
	d := &FileDisk{f: f, size: size}
	if st, err := f.Stat(); err == nil {
		d.blockDev = st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
	}
	d.toggle = directToggle(f)
	return d, nil
}

// aligned says whether a write of p at off can go through O_DIRECT.
func aligned(p []byte, off int64) bool {
	return len(p) > 0 && len(p)%DirectAlign == 0 && off%DirectAlign == 0 &&
		uintptr(unsafe.Pointer(&p[0]))%DirectAlign == 0
}

// AlignedBuffer is a buffer of n bytes whose start is DirectAlign-aligned.
func AlignedBuffer(n int) []byte {
	b := make([]byte, n+DirectAlign)
	skip := (DirectAlign - int(uintptr(unsafe.Pointer(&b[0]))%DirectAlign)) % DirectAlign
	return b[skip : skip+n : skip+n]
}

// alignedMiBs holds DirectAlign-aligned 1 MiB buffers for the image
// writes (download, copyFile): one per write, every node writing at once.
var alignedMiBs = sync.Pool{New: func() any { b := AlignedBuffer(mib); return &b }}

// alignedMiB is a pooled aligned 1 MiB buffer; give it back with
// alignedMiBs.Put(p) once nothing holds buf any more (the writes through
// FileDisk and the hashes are synchronous).
func alignedMiB() (buf []byte, p *[]byte) {
	p = alignedMiBs.Get().(*[]byte)
	return *p, p
}

// Name is the path the disk was opened from.
func (d *FileDisk) Name() string { return d.f.Name() }

// ReadAt reads from the disk.
func (d *FileDisk) ReadAt(p []byte, off int64) (int, error) {
	if d.toggle != nil {
		d.mu.Lock()
		defer d.mu.Unlock()
	}
	return d.f.ReadAt(p, off)
}

// WriteAt writes to the disk; writes past the end fail rather than grow a file.
func (d *FileDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > d.size || int64(len(p)) > d.size-off { // no off+len: it may overflow
		return 0, fmt.Errorf("write %d bytes at offset %d of disk %s: beyond its size %d bytes", len(p), off, d.f.Name(), d.size)
	}
	if d.toggle == nil {
		return d.f.WriteAt(p, off)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.buffered || !aligned(p, off) || setDirect(d.f, d.toggle.on) != nil {
		return d.f.WriteAt(p, off)
	}
	n, err := d.f.WriteAt(p, off)
	if rerr := setDirect(d.f, d.toggle.off); rerr != nil {
		// Unaligned I/O may fail from now on: a disk error, said as one.
		d.buffered = true
		if err == nil {
			err = fmt.Errorf("turn O_DIRECT off again on disk %s: %w", d.f.Name(), rerr)
		}
		return n, err
	}
	if errors.Is(err, syscall.EINVAL) {
		// A file system that took the flag but not this write (a larger
		// block size, a FUSE one): buffered from now on.
		d.buffered = true
		return d.f.WriteAt(p, off)
	}
	return n, err
}

// Size is the disk's size in bytes.
func (d *FileDisk) Size() int64 { return d.size }

// Sync flushes the disk: the page cache's writes and, for a block device,
// its write cache, which holds the direct writes too (fsync of a block
// device ends in a cache flush).
func (d *FileDisk) Sync() error { return d.f.Sync() }

// Close closes the disk.
func (d *FileDisk) Close() error { return d.f.Close() }

// throttledWriterAt limits the write rate to bps bytes per second (the slow
// disk fault), sleeping after each write by the time it "should" have taken.
type throttledWriterAt struct {
	ctx   context.Context
	w     io.WriterAt
	bps   func() int64
	start time.Time
	done  int64
}

func (t *throttledWriterAt) WriteAt(p []byte, off int64) (int, error) {
	n, err := t.w.WriteAt(p, off)
	if err != nil {
		return n, err
	}
	return n, t.account(int64(n))
}

// account counts n more bytes as written (by WriteAt, or zeroed without a
// write) and sleeps until a disk of bps bytes per second would be done.
func (t *throttledWriterAt) account(n int64) error {
	bps := t.bps()
	if bps <= 0 {
		return nil
	}
	if t.start.IsZero() {
		t.start = time.Now()
	}
	t.done += n
	due := t.start.Add(time.Duration(float64(t.done) / float64(bps) * float64(time.Second)))
	if wait := time.Until(due); wait > 0 {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-t.ctx.Done():
			return t.ctx.Err()
		case <-timer.C:
		}
	}
	return nil
}
