package qcow2

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Writer geometry: qemu's default 64 KiB clusters and 16-bit refcounts.
const (
	writeClusterBits = 16
	writeClusterSize = 1 << writeClusterBits
	writeL2Entries   = writeClusterSize / 8
	writeRefsPerBlk  = writeClusterSize / 2 // refcount_order 4: 2 bytes a cluster
	copiedFlag       = 1 << 63              // QCOW_OFLAG_COPIED: refcount is exactly 1
)

// Write writes the size-byte raw disk in r to w as a qcow2 version 3 image
// (64 KiB clusters, no compression), the way `qemu-img convert -O qcow2`
// lays one out: every cluster holding a non-zero byte is allocated, all-zero
// clusters are left unallocated (they read as zeros), and the refcounts
// count every cluster of the file once, so `qemu-img check` finds no errors
// or leaks. w is written sequentially, from offset 0. r is read twice: once
// to find the non-zero clusters, once to copy them.
func Write(ctx context.Context, w io.Writer, r io.ReaderAt, size int64) error {
	if size <= 0 || size > maxVirtualSize {
		return fmt.Errorf("qcow2: virtual size %d out of range", size)
	}
	nClusters := (size + writeClusterSize - 1) / writeClusterSize
	buf := make([]byte, writeClusterSize)
	readCluster := func(vc int64) error {
		n, err := r.ReadAt(buf[:min(writeClusterSize, size-vc*writeClusterSize)], vc*writeClusterSize)
		if err != nil && !(errors.Is(err, io.EOF) && int64(n) == min(writeClusterSize, size-vc*writeClusterSize)) {
			return fmt.Errorf("qcow2: read source cluster %d: %w", vc, err)
		}
		clear(buf[n:])
		return nil
	}

	// Pass 1: which clusters hold data.
	data := make([]bool, nClusters)
	var nData int64
	for vc := range nClusters {
		if vc%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := readCluster(vc); err != nil {
			return err
		}
		if !allZero(buf) {
			data[vc] = true
			nData++
		}
	}
	l1Size := (nClusters + writeL2Entries - 1) / writeL2Entries
	hasL2 := make([]bool, l1Size)
	var nL2 int64
	for vc, d := range data {
		if d && !hasL2[int64(vc)/writeL2Entries] {
			hasL2[int64(vc)/writeL2Entries] = true
			nL2++
		}
	}
	l1Clusters := (l1Size*8 + writeClusterSize - 1) / writeClusterSize

	// The refcount structures count themselves: grow them until they cover
	// the whole file.
	var refBlocks, refTable, total int64 = 1, 1, 0
	for {
		total = 1 + refTable + refBlocks + l1Clusters + nL2 + nData
		b := (total + writeRefsPerBlk - 1) / writeRefsPerBlk
		t := (b*8 + writeClusterSize - 1) / writeClusterSize
		if b <= refBlocks && t <= refTable {
			break
		}
		refBlocks, refTable = max(b, refBlocks), max(t, refTable)
	}

	// Layout: header, refcount table, refcount blocks, L1 table, L2 tables, data.
	const c = writeClusterSize
	refTableOff := int64(c)
	refBlocksOff := refTableOff + refTable*c
	l1Off := refBlocksOff + refBlocks*c
	l2Off := l1Off + l1Clusters*c
	dataOff := l2Off + nL2*c

	be := binary.BigEndian
	bw := &seqWriter{w: w}
	hdr := make([]byte, c)
	copy(hdr, Magic)
	be.PutUint32(hdr[4:], 3)
	be.PutUint32(hdr[20:], writeClusterBits)
	be.PutUint64(hdr[24:], uint64(size))
	be.PutUint32(hdr[36:], uint32(l1Size))
	be.PutUint64(hdr[40:], uint64(l1Off))
	be.PutUint64(hdr[48:], uint64(refTableOff))
	be.PutUint32(hdr[56:], uint32(refTable))
	be.PutUint32(hdr[96:], 4)    // refcount_order: 16-bit refcounts
	be.PutUint32(hdr[100:], 104) // header_length; the zeros after it end the (empty) extension list
	bw.write(hdr)

	tbl := make([]byte, refTable*c)
	for i := range refBlocks {
		be.PutUint64(tbl[i*8:], uint64(refBlocksOff+i*c))
	}
	bw.write(tbl)
	blocks := make([]byte, refBlocks*c)
	for i := range total {
		be.PutUint16(blocks[i*2:], 1)
	}
	bw.write(blocks)

	l1 := make([]byte, l1Clusters*c)
	next := l2Off
	for i, h := range hasL2 {
		if h {
			be.PutUint64(l1[i*8:], uint64(next)|copiedFlag)
			next += c
		}
	}
	bw.write(l1)
	host := dataOff
	for i, h := range hasL2 {
		if !h {
			continue
		}
		l2 := make([]byte, c)
		for j := range int64(writeL2Entries) {
			vc := int64(i)*writeL2Entries + j
			if vc < nClusters && data[vc] {
				be.PutUint64(l2[j*8:], uint64(host)|copiedFlag)
				host += c
			}
		}
		bw.write(l2)
	}
	if bw.err != nil {
		return fmt.Errorf("qcow2: write metadata: %w", bw.err)
	}

	// Pass 2: the data clusters, in virtual order.
	for vc, d := range data {
		if vc%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if !d {
			continue
		}
		if err := readCluster(int64(vc)); err != nil {
			return err
		}
		if allZero(buf) {
			return fmt.Errorf("qcow2: source cluster %d changed while it was copied", vc)
		}
		bw.write(buf)
		if bw.err != nil {
			return fmt.Errorf("qcow2: write cluster %d: %w", vc, bw.err)
		}
	}
	if bw.n != total*c {
		return fmt.Errorf("qcow2: wrote %d bytes, the layout says %d", bw.n, total*c)
	}
	return nil
}

var zeroCluster = make([]byte, writeClusterSize)

func allZero(b []byte) bool { return bytes.Equal(b, zeroCluster[:len(b)]) }

// seqWriter keeps the first error and counts bytes.
type seqWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (s *seqWriter) write(p []byte) {
	if s.err != nil {
		return
	}
	n, err := s.w.Write(p)
	s.n += int64(n)
	s.err = err
}
