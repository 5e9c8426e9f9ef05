// Package partition reads and writes the partition tables the agent puts on
// a disk: GPT (UEFI) and MBR (BIOS), laid out as IPA's ironic-lib does with
// parted (MiB-aligned partitions, the table's own sectors reserved), and
// the config drive partition IPA adds at the end of a disk.
package partition

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"

	"github.com/google/uuid"
)

// SectorSize is the logical sector size the lab's disks have.
const SectorSize = 512

const mib = 1 << 20

// Table kinds, as parted names them (and IPA's disk_label).
const (
	GPT = "gpt"
	MBR = "msdos"
)

// GPT partition type GUIDs parted sets.
var (
	TypeESP        = uuid.MustParse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B") // "boot" flag on GPT
	TypeBIOSBoot   = uuid.MustParse("21686148-6449-6E6F-744E-656564454649") // "bios_grub" flag
	TypeLinux      = uuid.MustParse("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
	TypeLinuxSwap  = uuid.MustParse("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F")
	TypeBasicData  = uuid.MustParse("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7") // fat32 without flags
	gptHeaderMagic = []byte("EFI PART")
)

// MBR partition type bytes.
const (
	MBRLinux     = 0x83
	MBRLinuxSwap = 0x82
	MBRFAT32LBA  = 0x0c
	MBRProtectve = 0xee
)

// Partition is one entry of a table. Start and Size are in bytes.
type Partition struct {
	Number int
	Start  int64
	Size   int64
	// GPT: Type and GUID (the PARTUUID), Name. MBR: MBRType, Bootable.
	Type     uuid.UUID
	GUID     uuid.UUID
	Name     string
	MBRType  byte
	Bootable bool
}

// End is the first byte after the partition.
func (p Partition) End() int64 { return p.Start + p.Size }

// Table is a disk's partition table.
type Table struct {
	Kind string // GPT or MBR
	// DiskGUID (GPT) or DiskSignature (MBR) identify the disk.
	DiskGUID      uuid.UUID
	DiskSignature uint32
	Partitions    []Partition
}

// PartUUID is what blkid reports as the partition's PARTUUID: the GPT
// entry's GUID, or "<disk signature>-<nn>" on MBR.
func (t Table) PartUUID(p Partition) string {
	if t.Kind == GPT {
		return p.GUID.String()
	}
	return fmt.Sprintf("%08x-%02x", t.DiskSignature, p.Number)
}

// Disk is what the tables are written to.
type Disk interface {
	io.ReaderAt
	io.WriterAt
}

// ErrNoTable is returned by Read for a disk without a partition table.
var ErrNoTable = errors.New("no partition table")

// Read reads the GPT (preferred, as the kernel does) or the MBR of a disk
// of size bytes.
func Read(d io.ReaderAt, size int64) (Table, error) {
	mbr := make([]byte, SectorSize)
	if _, err := d.ReadAt(mbr, 0); err != nil {
		return Table{}, fmt.Errorf("read MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return Table{}, ErrNoTable
	}
	if mbr[446+4] == MBRProtectve {
		t, err := readGPT(d, size)
		if err == nil {
			return t, nil
		}
		return Table{}, fmt.Errorf("protective MBR but no valid GPT: %w", err)
	}
	t := Table{Kind: MBR, DiskSignature: binary.LittleEndian.Uint32(mbr[440:])}
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i : 446+16*(i+1)]
		typ := e[4]
		if typ == 0 {
			continue
		}
		start := int64(binary.LittleEndian.Uint32(e[8:])) * SectorSize
		n := int64(binary.LittleEndian.Uint32(e[12:])) * SectorSize
		if start+n > size {
			return Table{}, fmt.Errorf("MBR partition %d ends at %d, beyond the %d-byte disk", i+1, start+n, size)
		}
		t.Partitions = append(t.Partitions, Partition{Number: i + 1, Start: start, Size: n, MBRType: typ, Bootable: e[0] == 0x80})
	}
	return t, nil
}

func readGPT(d io.ReaderAt, size int64) (Table, error) {
	h := make([]byte, SectorSize)
	if _, err := d.ReadAt(h, SectorSize); err != nil {
		return Table{}, fmt.Errorf("read GPT header: %w", err)
	}
	if !bytes.Equal(h[:8], gptHeaderMagic) {
		return Table{}, errors.New("no GPT header at LBA 1")
	}
	le := binary.LittleEndian
	hsize := le.Uint32(h[12:])
	if hsize < 92 || hsize > SectorSize {
		return Table{}, fmt.Errorf("GPT header size %d", hsize)
	}
	crc := le.Uint32(h[16:])
	hc := append([]byte(nil), h[:hsize]...)
	le.PutUint32(hc[16:], 0)
	if crc32.ChecksumIEEE(hc) != crc {
		return Table{}, errors.New("GPT header CRC mismatch")
	}
	entriesLBA := int64(le.Uint64(h[72:]))
	count := le.Uint32(h[80:])
	esize := le.Uint32(h[84:])
	if count > 1024 || esize < 128 || esize > 1024 || entriesLBA*SectorSize+int64(count*esize) > size {
		return Table{}, fmt.Errorf("GPT entry array (%d x %d bytes at LBA %d) is not plausible", count, esize, entriesLBA)
	}
	ents := make([]byte, count*esize)
	if _, err := d.ReadAt(ents, entriesLBA*SectorSize); err != nil {
		return Table{}, fmt.Errorf("read GPT entries: %w", err)
	}
	if crc32.ChecksumIEEE(ents) != le.Uint32(h[88:]) {
		return Table{}, errors.New("GPT entry array CRC mismatch")
	}
	t := Table{Kind: GPT, DiskGUID: guidFrom(h[56:72])}
	for i := uint32(0); i < count; i++ {
		e := ents[i*esize : (i+1)*esize]
		typ := guidFrom(e[0:16])
		if typ == uuid.Nil {
			continue
		}
		first, last := int64(le.Uint64(e[32:])), int64(le.Uint64(e[40:]))
		if last < first || (last+1)*SectorSize > size {
			return Table{}, fmt.Errorf("GPT partition %d spans LBA %d-%d, outside the disk", i+1, first, last)
		}
		u16 := make([]uint16, 36)
		for j := range u16 {
			u16[j] = le.Uint16(e[56+2*j:])
		}
		name := strings.TrimRight(string(utf16.Decode(u16)), "\x00")
		t.Partitions = append(t.Partitions, Partition{Number: int(i) + 1, Start: first * SectorSize, Size: (last - first + 1) * SectorSize,
			Type: typ, GUID: guidFrom(e[16:32]), Name: name})
	}
	return t, nil
}

// GPT GUIDs are stored mixed-endian.
func guidFrom(b []byte) uuid.UUID {
	var u uuid.UUID
	u[0], u[1], u[2], u[3] = b[3], b[2], b[1], b[0]
	u[4], u[5] = b[5], b[4]
	u[6], u[7] = b[7], b[6]
	copy(u[8:], b[8:16])
	return u
}

func guidBytes(u uuid.UUID) []byte {
	b := make([]byte, 16)
	b[0], b[1], b[2], b[3] = u[3], u[2], u[1], u[0]
	b[4], b[5] = u[5], u[4]
	b[6], b[7] = u[7], u[6]
	copy(b[8:], u[8:16])
	return b
}

const (
	gptEntries     = 128
	gptEntrySize   = 128
	gptArraySects  = gptEntries * gptEntrySize / SectorSize // 32
	gptFirstUsable = 2 + gptArraySects                      // LBA 34
)

// LastUsable is the last byte a GPT partition may use on a disk of size
// bytes (the backup table takes the last 33 sectors).
func LastUsable(size int64) int64 { return size - (1+gptArraySects)*SectorSize }

// Write writes t onto a disk of size bytes: for GPT a protective MBR, the
// primary header and entries, and the backup ones at the end; for MBR the
// four primary entries (keeping the boot code before them). The partitions
// must not overlap and must fit.
func Write(d Disk, size int64, t Table) error {
	if err := t.check(size); err != nil {
		return err
	}
	if t.Kind == MBR {
		return writeMBR(d, t)
	}
	return writeGPT(d, size, t)
}

func (t Table) check(size int64) error {
	lo, hi := int64(SectorSize), size
	switch t.Kind {
	case GPT:
		lo, hi = gptFirstUsable*SectorSize, LastUsable(size)
		if len(t.Partitions) > gptEntries {
			return fmt.Errorf("%d partitions: GPT holds %d", len(t.Partitions), gptEntries)
		}
	case MBR:
		if len(t.Partitions) > 4 {
			return fmt.Errorf("%d partitions: an MBR holds 4 primary partitions", len(t.Partitions))
		}
		if size > 2<<40 {
			return fmt.Errorf("disk of %d bytes: MBR addresses 2 TiB", size)
		}
	default:
		return fmt.Errorf("partition table kind %q: want %q or %q", t.Kind, GPT, MBR)
	}
	for i, p := range t.Partitions {
		if p.Start%SectorSize != 0 || p.Size%SectorSize != 0 || p.Size <= 0 {
			return fmt.Errorf("partition %d (%d+%d bytes) is not whole sectors", p.Number, p.Start, p.Size)
		}
		if p.Start < lo || p.End() > hi {
			return fmt.Errorf("partition %d (%d MiB at %d MiB) does not fit on the %d MiB disk", p.Number, p.Size/mib, p.Start/mib, size/mib)
		}
		for _, q := range t.Partitions[:i] {
			if p.Start < q.End() && q.Start < p.End() {
				return fmt.Errorf("partitions %d and %d overlap", q.Number, p.Number)
			}
		}
	}
	return nil
}

func writeMBR(d Disk, t Table) error {
	mbr := make([]byte, SectorSize)
	if _, err := d.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("read MBR: %w", err)
	}
	binary.LittleEndian.PutUint32(mbr[440:], t.DiskSignature)
	clear(mbr[444:510])
	for _, p := range t.Partitions {
		if p.Number < 1 || p.Number > 4 {
			return fmt.Errorf("MBR partition number %d: want 1-4", p.Number)
		}
		e := mbr[446+16*(p.Number-1):]
		if p.Bootable {
			e[0] = 0x80
		}
		copy(e[1:4], []byte{0xfe, 0xff, 0xff}) // CHS: beyond 8 GiB, as parted writes for LBA
		e[4] = p.MBRType
		copy(e[5:8], []byte{0xfe, 0xff, 0xff})
		binary.LittleEndian.PutUint32(e[8:], uint32(p.Start/SectorSize))
		binary.LittleEndian.PutUint32(e[12:], uint32(p.Size/SectorSize))
	}
	mbr[510], mbr[511] = 0x55, 0xaa
	if _, err := d.WriteAt(mbr, 0); err != nil {
		return fmt.Errorf("write MBR: %w", err)
	}
	return nil
}

func writeGPT(d Disk, size int64, t Table) error {
	le := binary.LittleEndian
	lastLBA := size/SectorSize - 1
	ents := make([]byte, gptEntries*gptEntrySize)
	for _, p := range t.Partitions {
		if p.Number < 1 || p.Number > gptEntries {
			return fmt.Errorf("GPT partition number %d: want 1-%d", p.Number, gptEntries)
		}
		e := ents[(p.Number-1)*gptEntrySize:]
		copy(e[0:], guidBytes(p.Type))
		copy(e[16:], guidBytes(p.GUID))
		le.PutUint64(e[32:], uint64(p.Start/SectorSize))
		le.PutUint64(e[40:], uint64(p.End()/SectorSize-1))
		for j, c := range utf16.Encode([]rune(p.Name)) {
			if j == 36 {
				break
			}
			le.PutUint16(e[56+2*j:], c)
		}
	}
	arrayCRC := crc32.ChecksumIEEE(ents)
	header := func(self, alt, entries int64) []byte {
		h := make([]byte, SectorSize)
		copy(h, gptHeaderMagic)
		le.PutUint32(h[8:], 0x00010000)
		le.PutUint32(h[12:], 92)
		le.PutUint64(h[24:], uint64(self))
		le.PutUint64(h[32:], uint64(alt))
		le.PutUint64(h[40:], gptFirstUsable)
		le.PutUint64(h[48:], uint64(LastUsable(size)/SectorSize-1))
		copy(h[56:], guidBytes(t.DiskGUID))
		le.PutUint64(h[72:], uint64(entries))
		le.PutUint32(h[80:], gptEntries)
		le.PutUint32(h[84:], gptEntrySize)
		le.PutUint32(h[88:], arrayCRC)
		le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
		return h
	}
	// Protective MBR: one 0xEE partition over the whole disk.
	mbr := make([]byte, SectorSize)
	if _, err := d.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("read MBR: %w", err)
	}
	clear(mbr[440:510])
	e := mbr[446:]
	copy(e[1:4], []byte{0x00, 0x02, 0x00})
	e[4] = MBRProtectve
	copy(e[5:8], []byte{0xff, 0xff, 0xff})
	le.PutUint32(e[8:], 1)
	le.PutUint32(e[12:], uint32(min(lastLBA, 0xffffffff)))
	mbr[510], mbr[511] = 0x55, 0xaa
	backupEntries := lastLBA - gptArraySects
	for _, w := range []struct {
		b   []byte
		off int64
	}{
		{mbr, 0},
		{header(1, lastLBA, 2), SectorSize},
		{ents, 2 * SectorSize},
		{ents, backupEntries * SectorSize},
		{header(lastLBA, 1, backupEntries), lastLBA * SectorSize},
	} {
		if _, err := d.WriteAt(w.b, w.off); err != nil {
			return fmt.Errorf("write GPT at %d: %w", w.off, err)
		}
	}
	return nil
}

// FreeEnd is where a partition ending at the end of the disk's free space
// may end (exclusive): the GPT's last usable byte, or the disk's end.
func (t Table) FreeEnd(size int64) int64 {
	if t.Kind == GPT {
		return LastUsable(size)
	}
	return size
}

// NextNumber is the lowest unused partition number.
func (t Table) NextNumber() int {
	used := map[int]bool{}
	for _, p := range t.Partitions {
		used[p.Number] = true
	}
	n := 1
	for used[n] {
		n++
	}
	return n
}
