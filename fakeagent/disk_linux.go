//go:build linux

package fakeagent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	fallocKeepSize  = 0x01 // FALLOC_FL_KEEP_SIZE
	fallocPunchHole = 0x02 // FALLOC_FL_PUNCH_HOLE
	seekData        = 3    // SEEK_DATA
	seekHole        = 4    // SEEK_HOLE
)

// directToggle reads f's status flags and checks the file system takes
// O_DIRECT on it (tmpfs before Linux 6.6 and some FUSE ones refuse): nil
// if it does not, and f's writes stay buffered.
func directToggle(f *os.File) *directFlags {
	var flags int
	var ferr error
	rc, err := f.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) })
	}
	if err != nil || ferr != nil {
		return nil
	}
	t := &directFlags{off: flags &^ unix.O_DIRECT, on: flags | unix.O_DIRECT}
	if setDirect(f, t.on) != nil {
		return nil
	}
	if setDirect(f, t.off) != nil {
		return nil
	}
	return t
}

// setDirect sets f's status flags (F_SETFL) to flags.
func setDirect(f *os.File, flags int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { _, serr = unix.FcntlInt(fd, unix.F_SETFL, flags) }); err != nil {
		return err
	}
	return serr
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

// ZeroRange makes [off, off+length) read as zeros without writing them: on
// a regular file a punched hole (FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE,
// the size stays), on a block device BLKZEROOUT (the device's write-zeroes,
// or the kernel writes its zero page; either way no buffer of ours is
// copied). A file system, device or range that refuses gives an error
// wrapping errors.ErrUnsupported.
func (d *FileDisk) ZeroRange(off, length int64) error {
	if off < 0 || length < 0 || off > d.size || length > d.size-off {
		return fmt.Errorf("zero %d bytes at offset %d of disk %s: beyond its size %d bytes", length, off, d.f.Name(), d.size)
	}
	if length == 0 {
		return nil
	}
	var err error
	how := "punch hole"
	if d.blockDev {
		how = "BLKZEROOUT"
		rng := [2]uint64{uint64(off), uint64(length)}
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&rng))); errno != 0 {
			err = errno
		}
	} else {
		err = unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	}
	if err == nil {
		return nil
	}
	if unsupported(err) {
		return fmt.Errorf("zero %d bytes at %d of %s (%s): %w: %w", length, off, d.f.Name(), how, errors.ErrUnsupported, err)
	}
	return fmt.Errorf("zero %d bytes at %d of %s (%s): %w", length, off, d.f.Name(), how, err)
}

// unsupported says whether a fallocate or ioctl error means "not here"
// (file system, device type, alignment) rather than a failing disk.
func unsupported(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.ENOTTY, unix.EINVAL, unix.ENOSYS, unix.ENODEV} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
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
