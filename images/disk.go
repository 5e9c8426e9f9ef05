// Package images builds what the lab boots and deploys: raw test disk images
// whose first sector identifies them (and, as an x86 boot sector, prints a
// marker on COM1), and the agent ramdisk for the VM backend.
//
// A test disk image is laid out as:
//
//	sector 0, 0x000-0x0FF  boot code (bootCode)
//	sector 0, 0x100-0x17F  the marker line the boot code prints, NUL-terminated
//	sector 0, 0x180-0x1FD  header: magic, payload size, payload sha256, id
//	sector 0, 0x1FE-0x1FF  0x55 0xAA
//	bytes 512..size        payload: deterministic pseudo-random data from the id
//
// So a deployed disk can be verified byte for byte from its own first sector.
package images

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

const (
	SectorSize = 512
	// DefaultSize is a test image's size when a scenario names none.
	DefaultSize = 64 << 20

	msgOff    = 0x100
	msgLen    = 0x80
	headerOff = 0x180
	maxIDLen  = 63
)

var magic = [8]byte{'I', 'R', 'L', 'B', 'I', 'M', 'G', '1'}

// ErrNotAnImage is returned when a disk's first sector carries no image header.
var ErrNotAnImage = errors.New("no ironlab image header in the first sector")

// ErrMismatch is returned when a disk's payload differs from its header's hash.
var ErrMismatch = errors.New("payload does not match the image header")

// Spec says which test image to build.
type Spec struct {
	ID   string // short name, [A-Za-z0-9._-], at most 63 bytes
	Size int64  // total bytes, a multiple of 512, at least 1024
	// Format is how the image is served: "raw" (or "") or "qcow2". The
	// image is built raw either way; that is what a deployed disk holds.
	Format string
}

// Served formats of a Spec.
const (
	FormatRaw   = "raw"
	FormatQcow2 = "qcow2"
)

// Info describes a built image.
type Info struct {
	ID            string `json:"id"`
	Size          int64  `json:"size"`
	PayloadSHA256 string `json:"payload_sha256"`
	// SHA256, SHA512 and MD5 are of the whole file, as an image server
	// publishes them: of the qcow2 file when Format is qcow2. SHA512 is
	// what Glance computes for os_hash_value by default.
	SHA256 string `json:"sha256"`
	SHA512 string `json:"sha512"`
	MD5    string `json:"md5"`
	// Format is the served file's format, "raw" or "qcow2" (empty: raw).
	Format string `json:"format,omitempty"`
}

// Marker is the line the image's boot sector prints on the serial console.
func (i Info) Marker() string {
	return Marker(i.ID, i.PayloadSHA256)
}

// Marker is the console line of an image with this id and payload hash.
func Marker(id, payloadSHA256 string) string {
	p := payloadSHA256
	if len(p) > 12 {
		p = p[:12]
	}
	return fmt.Sprintf("IRONLAB-IMAGE %s %s", id, p)
}

func (s Spec) validate() error {
	if s.ID == "" || len(s.ID) > maxIDLen {
		return fmt.Errorf("image id %q: must be 1 to %d characters", s.ID, maxIDLen)
	}
	for _, r := range s.ID {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-", r)) {
			return fmt.Errorf("image id %q: character %q not allowed (use letters, digits, . _ -)", s.ID, r)
		}
	}
	if s.Size < 2*SectorSize || s.Size%SectorSize != 0 {
		return fmt.Errorf("image %s: size %d must be a multiple of 512 and at least 1024", s.ID, s.Size)
	}
	switch s.Format {
	case "", FormatRaw, FormatQcow2:
	default:
		return fmt.Errorf("image %s: format %q: want raw or qcow2", s.ID, s.Format)
	}
	return nil
}

// payload returns the deterministic pseudo-random payload stream of an image.
func payload(id string, n int64) io.Reader {
	seed := sha256.Sum256([]byte("ironlab-image-payload:" + id))
	return io.LimitReader(chachaReader{rand.NewChaCha8(seed)}, n)
}

type chachaReader struct{ c *rand.ChaCha8 }

func (r chachaReader) Read(p []byte) (int, error) { return r.c.Read(p) }

// Build writes the image described by spec to w and returns its Info.
func Build(w io.Writer, spec Spec) (Info, error) {
	if err := spec.validate(); err != nil {
		return Info{}, err
	}
	n := spec.Size - SectorSize
	ph := sha256.New()
	if _, err := io.Copy(ph, payload(spec.ID, n)); err != nil {
		return Info{}, err
	}
	info := Info{ID: spec.ID, Size: spec.Size, PayloadSHA256: hex.EncodeToString(ph.Sum(nil))}
	sector := FirstSector(info)

	sums := NewFileSums()
	mw := io.MultiWriter(w, sums)
	if _, err := mw.Write(sector); err != nil {
		return Info{}, fmt.Errorf("write image %s: %w", spec.ID, err)
	}
	if _, err := io.CopyBuffer(mw, payload(spec.ID, n), make([]byte, 1<<20)); err != nil {
		return Info{}, fmt.Errorf("write image %s: %w", spec.ID, err)
	}
	sums.Fill(&info)
	return info, nil
}

// FileSums hashes a served file into the sums Info publishes for it
// (SHA256, SHA512, MD5): Build's for a raw image, the image server's for
// the qcow2 file it writes. Write never fails.
type FileSums struct{ sha256, sha512, md5 hash.Hash }

// NewFileSums starts the sums of an empty file.
func NewFileSums() *FileSums {
	return &FileSums{sha256: sha256.New(), sha512: sha512.New(), md5: md5.New()}
}

func (s *FileSums) Write(p []byte) (int, error) {
	s.sha256.Write(p)
	s.sha512.Write(p)
	s.md5.Write(p)
	return len(p), nil
}

// Fill sets info's SHA256, SHA512 and MD5 to the sums of what was written.
func (s *FileSums) Fill(info *Info) {
	info.SHA256 = hex.EncodeToString(s.sha256.Sum(nil))
	info.SHA512 = hex.EncodeToString(s.sha512.Sum(nil))
	info.MD5 = hex.EncodeToString(s.md5.Sum(nil))
}

// FirstSector is the image's sector 0: boot code, marker line and header.
func FirstSector(info Info) []byte {
	s := make([]byte, SectorSize)
	copy(s, bootCode)
	copy(s[msgOff:msgOff+msgLen-1], info.Marker()+"\r\n")
	h := s[headerOff:]
	copy(h, magic[:])
	binary.LittleEndian.PutUint64(h[8:], uint64(info.Size-SectorSize))
	sum, _ := hex.DecodeString(info.PayloadSHA256)
	copy(h[16:48], sum)
	h[48] = byte(len(info.ID))
	copy(h[49:49+maxIDLen], info.ID)
	s[510], s[511] = 0x55, 0xAA
	return s
}

// Header is what an image's first sector says about it.
type Header struct {
	ID            string
	PayloadSize   int64
	PayloadSHA256 string
}

// ReadHeader parses the header from a disk's first sector.
func ReadHeader(r io.ReaderAt) (Header, error) {
	s := make([]byte, SectorSize)
	if _, err := r.ReadAt(s, 0); err != nil {
		return Header{}, fmt.Errorf("read first sector: %w", err)
	}
	return ParseSector(s)
}

// ParseSector parses the header of a first sector.
func ParseSector(s []byte) (Header, error) {
	if len(s) < SectorSize || !bytes.Equal(s[headerOff:headerOff+8], magic[:]) {
		return Header{}, ErrNotAnImage
	}
	h := s[headerOff:]
	idLen := int(h[48])
	if idLen == 0 || idLen > maxIDLen {
		return Header{}, fmt.Errorf("%w: id length %d", ErrNotAnImage, idLen)
	}
	return Header{
		ID:            string(h[49 : 49+idLen]),
		PayloadSize:   int64(binary.LittleEndian.Uint64(h[8:])),
		PayloadSHA256: hex.EncodeToString(h[16:48]),
	}, nil
}

// Verify checks that a disk holds a complete image: it reads the header from
// the first sector, hashes the payload that follows and compares. It returns
// the header; ErrNotAnImage or ErrMismatch (wrapped) when the disk is not.
func Verify(r io.ReaderAt) (Header, error) {
	hd, err := ReadHeader(r)
	if err != nil {
		return hd, err
	}
	h := sha256.New()
	if err := hashRange(h, r, SectorSize, hd.PayloadSize); err != nil {
		return hd, fmt.Errorf("image %s: %w", hd.ID, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != hd.PayloadSHA256 {
		return hd, fmt.Errorf("image %s: %w (payload sha256 %s, header says %s)", hd.ID, ErrMismatch, got, hd.PayloadSHA256)
	}
	return hd, nil
}

// hashBufs holds hashRange's read buffers: every node's disk is verified,
// many at once, and a fresh MiB per verify was garbage the GC chased.
var hashBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

func hashRange(h hash.Hash, r io.ReaderAt, off, n int64) error {
	sr := io.NewSectionReader(r, off, n)
	bp := hashBufs.Get().(*[]byte)
	defer hashBufs.Put(bp)
	got, err := io.CopyBuffer(h, sr, *bp)
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("short disk: %d of %d payload bytes", got, n)
	}
	return nil
}

// BuildFile builds the image at path unless a file there already holds it
// (same id and size, verified), so images are built once and reused.
func BuildFile(path string, spec Spec) (Info, error) {
	if err := spec.validate(); err != nil {
		return Info{}, err
	}
	if info, ok := cached(path, spec); ok {
		return info, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return Info{}, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".image-*")
	if err != nil {
		return Info{}, err
	}
	defer os.Remove(tmp.Name())
	info, err := Build(tmp, spec)
	if err == nil {
		err = tmp.Close()
	} else {
		tmp.Close()
	}
	if err != nil {
		return Info{}, err
	}
	if err := writeSums(path, info); err != nil {
		return Info{}, err
	}
	return info, os.Rename(tmp.Name(), path)
}

// sums are kept next to the image so a cached image is not hashed again.
func writeSums(path string, info Info) error {
	s := fmt.Sprintf("%s %d %s %s %s %s\n", info.ID, info.Size, info.PayloadSHA256, info.SHA256, info.MD5, info.SHA512)
	return os.WriteFile(path+".sums", []byte(s), 0o644)
}

func cached(path string, spec Spec) (Info, bool) {
	b, err := os.ReadFile(path + ".sums")
	if err != nil {
		return Info{}, false
	}
	var info Info
	// Sums from before SHA512 have 5 fields: such an image is built again.
	if _, err := fmt.Sscanf(string(b), "%s %d %s %s %s %s", &info.ID, &info.Size, &info.PayloadSHA256, &info.SHA256, &info.MD5, &info.SHA512); err != nil {
		return Info{}, false
	}
	st, err := os.Stat(path)
	if err != nil || st.Size() != spec.Size || info.ID != spec.ID || info.Size != spec.Size {
		return Info{}, false
	}
	f, err := os.Open(path)
	if err != nil {
		return Info{}, false
	}
	defer f.Close()
	hd, err := ReadHeader(f)
	if err != nil || hd.PayloadSHA256 != info.PayloadSHA256 {
		return Info{}, false
	}
	return info, true
}
