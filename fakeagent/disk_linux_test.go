//go:build linux

package fakeagent

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A regular-file disk writes aligned chunks (the image) with O_DIRECT, so
// they do not stay in the page cache, and everything else buffered; what
// it reads back is what was written either way, and O_DIRECT is off again
// between the writes.
func TestFileDiskWritesImagesPastThePageCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 16<<20); err != nil {
		t.Fatal(err)
	}
	d, err := OpenFileDisk(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.toggle == nil {
		t.Skipf("the file system of %s refuses O_DIRECT: its writes stay buffered", path)
	}
	image := AlignedBuffer(8 << 20)
	for i := range image {
		image[i] = byte(i*7 + i>>12)
	}
	for off := 0; off < len(image); off += 1 << 20 {
		if _, err := d.WriteAt(image[off:off+1<<20], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	tail := []byte("an unaligned write, buffered")
	if _, err := d.WriteAt(tail, 9<<20+3); err != nil {
		t.Fatal(err)
	}
	if got := directBit(t, d.f); got {
		t.Error("O_DIRECT still on after the writes: an unaligned read would fail")
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := residentPages(t, path, 8<<20); n > 0 {
		t.Errorf("%d of 2048 pages of the aligned writes are in the page cache, want none", n)
	}
	got := make([]byte, len(image))
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, image) {
		t.Error("the aligned writes read back different")
	}
	got = make([]byte, len(tail))
	if _, err := d.ReadAt(got, 9<<20+3); err != nil || !bytes.Equal(got, tail) {
		t.Errorf("the unaligned write reads back %q (%v), want %q", got, err, tail)
	}
}

// directBit reads whether f's descriptor has O_DIRECT, from its fdinfo.
func directBit(t *testing.T, f *os.File) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			if err != nil {
				t.Fatal(err)
			}
			return flags&unix.O_DIRECT != 0
		}
	}
	t.Fatal("no flags in fdinfo")
	return false
}

// residentPages counts the pages of path's first n bytes in the page cache.
func residentPages(t *testing.T, path string, n int) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (n+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal("mincore:", errno)
	}
	c := 0
	for _, v := range vec {
		c += int(v & 1)
	}
	return c
}
