// Package configdrive builds and reads OpenStack config drives as Ironic and
// IPA handle them: an ISO 9660 image labelled "config-2" holding
// openstack/<version>/meta_data.json (and user_data, network_data.json,
// vendor_data2.json), sent gzipped and base64-encoded; on the disk it is a
// partition whose filesystem label is config-2.
package configdrive

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/ironlab/ironlab/images/partition"
)

// Label is the filesystem label cloud-init looks for.
const Label = "config-2"

// MaxSize is IPA's limit for a config drive partition (64 MiB).
const MaxSize = 64 << 20

// Versions are the metadata versions openstacksdk's builder writes.
var Versions = []string{"2012-08-10", "latest"}

const isoSector = 2048

// Files lays out a config drive's files as openstacksdk's
// configdrive.populate_directory does: meta_data.json (and the optional
// user_data, network_data.json, vendor_data2.json) under openstack/<v>/ for
// each of Versions.
func Files(metaData map[string]any, userData []byte, networkData, vendorData map[string]any) (map[string][]byte, error) {
	files := map[string][]byte{}
	md, err := json.Marshal(metaData)
	if err != nil {
		return nil, fmt.Errorf("config drive meta_data: %w", err)
	}
	for _, v := range Versions {
		dir := "openstack/" + v + "/"
		files[dir+"meta_data.json"] = md
		if networkData != nil {
			b, err := json.Marshal(networkData)
			if err != nil {
				return nil, fmt.Errorf("config drive network_data: %w", err)
			}
			files[dir+"network_data.json"] = b
		}
		if vendorData != nil {
			b, err := json.Marshal(vendorData)
			if err != nil {
				return nil, fmt.Errorf("config drive vendor_data: %w", err)
			}
			files[dir+"vendor_data2.json"] = b
		}
		if len(userData) > 0 {
			files[dir+"user_data"] = userData
		}
	}
	return files, nil
}

// Encode is what Ironic sends: the image gzipped, then base64.
func Encode(image []byte) (string, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(image); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

// Decode turns what Ironic sent (or a URL served) into the image, as IPA's
// get_configdrive does: base64 then gunzip; content that is not base64 is
// taken as the binary image itself.
func Decode(data []byte) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil {
		if len(data) == 0 {
			return nil, errors.New("config drive is empty")
		}
		return data, nil // not base64: the image itself (a URL's binary content)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("config drive is base64 but not gzipped: %w", err)
	}
	img, err := io.ReadAll(io.LimitReader(zr, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("decompress config drive: %w", err)
	}
	if len(img) > MaxSize {
		return nil, fmt.Errorf("config drive exceeds the maximum of 64 MiB")
	}
	return img, nil
}

// BuildISO makes an ISO 9660 image labelled config-2 holding files (paths
// relative to the root, "/"-separated), with a Joliet tree for the real
// names as genisoimage -J -r -V config-2 does; the primary tree keeps the
// names as they are (genisoimage's -l -allow-lowercase -allow-multidot).
func BuildISO(files map[string][]byte) ([]byte, error) {
	root := &isoDir{name: ""}
	names := make([]string, 0, len(files))
	for p := range files {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		clean := path.Clean(strings.TrimPrefix(p, "/"))
		if clean == "." || strings.HasPrefix(clean, "..") {
			return nil, fmt.Errorf("config drive file %q: not a relative path", p)
		}
		parts := strings.Split(clean, "/")
		d := root
		for _, part := range parts[:len(parts)-1] {
			d = d.sub(part)
		}
		d.files = append(d.files, isoFile{name: parts[len(parts)-1], data: files[p]})
	}
	return buildISO(root)
}

type isoFile struct {
	name string
	data []byte
	lba  uint32
}

type isoDir struct {
	name   string
	parent *isoDir
	dirs   []*isoDir
	files  []isoFile
	lba    [2]uint32 // primary, Joliet
	size   [2]uint32
	number int // in the path table
}

func (d *isoDir) sub(name string) *isoDir {
	for _, c := range d.dirs {
		if c.name == name {
			return c
		}
	}
	c := &isoDir{name: name, parent: d}
	d.dirs = append(d.dirs, c)
	return c
}

// walk lists directories breadth-first, the path table's order.
func (d *isoDir) walk() []*isoDir {
	out := []*isoDir{d}
	for i := 0; i < len(out); i++ {
		out = append(out, out[i].dirs...)
	}
	return out
}

func encName(name string, joliet bool) []byte {
	if !joliet {
		return []byte(name)
	}
	u := utf16.Encode([]rune(name))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.BigEndian.PutUint16(b[2*i:], c)
	}
	return b
}

func dirRecord(name []byte, lba, size uint32, dir bool, t time.Time) []byte {
	n := 33 + len(name)
	if n%2 == 1 {
		n++
	}
	r := make([]byte, n)
	r[0] = byte(n)
	binary.LittleEndian.PutUint32(r[2:], lba)
	binary.BigEndian.PutUint32(r[6:], lba)
	binary.LittleEndian.PutUint32(r[10:], size)
	binary.BigEndian.PutUint32(r[14:], size)
	r[18], r[19], r[20], r[21], r[22], r[23] = byte(t.Year()-1900), byte(t.Month()), byte(t.Day()), byte(t.Hour()), byte(t.Minute()), byte(t.Second())
	if dir {
		r[25] = 2
	}
	binary.LittleEndian.PutUint16(r[28:], 1)
	binary.BigEndian.PutUint16(r[30:], 1)
	r[32] = byte(len(name))
	copy(r[33:], name)
	return r
}

func buildISO(root *isoDir) ([]byte, error) {
	now := time.Now().UTC()
	dirs := root.walk()
	for i, d := range dirs {
		d.number = i + 1
	}
	// Layout: 16 system sectors, PVD, SVD (Joliet), terminator, 4 path
	// tables (one sector each), the directories of both trees, the files.
	next := uint32(16 + 3 + 4)
	dirBytes := func(d *isoDir, joliet bool) []byte {
		var b []byte
		self := dirRecord([]byte{0}, d.lba[idx(joliet)], d.size[idx(joliet)], true, now)
		p := d
		if d.parent != nil {
			p = d.parent
		}
		parent := dirRecord([]byte{1}, p.lba[idx(joliet)], p.size[idx(joliet)], true, now)
		b = append(b, self...)
		b = append(b, parent...)
		type ent struct {
			name string
			rec  func() []byte
		}
		var ents []ent
		for _, c := range d.dirs {
			ents = append(ents, ent{c.name, func() []byte {
				return dirRecord(encName(c.name, joliet), c.lba[idx(joliet)], c.size[idx(joliet)], true, now)
			}})
		}
		for _, f := range d.files {
			name := f.name
			if !joliet {
				name += ";1"
			}
			ents = append(ents, ent{f.name, func() []byte {
				return dirRecord(encName(name, joliet), f.lba, uint32(len(f.data)), false, now)
			}})
		}
		sort.Slice(ents, func(i, j int) bool { return ents[i].name < ents[j].name })
		for _, e := range ents {
			r := e.rec()
			// A record never crosses a sector boundary.
			if len(b)/isoSector != (len(b)+len(r)-1)/isoSector {
				b = append(b, make([]byte, isoSector-len(b)%isoSector)...)
			}
			b = append(b, r...)
		}
		return b
	}
	// Sizes do not depend on LBAs: size pass, then place.
	for _, joliet := range []bool{false, true} {
		for _, d := range dirs {
			n := uint32(len(dirBytes(d, joliet)))
			d.size[idx(joliet)] = (n + isoSector - 1) / isoSector * isoSector
		}
		for _, d := range dirs {
			d.lba[idx(joliet)] = next
			next += d.size[idx(joliet)] / isoSector
		}
	}
	for _, d := range dirs {
		for i := range d.files {
			d.files[i].lba = next
			next += uint32((len(d.files[i].data) + isoSector - 1) / isoSector)
			if len(d.files[i].data) == 0 {
				d.files[i].lba = 0
			}
		}
	}
	img := make([]byte, int(next)*isoSector)
	pathTable := func(joliet, bigEndian bool) []byte {
		var b []byte
		for _, d := range dirs {
			name := encName(d.name, joliet)
			if d.parent == nil {
				name = []byte{0}
			}
			rec := make([]byte, 8+len(name)+len(name)%2)
			rec[0] = byte(len(name))
			parent := 1
			if d.parent != nil {
				parent = d.parent.number
			}
			if bigEndian {
				binary.BigEndian.PutUint32(rec[2:], d.lba[idx(joliet)])
				binary.BigEndian.PutUint16(rec[6:], uint16(parent))
			} else {
				binary.LittleEndian.PutUint32(rec[2:], d.lba[idx(joliet)])
				binary.LittleEndian.PutUint16(rec[6:], uint16(parent))
			}
			copy(rec[8:], name)
			b = append(b, rec...)
		}
		return b
	}
	var ptSize uint32
	for i, pt := range [][]byte{pathTable(false, false), pathTable(false, true), pathTable(true, false), pathTable(true, true)} {
		if len(pt) > isoSector {
			return nil, errors.New("config drive has too many directories")
		}
		copy(img[(19+i)*isoSector:], pt)
		if i == 0 || i == 2 {
			ptSize = uint32(len(pt))
		}
	}
	_ = ptSize
	volDesc := func(typ byte, joliet bool, ptL, ptM uint32) []byte {
		v := make([]byte, isoSector)
		v[0] = typ
		copy(v[1:], "CD001")
		v[6] = 1
		pad := func(off, n int, s string) {
			if joliet {
				for i := 0; i < n; i += 2 {
					binary.BigEndian.PutUint16(v[off+i:], ' ')
				}
				copy(v[off:], encName(s, true))
				return
			}
			copy(v[off:off+n], strings.Repeat(" ", n))
			copy(v[off:], s)
		}
		pad(8, 32, "")
		pad(40, 32, Label)
		binary.LittleEndian.PutUint32(v[80:], next)
		binary.BigEndian.PutUint32(v[84:], next)
		if joliet {
			copy(v[88:], "%/E") // UCS-2 level 3
		}
		binary.LittleEndian.PutUint16(v[120:], 1)
		binary.BigEndian.PutUint16(v[122:], 1)
		binary.LittleEndian.PutUint16(v[124:], 1)
		binary.BigEndian.PutUint16(v[126:], 1)
		binary.LittleEndian.PutUint16(v[128:], isoSector)
		binary.BigEndian.PutUint16(v[130:], isoSector)
		pt := uint32(len(pathTable(joliet, false)))
		binary.LittleEndian.PutUint32(v[132:], pt)
		binary.BigEndian.PutUint32(v[136:], pt)
		binary.LittleEndian.PutUint32(v[140:], ptL)
		binary.BigEndian.PutUint32(v[148:], ptM)
		copy(v[156:], dirRecord([]byte{0}, root.lba[idx(joliet)], root.size[idx(joliet)], true, now))
		pad(190, 128, "")
		pad(318, 128, "ironlab")
		pad(446, 128, "")
		pad(574, 128, "ironlab")
		pad(702, 37, "")
		pad(739, 37, "")
		pad(776, 37, "")
		stamp := now.Format("20060102150405") + "00"
		for _, off := range []int{813, 830} {
			copy(v[off:], stamp)
		}
		for _, off := range []int{847, 864} {
			copy(v[off:], "0000000000000000")
		}
		v[881] = 1
		return v
	}
	copy(img[16*isoSector:], volDesc(1, false, 19, 20))
	copy(img[17*isoSector:], volDesc(2, true, 21, 22))
	term := img[18*isoSector:]
	term[0] = 255
	copy(term[1:], "CD001")
	term[6] = 1
	for _, joliet := range []bool{false, true} {
		for _, d := range dirs {
			copy(img[int(d.lba[idx(joliet)])*isoSector:], dirBytes(d, joliet))
		}
	}
	for _, d := range dirs {
		for _, f := range d.files {
			if len(f.data) > 0 {
				copy(img[int(f.lba)*isoSector:], f.data)
			}
		}
	}
	return img, nil
}

func idx(joliet bool) int {
	if joliet {
		return 1
	}
	return 0
}

// ISO is a read-only ISO 9660 image: the Joliet tree when it has one, else
// the primary tree (";1" version suffixes dropped).
type ISO struct {
	r      io.ReaderAt
	size   int64
	label  string
	root   [2]uint32 // extent, length
	joliet bool
}

// OpenISO reads the volume descriptors of an ISO 9660 image of size bytes.
func OpenISO(r io.ReaderAt, size int64) (*ISO, error) {
	iso := &ISO{r: r, size: size}
	found := false
	for s := int64(16); s < 64; s++ {
		v := make([]byte, isoSector)
		if _, err := r.ReadAt(v, s*isoSector); err != nil {
			return nil, fmt.Errorf("iso9660: read volume descriptor %d: %w", s, err)
		}
		if string(v[1:6]) != "CD001" {
			return nil, fmt.Errorf("iso9660: sector %d is not a volume descriptor", s)
		}
		switch v[0] {
		case 1:
			found = true
			iso.label = strings.TrimRight(string(v[40:72]), " ")
			if !iso.joliet {
				iso.root = [2]uint32{binary.LittleEndian.Uint32(v[156+2:]), binary.LittleEndian.Uint32(v[156+10:])}
			}
		case 2:
			if esc := string(v[88:91]); esc == "%/@" || esc == "%/C" || esc == "%/E" {
				iso.joliet = true
				iso.root = [2]uint32{binary.LittleEndian.Uint32(v[156+2:]), binary.LittleEndian.Uint32(v[156+10:])}
			}
		case 255:
			if !found {
				return nil, errors.New("iso9660: no primary volume descriptor")
			}
			return iso, nil
		}
	}
	return nil, errors.New("iso9660: no volume descriptor set terminator")
}

// Label is the volume identifier (config-2 for a config drive).
func (iso *ISO) Label() string { return iso.label }

// ReadFile reads the file at a "/"-separated path.
func (iso *ISO) ReadFile(p string) ([]byte, error) {
	ext, length := iso.root[0], iso.root[1]
	parts := strings.Split(strings.Trim(p, "/"), "/")
	for i, part := range parts {
		ents, err := iso.readDir(ext, length)
		if err != nil {
			return nil, err
		}
		var hit *isoEntry
		for j := range ents {
			if ents[j].name == part {
				hit = &ents[j]
			}
		}
		if hit == nil {
			return nil, fmt.Errorf("iso9660: %s: no such file", p)
		}
		if i < len(parts)-1 {
			if !hit.dir {
				return nil, fmt.Errorf("iso9660: %s: %s is not a directory", p, part)
			}
			ext, length = hit.extent, hit.length
			continue
		}
		if hit.dir {
			return nil, fmt.Errorf("iso9660: %s is a directory", p)
		}
		if int64(hit.extent)*isoSector+int64(hit.length) > iso.size {
			return nil, fmt.Errorf("iso9660: %s extends beyond the image", p)
		}
		b := make([]byte, hit.length)
		if _, err := iso.r.ReadAt(b, int64(hit.extent)*isoSector); err != nil {
			return nil, fmt.Errorf("iso9660: read %s: %w", p, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("iso9660: %s: no such file", p)
}

type isoEntry struct {
	name           string
	dir            bool
	extent, length uint32
}

func (iso *ISO) readDir(ext, length uint32) ([]isoEntry, error) {
	if length > 1<<20 || int64(ext)*isoSector+int64(length) > iso.size {
		return nil, fmt.Errorf("iso9660: directory at sector %d (%d bytes) is not plausible", ext, length)
	}
	b := make([]byte, length)
	if _, err := iso.r.ReadAt(b, int64(ext)*isoSector); err != nil {
		return nil, fmt.Errorf("iso9660: read directory: %w", err)
	}
	var out []isoEntry
	for off := 0; off < len(b); {
		n := int(b[off])
		if n == 0 { // padding to the next sector
			off = (off/isoSector + 1) * isoSector
			continue
		}
		if n < 34 || off+n > len(b) || 33+int(b[off+32]) > n {
			return nil, errors.New("iso9660: corrupt directory record")
		}
		r := b[off : off+n]
		raw := r[33 : 33+int(r[32])]
		off += n
		if len(raw) == 1 && raw[0] <= 1 {
			continue // . and ..
		}
		var name string
		if iso.joliet {
			u := make([]uint16, len(raw)/2)
			for i := range u {
				u[i] = binary.BigEndian.Uint16(raw[2*i:])
			}
			name = string(utf16.Decode(u))
		} else {
			name = string(raw)
		}
		if i := strings.IndexByte(name, ';'); i >= 0 {
			name = name[:i]
		}
		name = strings.TrimSuffix(name, ".")
		out = append(out, isoEntry{name: name, dir: r[25]&2 != 0,
			extent: binary.LittleEndian.Uint32(r[2:]), length: binary.LittleEndian.Uint32(r[10:])})
	}
	return out, nil
}

// sectionReader reads a partition of a disk.
type sectionReader struct {
	r        io.ReaderAt
	off, end int64
}

func (s sectionReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.end-s.off {
		return 0, io.EOF
	}
	if max := s.end - s.off - off; int64(len(p)) > max {
		n, err := s.r.ReadAt(p[:max], s.off+off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return s.r.ReadAt(p, s.off+off)
}

// Drive is a config drive found on a disk.
type Drive struct {
	Partition partition.Partition
	ISO       *ISO
}

// Find looks for the partition whose filesystem label is config-2 on a disk
// of size bytes, as IPA's get_labelled_partition and cloud-init do.
// Only ISO 9660 config drives are read (what Ironic builds); a vfat one is
// reported as such.
func Find(d io.ReaderAt, size int64) (*Drive, error) {
	t, err := partition.Read(d, size)
	if err != nil {
		return nil, fmt.Errorf("config drive: %w", err)
	}
	var found *Drive
	for _, p := range t.Partitions {
		sr := sectionReader{r: d, off: p.Start, end: p.End()}
		if iso, err := OpenISO(sr, p.Size); err == nil && strings.EqualFold(iso.Label(), Label) {
			if found != nil {
				return nil, fmt.Errorf("config drive: more than one partition labelled %s (%d and %d)", Label, found.Partition.Number, p.Number)
			}
			found = &Drive{Partition: p, ISO: iso}
			continue
		}
		if isVFATLabelled(sr) {
			return nil, fmt.Errorf("config drive: partition %d is a vfat config-2 drive; only ISO 9660 is read", p.Number)
		}
	}
	if found == nil {
		return nil, fmt.Errorf("config drive: no partition labelled %s among %d partitions", Label, len(t.Partitions))
	}
	return found, nil
}

// isVFATLabelled: a FAT boot sector whose volume label is config-2.
func isVFATLabelled(r io.ReaderAt) bool {
	b := make([]byte, 512)
	if _, err := r.ReadAt(b, 0); err != nil || b[510] != 0x55 || b[511] != 0xaa {
		return false
	}
	for _, off := range []int{43, 71} { // FAT12/16, FAT32
		if strings.EqualFold(strings.TrimRight(string(b[off:off+11]), " "), Label) {
			return true
		}
	}
	return false
}

// MetaData reads openstack/latest/meta_data.json.
func (d *Drive) MetaData() (map[string]any, error) {
	b, err := d.ISO.ReadFile("openstack/latest/meta_data.json")
	if err != nil {
		return nil, err
	}
	var md map[string]any
	if err := json.Unmarshal(b, &md); err != nil {
		return nil, fmt.Errorf("config drive meta_data.json: %w", err)
	}
	return md, nil
}
