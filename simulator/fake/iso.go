package fake

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// A virtual CD that Ironic builds for redfish-virtual-media is an ISO 9660
// image whose boot loader configuration carries the agent's kernel
// command line (ipa-api-url, ipa-agent-token, ...): BIOS images boot
// isolinux (isolinux/isolinux.cfg, an "append" line), UEFI ones GRUB
// (EFI/BOOT/grub.cfg, a "linux" line). The fake machine reads it as the
// firmware and boot loader would and hands it to what it boots.

const isoSector = 2048

// errNotISO says the image is no ISO 9660 file system.
var errNotISO = errors.New("not an ISO 9660 image")

// isoCmdline finds the kernel command line of the image's boot loader.
func isoCmdline(r io.ReaderAt) (string, error) {
	root, err := isoRoot(r)
	if err != nil {
		return "", err
	}
	for _, c := range []struct {
		path []string
		word string
	}{
		{[]string{"isolinux", "isolinux.cfg"}, "append"},
		{[]string{"EFI", "BOOT", "grub.cfg"}, "linux"},
		{[]string{"boot", "grub", "grub.cfg"}, "linux"},
	} {
		data, err := isoRead(r, root, c.path)
		if err != nil {
			continue
		}
		if line, ok := bootLine(data, c.word); ok {
			return line, nil
		}
	}
	return "", fmt.Errorf("no isolinux or GRUB configuration with a kernel command line")
}

// bootLine is the first "append ..." (isolinux) or "linux <kernel> ..."
// (GRUB) line's arguments.
func bootLine(cfg []byte, word string) (string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(cfg))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || !strings.EqualFold(f[0], word) {
			continue
		}
		args := f[1:]
		if word == "linux" && len(args) > 0 {
			args = args[1:] // the kernel's path
		}
		return strings.Join(args, " "), true
	}
	return "", false
}

type isoDir struct{ lba, size uint32 }

// isoRoot reads the primary volume descriptor's root directory.
func isoRoot(r io.ReaderAt) (isoDir, error) {
	buf := make([]byte, isoSector)
	for s := int64(16); s < 32; s++ {
		if _, err := r.ReadAt(buf, s*isoSector); err != nil {
			return isoDir{}, errNotISO
		}
		if string(buf[1:6]) != "CD001" {
			return isoDir{}, errNotISO
		}
		switch buf[0] {
		case 1: // primary volume descriptor
			rec := buf[156 : 156+34]
			return isoDir{lba: binary.LittleEndian.Uint32(rec[2:6]), size: binary.LittleEndian.Uint32(rec[10:14])}, nil
		case 255:
			return isoDir{}, errNotISO
		}
	}
	return isoDir{}, errNotISO
}

// isoRead reads the file at path (names compared without case and without
// the ";1" version, as 8.3 and Rock Ridge writers spell them differently).
func isoRead(r io.ReaderAt, dir isoDir, path []string) ([]byte, error) {
	for i, name := range path {
		d, isDir, err := isoLookup(r, dir, name)
		if err != nil {
			return nil, err
		}
		if i == len(path)-1 {
			if isDir || d.size > 1<<20 {
				return nil, fmt.Errorf("%s: not a small file", strings.Join(path, "/"))
			}
			b := make([]byte, d.size)
			if _, err := r.ReadAt(b, int64(d.lba)*isoSector); err != nil {
				return nil, err
			}
			return b, nil
		}
		if !isDir {
			return nil, fmt.Errorf("%s is not a directory", name)
		}
		dir = d
	}
	return nil, errors.New("empty path")
}

func isoLookup(r io.ReaderAt, dir isoDir, name string) (isoDir, bool, error) {
	if dir.size > 1<<20 {
		return isoDir{}, false, errors.New("directory too large")
	}
	b := make([]byte, dir.size)
	if _, err := r.ReadAt(b, int64(dir.lba)*isoSector); err != nil {
		return isoDir{}, false, err
	}
	for off := 0; off < len(b); {
		n := int(b[off])
		if n == 0 { // records do not cross sectors: go to the next one
			off = (off/isoSector + 1) * isoSector
			continue
		}
		if n < 34 || off+n > len(b) || 33+int(b[off+32]) > n {
			return isoDir{}, false, errors.New("bad directory record")
		}
		rec := b[off : off+n]
		id := string(rec[33 : 33+int(rec[32])])
		id = strings.TrimSuffix(strings.SplitN(id, ";", 2)[0], ".")
		if strings.EqualFold(id, name) {
			return isoDir{lba: binary.LittleEndian.Uint32(rec[2:6]), size: binary.LittleEndian.Uint32(rec[10:14])}, rec[25]&2 != 0, nil
		}
		off += n
	}
	return isoDir{}, false, fmt.Errorf("%s: not found", name)
}
