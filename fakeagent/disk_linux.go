//go:build linux

package fakeagent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

const (
	fallocKeepSize  = 0x01 // FALLOC_FL_KEEP_SIZE
	fallocPunchHole = 0x02 // FALLOC_FL_PUNCH_HOLE
	seekData        = 3    // SEEK_DATA
	seekHole        = 4    // SEEK_HOLE
)

// openDirect opens a block device for O_DIRECT writes; nil if it cannot.
func openDirect(path string) *os.File {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	return f
}

// PunchHole deallocates [off, off+length): the range then reads as zeros.
// Block devices and some filesystems refuse; the caller falls back to
// writing zeros.
func (d *FileDisk) PunchHole(off, length int64) error {
	if err := syscall.Fallocate(int(d.f.Fd()), fallocPunchHole|fallocKeepSize, off, length); err != nil {
		return fmt.Errorf("punch hole in %s at %d+%d: %w", d.f.Name(), off, length, err)
	}
	return nil
}

// NextData finds the next data extent with SEEK_DATA/SEEK_HOLE. Where
// unsupported (block devices report everything as data) it reports the rest
// of the disk as data.
func (d *FileDisk) NextData(off int64) (start, end int64, ok bool, err error) {
	if off >= d.size {
		return 0, 0, false, nil
	}
	fd := int(d.f.Fd())
	start, err = syscall.Seek(fd, off, seekData)
	if errors.Is(err, syscall.ENXIO) {
		return 0, 0, false, nil // no data after off
	}
	if err != nil {
		return off, d.size, true, nil
	}
	end, err = syscall.Seek(fd, start, seekHole)
	if err != nil {
		end = d.size
	}
	if end > d.size {
		end = d.size
	}
	// Leave the file offset somewhere harmless; we only use ReadAt/WriteAt.
	_, _ = syscall.Seek(fd, 0, io.SeekStart)
	return start, end, start < end, nil
}
