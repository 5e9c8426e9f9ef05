package scenarios

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

const diskMiB = 1 << 20

// sparseDisk is an 8 MiB sparse file with two data extents: [2, 3) MiB,
// zero but for one byte at bad (0 = none), and [5, 6) MiB, all zero.
func sparseDisk(t *testing.T, bad int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(8 * diskMiB); err != nil {
		t.Fatal(err)
	}
	for _, at := range []int64{2 * diskMiB, 5 * diskMiB} {
		b := make([]byte, diskMiB)
		if bad >= at && bad < at+diskMiB {
			b[bad-at] = 0x5a
		}
		if _, err := f.WriteAt(b, at); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// hasHoles says whether path's file system reports its holes (SEEK_HOLE
// before the end of the sparse file).
func hasHoles(t *testing.T, path string) bool {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	end, err := f.Seek(0, unix.SEEK_HOLE)
	st, _ := f.Stat()
	return err == nil && end < st.Size()
}

// countingFile counts the bytes read; noSeekData refuses SEEK_DATA and
// SEEK_HOLE as a file system without them does.
type countingFile struct {
	*os.File
	read       int64
	noSeekData bool
}

func (c *countingFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.File.ReadAt(p, off)
	c.read += int64(n)
	return n, err
}

func (c *countingFile) Seek(off int64, whence int) (int64, error) {
	if c.noSeekData && (whence == unix.SEEK_DATA || whence == unix.SEEK_HOLE) {
		return 0, &os.PathError{Op: "seek", Path: c.Name(), Err: syscall.EINVAL}
	}
	return c.File.Seek(off, whence)
}

func check(t *testing.T, path string, noSeekData bool, off, n int64) (string, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	c := &countingFile{File: f, noSeekData: noSeekData}
	return checkZeroIn(c, st.Size(), off, n), c.read
}

func TestCheckZeroNamesTheFirstNonZeroByte(t *testing.T) {
	const bad = 2*diskMiB + 12345
	path := sparseDisk(t, bad)
	holes := hasHoles(t, path)
	want := fmt.Sprintf("byte %d is 0x5a, not zero", bad)
	for _, tc := range []struct {
		name   string
		off, n int64
		want   string
		// the bytes read: with holes reported only the data extents
		// (in 1 MiB reads), without SEEK_DATA everything up to the answer
		wantRead   int64
		noSeekData bool
	}{
		{"whole disk", 0, -1, want, diskMiB, false},
		{"from the bad byte", bad, 10, want, 10, false},
		{"region ending before it", 0, bad, "", bad - 2*diskMiB, false},
		{"region after it, into the second extent", bad + 1, 3 * diskMiB, "", diskMiB, false},
		{"last MiB (hole)", -diskMiB, diskMiB, "", 0, false},
		{"first MiB (hole)", 0, diskMiB, "", 0, false},
		{"whole disk, no SEEK_DATA", 0, -1, want, 3 * diskMiB, true},
		{"first MiB, no SEEK_DATA", 0, diskMiB, "", diskMiB, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, read := check(t, path, tc.noSeekData, tc.off, tc.n)
			if got != tc.want {
				t.Errorf("checkZero(%d, %d) = %q, want %q", tc.off, tc.n, got, tc.want)
			}
			if (holes || tc.noSeekData) && read != tc.wantRead {
				t.Errorf("checkZero(%d, %d) read %d bytes, want %d", tc.off, tc.n, read, tc.wantRead)
			}
		})
	}
	if !holes {
		t.Logf("the file system of %s reports no holes: only the results were checked, not what was read", path)
	}
}

func TestCheckZeroAllHole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 64*diskMiB); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int64{{0, -1}, {0, diskMiB}, {-diskMiB, diskMiB}} {
		got, read := check(t, path, false, r[0], r[1])
		if got != "" {
			t.Errorf("checkZero(%d, %d) of an all-hole disk = %q, want \"\"", r[0], r[1], got)
		}
		if hasHoles(t, path) && read != 0 {
			t.Errorf("checkZero(%d, %d) of an all-hole disk read %d bytes, want none", r[0], r[1], read)
		}
	}
	// The file name API: same answer, and a missing file says so.
	if got := checkZero(path, 0, -1); got != "" {
		t.Errorf("checkZero(path) = %q, want \"\"", got)
	}
	if got := checkZero(filepath.Join(t.TempDir(), "none"), 0, -1); got == "" {
		t.Error("checkZero of a missing file = \"\", want an error")
	}
}

// A data extent beyond what is asked: SEEK_DATA finds it past the region's
// end, and the region is zero without reading.
func TestCheckZeroDataOnlyPastTheRegion(t *testing.T) {
	path := sparseDisk(t, 5*diskMiB+7)
	if got := checkZero(path, 0, 5*diskMiB); got != "" {
		t.Errorf("checkZero(0, 5 MiB) = %q, want \"\" (the bad byte is at 5 MiB + 7)", got)
	}
	if got, want := checkZero(path, -4*diskMiB, -1), fmt.Sprintf("byte %d is 0x5a, not zero", 5*diskMiB+7); got != want {
		t.Errorf("checkZero(last 4 MiB) = %q, want %q", got, want)
	}
}
