//go:build !linux

package fakeagent

import (
	"errors"
	"fmt"
	"os"
)

// directToggle: O_DIRECT is Linux's; elsewhere every write is buffered.
func directToggle(*os.File) *directFlags { return nil }

func setDirect(*os.File, int) error { return errors.ErrUnsupported }

// PunchHole is unsupported here; the caller falls back to writing zeros.
func (d *FileDisk) PunchHole(off, length int64) error {
	return errors.New("punching holes is only supported on Linux")
}

// NextData reports the whole rest of the disk as data.
func (d *FileDisk) NextData(off int64) (start, end int64, ok bool, err error) {
	if off >= d.size {
		return 0, 0, false, nil
	}
	return off, d.size, true, nil
}

// ZeroRange is unsupported here: the caller writes zeros.
func (d *FileDisk) ZeroRange(off, length int64) error {
	return fmt.Errorf("zero %d bytes at %d of %s: %w", length, off, d.f.Name(), errors.ErrUnsupported)
}
