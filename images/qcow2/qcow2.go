// Package qcow2 reads QEMU's qcow2 images (versions 2 and 3) as the raw disk
// they describe, the way `qemu-img convert -O raw` does: clusters through
// the L1 and L2 tables, unallocated and zero clusters as zeros, and
// zlib-compressed clusters inflated. Backing files, encryption, external
// data files, extended L2 entries and zstd compression are refused with an
// error naming the feature. It is pure Go because the agent ramdisk holds
// nothing but ironlab's binary.
package qcow2

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Magic is the first four bytes of every qcow2 image ("QFI\xfb").
var Magic = []byte{'Q', 'F', 'I', 0xfb}

// ErrUnsupported is wrapped by errors about qcow2 features this reader
// does not implement.
var ErrUnsupported = errors.New("unsupported qcow2 feature")

// IsQcow2 reports whether the first bytes of an image are qcow2's magic.
func IsQcow2(head []byte) bool { return bytes.HasPrefix(head, Magic) }

// Incompatible feature bits (qcow2 v3).
const (
	featDirty        = 1 << 0
	featCorrupt      = 1 << 1
	featExternalData = 1 << 2
	featCompression  = 1 << 3
	featExtendedL2   = 1 << 4
)

const (
	l1OffsetMask = 0x00fffffffffffe00 // bits 9-55
	l2OffsetMask = 0x00fffffffffffe00
	l2Compressed = 1 << 62
	l2ZeroFlag   = 1 << 0
	// Limits that keep a hostile header from making us allocate or loop
	// without end: 2 MiB clusters and 1 EiB virtual disks are qemu's own.
	maxClusterBits = 21
	minClusterBits = 9
	maxVirtualSize = 1 << 60
)

// Image is an open qcow2 image.
type Image struct {
	r           io.ReaderAt
	fileSize    int64
	version     uint32
	clusterBits uint32
	clusterSize int64
	size        int64 // virtual size
	l1          []uint64
	l2Entries   int64
	zstd        bool

	l2Cache    []uint64 // the last L2 table read
	l2CacheOff uint64
}

// Open reads the header and the L1 table of the qcow2 image in r (fileSize
// bytes long).
func Open(r io.ReaderAt, fileSize int64) (*Image, error) {
	var h [104]byte
	n, err := r.ReadAt(h[:], 0)
	if n < 72 {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("qcow2: read header: %w", err)
	}
	if !IsQcow2(h[:]) {
		return nil, fmt.Errorf("qcow2: bad magic % x: not a qcow2 image", h[:4])
	}
	be := binary.BigEndian
	im := &Image{r: r, fileSize: fileSize}
	im.version = be.Uint32(h[4:])
	if im.version != 2 && im.version != 3 {
		return nil, fmt.Errorf("qcow2: version %d: %w (want 2 or 3)", im.version, ErrUnsupported)
	}
	if off, sz := be.Uint64(h[8:]), be.Uint32(h[16:]); off != 0 || sz != 0 {
		return nil, fmt.Errorf("qcow2: the image has a backing file: %w (flatten it with qemu-img convert first)", ErrUnsupported)
	}
	im.clusterBits = be.Uint32(h[20:])
	if im.clusterBits < minClusterBits || im.clusterBits > maxClusterBits {
		return nil, fmt.Errorf("qcow2: cluster_bits %d out of range %d-%d", im.clusterBits, minClusterBits, maxClusterBits)
	}
	im.clusterSize = 1 << im.clusterBits
	im.l2Entries = im.clusterSize / 8
	size := be.Uint64(h[24:])
	if size > maxVirtualSize {
		return nil, fmt.Errorf("qcow2: virtual size %d bytes is beyond qemu's limit", size)
	}
	im.size = int64(size)
	if crypt := be.Uint32(h[32:]); crypt != 0 {
		return nil, fmt.Errorf("qcow2: the image is encrypted (crypt_method %d): %w", crypt, ErrUnsupported)
	}
	l1Size := int64(be.Uint32(h[36:]))
	l1Off := be.Uint64(h[40:])
	if im.version == 3 {
		if n < 104 {
			return nil, fmt.Errorf("qcow2: version 3 header is %d bytes, want at least 104", n)
		}
		incompat := be.Uint64(h[72:])
		switch {
		case incompat&featCorrupt != 0:
			return nil, errors.New("qcow2: the image is marked corrupt (qemu-img check -r all repairs it)")
		case incompat&featExternalData != 0:
			return nil, fmt.Errorf("qcow2: the image keeps its data in an external file: %w", ErrUnsupported)
		case incompat&featExtendedL2 != 0:
			return nil, fmt.Errorf("qcow2: the image has extended L2 entries (subclusters): %w", ErrUnsupported)
		case incompat&^(featDirty|featCompression) != 0:
			return nil, fmt.Errorf("qcow2: unknown incompatible features %#x: %w", incompat&^(featDirty|featCompression|featCorrupt|featExternalData|featExtendedL2), ErrUnsupported)
		}
		im.zstd = incompat&featCompression != 0
	}
	// The L1 table must cover the virtual size and lie inside the file.
	perL1 := im.clusterSize * im.l2Entries
	need := (im.size + perL1 - 1) / perL1
	if l1Size < need {
		return nil, fmt.Errorf("qcow2: L1 table has %d entries, the virtual size %d needs %d", l1Size, im.size, need)
	}
	if l1Off%uint64(im.clusterSize) != 0 {
		return nil, fmt.Errorf("qcow2: L1 table offset %#x is not cluster-aligned", l1Off)
	}
	if l1Off > uint64(fileSize) || need*8 > fileSize-int64(l1Off) {
		return nil, fmt.Errorf("qcow2: L1 table at %#x (%d entries) is beyond the end of the %d-byte file", l1Off, need, fileSize)
	}
	raw := make([]byte, need*8)
	if _, err := r.ReadAt(raw, int64(l1Off)); err != nil {
		return nil, fmt.Errorf("qcow2: read L1 table at %#x: %w", l1Off, err)
	}
	im.l1 = make([]uint64, need)
	for i := range im.l1 {
		im.l1[i] = be.Uint64(raw[i*8:])
	}
	return im, nil
}

// Size is the virtual disk's size in bytes.
func (im *Image) Size() int64 { return im.size }

// Version is the qcow2 version, 2 or 3.
func (im *Image) Version() int { return int(im.version) }

// ClusterSize is the image's cluster size in bytes.
func (im *Image) ClusterSize() int64 { return im.clusterSize }

// cluster kinds
const (
	kindZero = iota // unallocated or a zero cluster: reads as zeros
	kindData        // at host offset
	kindCompressed
)

type clusterRef struct {
	kind  int
	host  int64 // kindData: host offset; kindCompressed: compressed data offset
	csize int64 // kindCompressed: bytes to read
}

// lookup maps virtual cluster index vc to where its data is.
func (im *Image) lookup(vc int64) (clusterRef, error) {
	l1i := vc / im.l2Entries
	l2i := vc % im.l2Entries
	l1e := im.l1[l1i]
	l2Off := l1e & l1OffsetMask
	if l2Off == 0 {
		return clusterRef{kind: kindZero}, nil
	}
	if l2Off%uint64(im.clusterSize) != 0 || l2Off+uint64(im.clusterSize) > uint64(im.fileSize) {
		return clusterRef{}, fmt.Errorf("qcow2: L1 entry %d points to L2 table %#x, outside the file or unaligned", l1i, l2Off)
	}
	if im.l2Cache == nil || im.l2CacheOff != l2Off {
		raw := make([]byte, im.clusterSize)
		if _, err := im.r.ReadAt(raw, int64(l2Off)); err != nil {
			return clusterRef{}, fmt.Errorf("qcow2: read L2 table at %#x: %w", l2Off, err)
		}
		tbl := make([]uint64, im.l2Entries)
		for i := range tbl {
			tbl[i] = binary.BigEndian.Uint64(raw[i*8:])
		}
		im.l2Cache, im.l2CacheOff = tbl, l2Off
	}
	e := im.l2Cache[l2i]
	if e&l2Compressed != 0 {
		x := 62 - (im.clusterBits - 8)
		off := e & (1<<x - 1)
		sectors := (e>>x)&(1<<(im.clusterBits-8)-1) + 1
		csize := int64(sectors)*512 - int64(off&511)
		if off >= uint64(im.fileSize) {
			return clusterRef{}, fmt.Errorf("qcow2: compressed cluster %d at %#x is beyond the end of the file", vc, off)
		}
		csize = min(csize, im.fileSize-int64(off))
		return clusterRef{kind: kindCompressed, host: int64(off), csize: csize}, nil
	}
	if im.version == 3 && e&l2ZeroFlag != 0 {
		return clusterRef{kind: kindZero}, nil
	}
	if e&1 != 0 || e&^(l2OffsetMask|1<<63) != 0 {
		return clusterRef{}, fmt.Errorf("qcow2: L2 entry %#x of cluster %d has reserved bits set", e, vc)
	}
	host := e & l2OffsetMask
	if host == 0 {
		return clusterRef{kind: kindZero}, nil // unallocated, no backing file
	}
	if host%uint64(im.clusterSize) != 0 || host >= uint64(im.fileSize) {
		return clusterRef{}, fmt.Errorf("qcow2: cluster %d at %#x is unaligned or beyond the end of the file", vc, host)
	}
	return clusterRef{kind: kindData, host: int64(host)}, nil
}

// readCluster fills buf (one cluster) with virtual cluster vc.
func (im *Image) readCluster(ref clusterRef, vc int64, buf []byte) error {
	switch ref.kind {
	case kindZero:
		clear(buf)
	case kindData:
		// The last cluster of the file may be short; the rest reads as zeros.
		n, err := im.r.ReadAt(buf, ref.host)
		if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
			return fmt.Errorf("qcow2: read cluster %d at %#x: %w", vc, ref.host, err)
		}
		clear(buf[n:])
	case kindCompressed:
		if im.zstd {
			return fmt.Errorf("qcow2: cluster %d is zstd-compressed: %w (convert with -o compression_type=zlib)", vc, ErrUnsupported)
		}
		comp := make([]byte, ref.csize)
		n, err := im.r.ReadAt(comp, ref.host)
		if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
			return fmt.Errorf("qcow2: read compressed cluster %d at %#x: %w", vc, ref.host, err)
		}
		zr := flate.NewReader(bytes.NewReader(comp[:n]))
		if _, err := io.ReadFull(zr, buf); err != nil {
			return fmt.Errorf("qcow2: inflate cluster %d at %#x: %w", vc, ref.host, err)
		}
	}
	return nil
}

// ReadAt reads the virtual disk.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("qcow2: negative offset %d", off)
	}
	if off >= im.size {
		return 0, io.EOF
	}
	buf := make([]byte, im.clusterSize)
	n := 0
	for n < len(p) && off < im.size {
		vc := off / im.clusterSize
		ref, err := im.lookup(vc)
		if err != nil {
			return n, err
		}
		if err := im.readCluster(ref, vc, buf); err != nil {
			return n, err
		}
		in := off % im.clusterSize
		m := copy(p[n:], buf[in:min(im.clusterSize, in+(im.size-off))])
		n += m
		off += int64(m)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Convert writes the virtual disk onto w from offset 0, as `qemu-img
// convert -O raw` onto a device: data clusters are written, and runs of
// zero clusters go to zero(off, length), which must make the range read
// as zeros (punch a hole, or write zeros).
func (im *Image) Convert(ctx context.Context, w io.WriterAt, zero func(off, length int64) error) error {
	buf := make([]byte, im.clusterSize)
	var zeroStart, zeroLen int64
	flush := func() error {
		if zeroLen == 0 {
			return nil
		}
		err := zero(zeroStart, zeroLen)
		zeroLen = 0
		if err != nil {
			return fmt.Errorf("zero %d bytes at %d: %w", zeroLen, zeroStart, err)
		}
		return nil
	}
	nClusters := (im.size + im.clusterSize - 1) / im.clusterSize
	for vc := int64(0); vc < nClusters; vc++ {
		if vc%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		off := vc * im.clusterSize
		length := min(im.clusterSize, im.size-off)
		ref, err := im.lookup(vc)
		if err != nil {
			return err
		}
		if ref.kind == kindZero {
			if zeroLen == 0 {
				zeroStart = off
			}
			zeroLen += length
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if err := im.readCluster(ref, vc, buf); err != nil {
			return err
		}
		if _, err := w.WriteAt(buf[:length], off); err != nil {
			return fmt.Errorf("write cluster %d at %d: %w", vc, off, err)
		}
	}
	return flush()
}
