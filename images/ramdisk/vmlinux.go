package ramdisk

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// ELFKernelName is the decompressed kernel's name next to the bzImage
// ("vmlinuz") in the cache and in a boot folder: a direct kernel boot of
// <dir>/vmlinuz boots <dir>/vmlinux instead when it is there
// (simulator/libvirt).
const ELFKernelName = "vmlinux"

// lz4Legacy is the magic of the LZ4 legacy frame the kernel's LZ4-compressed
// bzImage carries its payload in (what scripts/extract-vmlinux looks for).
var lz4Legacy = []byte{0x02, 0x21, 0x4c, 0x18}

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY: the PVH entry point
// QEMU's direct kernel boot uses for an ELF kernel.
const xenElfnotePhys32Entry = 18

// lz4Available says whether the lz4 tool is on PATH (scripts/vm-deps.sh
// installs it); it is an input of the ramdisk's cache hash.
func lz4Available() bool {
	_, err := exec.LookPath("lz4")
	return err == nil
}

// extractVmlinux writes the ELF vmlinux inside an LZ4-compressed bzImage to
// dst, decompressed with `lz4 -dc`, and checks that it boots via PVH. Under
// TCG QEMU's PVH boot of the ELF skips SeaBIOS' real-mode kernel loader and
// the kernel's self-decompression: ~0.5 s of every agent boot.
func extractVmlinux(ctx context.Context, bzImage, dst string) error {
	img, err := os.ReadFile(bzImage)
	if err != nil {
		return err
	}
	at := bytes.Index(img, lz4Legacy)
	if at < 0 {
		return fmt.Errorf("%s: no LZ4 payload", bzImage)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".vmlinux-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	cmd := exec.CommandContext(ctx, "lz4", "-dc")
	cmd.Stdin = bytes.NewReader(img[at:])
	cmd.Stdout = tmp
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// The payload is followed by the rest of the bzImage, which lz4 reports
	// as an error after writing the whole stream: the ELF check below is
	// what decides.
	runErr := cmd.Run()
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := checkPVH(tmp.Name()); err != nil {
		if runErr != nil {
			err = fmt.Errorf("%w (lz4: %v: %s)", err, runErr, bytes.TrimSpace(stderr.Bytes()))
		}
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// checkPVH opens an ELF kernel and looks for its PVH entry note.
func checkPVH(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("decompressed kernel is not an ELF file: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return fmt.Errorf("read ELF notes of %s: %w", path, err)
		}
		for len(b) >= 12 {
			nameSz, descSz, typ := binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint32(b[8:])
			off := 12 + align4(nameSz)
			end := off + align4(descSz)
			if uint64(end) > uint64(len(b)) {
				break
			}
			if bytes.Equal(bytes.TrimRight(b[12:12+nameSz], "\x00"), []byte("Xen")) && typ == xenElfnotePhys32Entry {
				return nil
			}
			b = b[end:]
		}
	}
	return errors.New("decompressed kernel has no PVH entry (XEN_ELFNOTE_PHYS32_ENTRY)")
}

func align4(n uint32) uint32 { return (n + 3) &^ 3 }
