package agent

// The conductor's config drive builder, as Ironic's build_configdrive (with
// openstacksdk's genisoimage call) makes it. The lab has its own reader
// (images/configdrive); its tests read what this writes.

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"
	"unicode/utf16"
)

const (
	configDriveLabel = "config-2"
	isoSector        = 2048
)

// configDriveVersions are the metadata versions openstacksdk's builder writes.
var configDriveVersions = []string{"2012-08-10", "latest"}

// configDriveFiles lays out a config drive's files as openstacksdk's
// configdrive.populate_directory does: meta_data.json (and the optional
// user_data, network_data.json, vendor_data2.json) under openstack/<v>/ for
// each of Versions.
func configDriveFiles(metaData map[string]any, userData []byte, networkData, vendorData map[string]any) (map[string][]byte, error) {
	files := map[string][]byte{}
	md, err := json.Marshal(metaData)
	if err != nil {
		return nil, fmt.Errorf("config drive meta_data: %w", err)
	}
	for _, v := range configDriveVersions {
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

// encodeConfigDrive is what Ironic sends: the image gzipped, then base64.
func encodeConfigDrive(image []byte) (string, error) {
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

// ConfigDriveISO makes an ISO 9660 image labelled config-2 holding files (paths
// relative to the root, "/"-separated), with a Joliet tree for the real
// names as genisoimage -J -r -V config-2 does; the primary tree keeps the
// names as they are (genisoimage's -l -allow-lowercase -allow-multidot).
func ConfigDriveISO(files map[string][]byte) ([]byte, error) {
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
		pad(40, 32, configDriveLabel)
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
