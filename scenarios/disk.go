package scenarios

import (
	"fmt"
	"os"

	"github.com/ironlab/ironlab/images"
)

// checkZero reads n bytes at off (off < 0: from the end; n < 0: to the
// end) of a node's disk file and says where the first non-zero byte is,
// if any.
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
	if off < 0 {
		off += st.Size()
	}
	if n < 0 || off+n > st.Size() {
		n = st.Size() - off
	}
	buf := make([]byte, 1<<20)
	for pos := off; pos < off+n; {
		m := min(int64(len(buf)), off+n-pos)
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
	return ""
}

// verifyDisk says whether a node's disk file holds the image, byte for byte.
func verifyDisk(path, id string) string {
	f, err := os.Open(path)
	if err != nil {
		return "open disk: " + err.Error()
	}
	defer f.Close()
	h, err := images.Verify(f)
	if err != nil {
		return err.Error()
	}
	if h.ID != id {
		return fmt.Sprintf("disk holds image %s, not %s", h.ID, id)
	}
	return ""
}
