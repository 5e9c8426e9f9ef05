package scenarios

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ironlab/ironlab/images"
)

// zeroBufs holds checkZero's read buffers: the disk checks of every node
// run at once, and a fresh MiB per call was most of their garbage.
var zeroBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// checkZero reads n bytes at off (off < 0: from the end; n < 0: to the
// end) of a node's disk file and says where the first non-zero byte is,
// if any. Holes of the sparse file read zero without being read.
func checkZero(path string, off, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "open disk: " + err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	return checkZeroIn(f, st.Size(), off, n)
}

// extentReader is a file checkZeroIn reads: ReadAt, and Seek for
// SEEK_DATA/SEEK_HOLE.
type extentReader interface {
	io.ReaderAt
	io.Seeker
}

func checkZeroIn(f extentReader, size, off, n int64) string {
	if off < 0 {
		off += size
	}
	if n < 0 || off+n > size {
		n = size - off
	}
	bp := zeroBufs.Get().(*[]byte)
	defer zeroBufs.Put(bp)
	buf := *bp
	for pos, end := off, off+n; pos < end; {
		start, stop, ok := nextData(f, pos, end)
		if !ok {
			break
		}
		for pos = start; pos < stop; {
			m := min(int64(len(buf)), stop-pos)
			if _, err := f.ReadAt(buf[:m], pos); err != nil {
				return err.Error()
			}
			for i, b := range buf[:m] {
				if b != 0 {
					return fmt.Sprintf("byte %d is 0x%02x, not zero", pos+int64(i), b)
				}
			}
			pos += m
		}
	}
	return ""
}

// nextData is the first data extent of f within [pos, end), clipped to
// it; ok=false when the rest is hole. Where SEEK_DATA is unsupported the
// whole rest counts as data (and is read).
func nextData(f io.Seeker, pos, end int64) (start, stop int64, ok bool) {
	start, err := f.Seek(pos, unix.SEEK_DATA)
	if errors.Is(err, syscall.ENXIO) {
		return 0, 0, false // only hole after pos
	}
	if err != nil {
		return pos, end, true
	}
	if start >= end {
		return 0, 0, false
	}
	stop, err = f.Seek(start, unix.SEEK_HOLE)
	if err != nil || stop > end {
		stop = end
	}
	return start, stop, start < stop
}

// verifyDisk says whether a node's disk file holds the image, byte for byte.
func verifyDisk(path, id string) string {
	f, err := os.Open(path)
	if err != nil {
		return "open disk: " + err.Error()
	}
	defer f.Close()
	h, err := images.Verify(f)
	// The lab writes images past the page cache (fakeagent.FileDisk); drop
	// what this read brought in, so that the next node's check reuses
	// those pages instead of taking new memory for every disk.
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	if err != nil {
		return err.Error()
	}
	if h.ID != id {
		return fmt.Sprintf("disk holds image %s, not %s", h.ID, id)
	}
	return ""
}
