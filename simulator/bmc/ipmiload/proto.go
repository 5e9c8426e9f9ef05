// Package ipmiload is a lean IPMI 2.0 (RMCP+, ipmitool's "lanplus") client
// made to load a BMC, not to manage one: cipher suites 3 and 17 as ipmitool
// uses them (RAKP-HMAC-SHA1 or -SHA256, HMAC-SHA1-96 or HMAC-SHA256-128
// integrity, AES-CBC-128 with a random IV per packet), every answer checked
// (RAKP 2 and 4 codes, integrity, completion code). It spends as little CPU
// as it can per packet, so that a load measures the BMC rather than the
// client: packets are built in place, hash and cipher state is kept per
// session, IVs come from a ChaCha8 stream seeded from crypto/rand, and the
// load engine (Run) drives many sessions over a few sockets from one
// goroutine per socket, without a goroutine or a channel per request.
//
// Client is the same protocol one request at a time, for tests and for
// checking the engine's packets against a real peer.
package ipmiload

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math/rand/v2"

	"github.com/bougou/go-ipmi/pkg/protocol"
	"github.com/bougou/go-ipmi/pkg/types"
)

// Suite is an RMCP+ cipher suite the client speaks.
type Suite uint8

// The cipher suites of ipmitool -C 3 and -C 17.
const (
	Suite3  Suite = 3  // RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128
	Suite17 Suite = 17 // RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128
)

// algs are a suite's algorithm numbers and lengths (IPMI 2.0 tables 13-17..19).
type algs struct {
	auth, integrity, conf uint8
	newHash               func() hash.Hash
	icvLen                int // RAKP 4 integrity check value
	authCodeLen           int // per-packet integrity code
}

func (s Suite) algs() (algs, error) {
	switch s {
	case Suite3:
		return algs{auth: 1, integrity: 1, conf: 1, newHash: sha1.New, icvLen: 12, authCodeLen: 12}, nil
	case Suite17:
		return algs{auth: 3, integrity: 4, conf: 1, newHash: sha256.New, icvLen: 16, authCodeLen: 16}, nil
	}
	return algs{}, fmt.Errorf("cipher suite %d: only 3 and 17 are spoken", s)
}

// RMCP+ payload types (IPMI 2.0 table 13-16).
const (
	ptIPMI        = 0x00
	ptOpenReq     = 0x10
	ptOpenResp    = 0x11
	ptRAKP1       = 0x12
	ptRAKP2       = 0x13
	ptRAKP3       = 0x14
	ptRAKP4       = 0x15
	flagEncrypted = 0x80
	flagAuth      = 0x40
)

// Commands the load sends.
const (
	netFnApp     = 0x06
	netFnChassis = 0x00

	cmdGetChannelAuthCaps = 0x38
	cmdSetSessionPriv     = 0x3b
	cmdCloseSession       = 0x3c
	cmdGetChassisStatus   = 0x01
	cmdChassisControl     = 0x02

	privAdmin      = 0x04
	roleNameLookup = 0x10 // RAKP 1: look the user up by name only, as ipmitool does
)

// Errors a caller may test for.
var (
	ErrAuth     = errors.New("BMC refused the credentials")
	ErrProtocol = errors.New("unexpected answer")
	ErrTimeout  = errors.New("no answer")
)

func protoErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, a...))
}

// creds are one user's name and password key, with the RAKP HMAC keyed by
// it (Kuid: the password zero-padded to 20 bytes) ready to reuse.
type creds struct {
	user string
	kuid hash.Hash
	a    algs
}

func newCreds(user, pass string, s Suite) (*creds, error) {
	a, err := s.algs()
	if err != nil {
		return nil, err
	}
	if user == "" || len(user) > 16 {
		return nil, fmt.Errorf("user name must be 1 to 16 bytes, got %q", user)
	}
	if len(pass) > 20 {
		return nil, errors.New("password longer than 20 bytes")
	}
	var key [20]byte
	copy(key[:], pass)
	return &creds{user: user, kuid: hmac.New(a.newHash, key[:]), a: a}, nil
}

// session is one RMCP+ session's state, from Open Session on.
type session struct {
	c         *creds
	consoleID uint32
	bmcID     uint32
	seq       uint32 // last session sequence number sent
	rqSeq     uint8
	rc, rm    [16]byte // console's and BMC's random numbers
	guid      [16]byte
	k1        hash.Hash    // integrity HMAC keyed with K1
	aes       cipher.Block // AES-128 keyed with K2[:16]
	sum       [64]byte     // HMAC output scratch
	block     [16]byte     // CBC scratch
	sik       []byte       // from RAKP 2 to RAKP 4
	active    bool
}

func (s *session) reset(c *creds, consoleID uint32) {
	*s = session{c: c, consoleID: consoleID}
}

// rmcpPlus writes the RMCP and RMCP+ session headers for a payload of n
// bytes and returns where the payload starts.
func rmcpPlus(dst []byte, pt uint8, sid, seq uint32, n int) []byte {
	dst = append(dst, 0x06, 0x00, 0xff, 0x07, 0x06, pt)
	dst = binary.LittleEndian.AppendUint32(dst, sid)
	dst = binary.LittleEndian.AppendUint32(dst, seq)
	return binary.LittleEndian.AppendUint16(dst, uint16(n))
}

// appendOpen is the Open Session request (IPMI 2.0 table 13-9).
func (s *session) appendOpen(dst []byte, tag uint8) []byte {
	dst = rmcpPlus(dst, ptOpenReq, 0, 0, 32)
	dst = append(dst, tag, 0, 0, 0) // tag, max privilege (highest the algorithms allow), reserved
	dst = binary.LittleEndian.AppendUint32(dst, s.consoleID)
	a := s.c.a
	dst = append(dst, 0, 0, 0, 8, a.auth, 0, 0, 0)
	dst = append(dst, 1, 0, 0, 8, a.integrity, 0, 0, 0)
	return append(dst, 2, 0, 0, 8, a.conf, 0, 0, 0)
}

// payloadOf returns the payload of an RMCP+ packet of type want, outside a
// session.
func payloadOf(pkt []byte, want uint8) ([]byte, error) {
	if len(pkt) < 16 || pkt[0] != 0x06 || pkt[3] != 0x07 || pkt[4] != 0x06 {
		return nil, protoErr("not an RMCP+ packet (%d bytes)", len(pkt))
	}
	if pt := pkt[5] & 0x3f; pt != want {
		return nil, protoErr("payload type 0x%02x, want 0x%02x", pt, want)
	}
	n := int(binary.LittleEndian.Uint16(pkt[14:]))
	if len(pkt) < 16+n {
		return nil, protoErr("payload length %d in %d bytes", n, len(pkt))
	}
	return pkt[16 : 16+n], nil
}

// status checks a session set-up answer's status byte.
func status(name string, p []byte) error {
	switch p[1] {
	case 0:
		return nil
	case 0x0d, 0x0e, 0x0f, 0x12: // unauthorized name, role, privilege; invalid integrity check
		return fmt.Errorf("%w: %s status 0x%02x", ErrAuth, name, p[1])
	}
	return protoErr("%s status 0x%02x", name, p[1])
}

// openResp checks the Open Session response (table 13-10).
func (s *session) openResp(pkt []byte) error {
	p, err := payloadOf(pkt, ptOpenResp)
	if err != nil {
		return err
	}
	if len(p) < 8 {
		return protoErr("Open Session response of %d bytes", len(p))
	}
	if err := status("Open Session", p); err != nil {
		return err
	}
	if len(p) < 36 {
		return protoErr("Open Session response of %d bytes", len(p))
	}
	if id := binary.LittleEndian.Uint32(p[4:]); id != s.consoleID {
		return protoErr("Open Session response for session 0x%08x, want 0x%08x", id, s.consoleID)
	}
	s.bmcID = binary.LittleEndian.Uint32(p[8:])
	a := s.c.a
	if s.bmcID == 0 || p[16] != a.auth || p[24] != a.integrity || p[32] != a.conf {
		return protoErr("Open Session response: session 0x%08x, algorithms %d/%d/%d", s.bmcID, p[16], p[24], p[32])
	}
	return nil
}

// appendRAKP1 is RAKP message 1 (table 13-11), with a fresh console random.
func (s *session) appendRAKP1(dst []byte, tag uint8, rng *rand.ChaCha8) []byte {
	rng.Read(s.rc[:])
	u := s.c.user
	dst = rmcpPlus(dst, ptRAKP1, 0, 0, 28+len(u))
	dst = append(dst, tag, 0, 0, 0)
	dst = binary.LittleEndian.AppendUint32(dst, s.bmcID)
	dst = append(dst, s.rc[:]...)
	dst = append(dst, roleNameLookup|privAdmin, 0, 0, byte(len(u)))
	return append(dst, u...)
}

// rakp2 checks RAKP message 2 (table 13-12): the BMC proves it knows the
// password; then the session keys are derived.
func (s *session) rakp2(pkt []byte) error {
	p, err := payloadOf(pkt, ptRAKP2)
	if err != nil {
		return err
	}
	if len(p) < 8 {
		return protoErr("RAKP 2 of %d bytes", len(p))
	}
	if err := status("RAKP 2", p); err != nil {
		return err
	}
	h := s.c.kuid
	size := h.Size()
	if len(p) < 40+size {
		return protoErr("RAKP 2 of %d bytes", len(p))
	}
	if id := binary.LittleEndian.Uint32(p[4:]); id != s.consoleID {
		return protoErr("RAKP 2 for session 0x%08x", id)
	}
	copy(s.rm[:], p[8:24])
	copy(s.guid[:], p[24:40])
	u := s.c.user
	role := byte(roleNameLookup | privAdmin)
	// HMAC_Kuid(SIDm, SIDc, Rm, Rc, GUIDc, ROLEm, ULENGTHm, UNAMEm)
	h.Reset()
	var ids [8]byte
	binary.LittleEndian.PutUint32(ids[:], s.consoleID)
	binary.LittleEndian.PutUint32(ids[4:], s.bmcID)
	h.Write(ids[:])
	h.Write(s.rc[:])
	h.Write(s.rm[:])
	h.Write(s.guid[:])
	h.Write([]byte{role, byte(len(u))})
	h.Write([]byte(u))
	if subtle.ConstantTimeCompare(h.Sum(s.sum[:0]), p[40:40+size]) != 1 {
		return fmt.Errorf("%w: RAKP 2 code does not match the password", ErrAuth)
	}
	// SIK = HMAC_Kg(Rm, Rc, ROLEm, ULENGTHm, UNAMEm), Kg = Kuid (no BMC key).
	h.Reset()
	h.Write(s.rc[:])
	h.Write(s.rm[:])
	h.Write([]byte{role, byte(len(u))})
	h.Write([]byte(u))
	sik := h.Sum(nil)
	// K1 = HMAC_SIK(0x01 x 20), K2 = HMAC_SIK(0x02 x 20): 20 bytes for
	// SHA-256 too (IPMI 2.0 section 13.32, as ipmitool computes them).
	kh := hmac.New(s.c.a.newHash, sik)
	konst := make([]byte, 20)
	for i := range konst {
		konst[i] = 1
	}
	kh.Write(konst)
	k1 := kh.Sum(nil)
	kh.Reset()
	for i := range konst {
		konst[i] = 2
	}
	kh.Write(konst)
	k2 := kh.Sum(nil)
	s.k1 = hmac.New(s.c.a.newHash, k1)
	s.aes, _ = aes.NewCipher(k2[:16]) // 16 bytes: cannot fail
	// RAKP 4's check value is keyed with SIK; keep it until then in k2's place.
	s.sik = sik
	return nil
}

// appendRAKP3 is RAKP message 3 (table 13-13).
func (s *session) appendRAKP3(dst []byte, tag uint8) []byte {
	h := s.c.kuid
	u := s.c.user
	// HMAC_Kuid(Rc, SIDm, ROLEm, ULENGTHm, UNAMEm)
	h.Reset()
	h.Write(s.rm[:])
	var id [4]byte
	binary.LittleEndian.PutUint32(id[:], s.consoleID)
	h.Write(id[:])
	h.Write([]byte{roleNameLookup | privAdmin, byte(len(u))})
	h.Write([]byte(u))
	code := h.Sum(s.sum[:0])
	dst = rmcpPlus(dst, ptRAKP3, 0, 0, 8+len(code))
	dst = append(dst, tag, 0, 0, 0)
	dst = binary.LittleEndian.AppendUint32(dst, s.bmcID)
	return append(dst, code...)
}

// rakp4 checks RAKP message 4 (table 13-14): HMAC_SIK(Rm, SIDc, GUIDc).
func (s *session) rakp4(pkt []byte) error {
	p, err := payloadOf(pkt, ptRAKP4)
	if err != nil {
		return err
	}
	if len(p) < 8 {
		return protoErr("RAKP 4 of %d bytes", len(p))
	}
	if err := status("RAKP 4", p); err != nil {
		return err
	}
	n := s.c.a.icvLen
	if len(p) < 8+n {
		return protoErr("RAKP 4 of %d bytes", len(p))
	}
	if id := binary.LittleEndian.Uint32(p[4:]); id != s.consoleID {
		return protoErr("RAKP 4 for session 0x%08x", id)
	}
	h := hmac.New(s.c.a.newHash, s.sik)
	h.Write(s.rc[:])
	var id [4]byte
	binary.LittleEndian.PutUint32(id[:], s.bmcID)
	h.Write(id[:])
	h.Write(s.guid[:])
	if subtle.ConstantTimeCompare(h.Sum(s.sum[:0])[:n], p[8:8+n]) != 1 {
		return protoErr("RAKP 4 integrity check value does not match")
	}
	s.sik = nil
	s.active = true
	return nil
}

// appendRequest is one IPMI request in the session, encrypted and signed.
// rqSeq is the request's IPMI sequence number (6 bits).
func (s *session) appendRequest(dst []byte, netFn, cmd uint8, data []byte, rng *rand.ChaCha8) []byte {
	s.seq++
	s.rqSeq = (s.rqSeq + 1) & 0x3f
	// The IPMI message: rsAddr, netFn/LUN, checksum, rqAddr, rqSeq/LUN, cmd, data, checksum.
	var msg [64]byte
	m := append(msg[:0], 0x20, netFn<<2)
	m = append(m, protocol.Checksum(m))
	m = append(m, 0x81, s.rqSeq<<2, cmd)
	m = append(m, data...)
	m = append(m, protocol.Checksum(m[3:]))
	// AES-CBC-128: IV, then the message with its confidentiality trailer
	// (pad bytes 1, 2, ..., then the pad length) in whole blocks.
	pad := (16 - (len(m)+1)%16) % 16
	for i := range pad {
		m = append(m, byte(i+1))
	}
	m = append(m, byte(pad))
	start := len(dst)
	dst = rmcpPlus(dst, ptIPMI|flagEncrypted|flagAuth, s.bmcID, s.seq, 16+len(m))
	body := len(dst)
	var iv [16]byte
	rng.Read(iv[:])
	dst = append(dst, iv[:]...)
	prev := iv[:]
	for off := 0; off < len(m); off += 16 {
		for i := range 16 {
			s.block[i] = m[off+i] ^ prev[i]
		}
		s.aes.Encrypt(s.block[:], s.block[:])
		dst = append(dst, s.block[:]...)
		prev = dst[len(dst)-16:]
	}
	return s.sign(dst, start, body)
}

// sign adds the integrity trailer to the packet that starts at dst[start]
// and whose payload starts at dst[body].
func (s *session) sign(dst []byte, start, body int) []byte {
	// Pad so that auth type .. next header is a multiple of 4 bytes.
	padLen := types.IntegrityPadLen(12, len(dst)-body)
	for range padLen {
		dst = append(dst, 0xff)
	}
	dst = append(dst, byte(padLen), 0x07)
	s.k1.Reset()
	s.k1.Write(dst[start+4:])
	return append(dst, s.k1.Sum(s.sum[:0])[:s.c.a.authCodeLen]...)
}

// response checks one in-session answer (integrity, decryption, the IPMI
// response framing, sequence and command) and returns its completion code
// and data. The data is in scratch, or in pkt itself for a clear answer.
func (s *session) response(pkt, scratch []byte, netFn, cmd uint8) (uint8, []byte, error) {
	if len(pkt) < 16 || pkt[4] != 0x06 || pkt[5]&0x3f != ptIPMI {
		return 0, nil, protoErr("not an RMCP+ IPMI answer (%d bytes)", len(pkt))
	}
	if id := binary.LittleEndian.Uint32(pkt[6:]); id != s.consoleID {
		return 0, nil, protoErr("answer for session 0x%08x, want 0x%08x", id, s.consoleID)
	}
	n := int(binary.LittleEndian.Uint16(pkt[14:]))
	if len(pkt) < 16+n {
		return 0, nil, protoErr("payload length %d in %d bytes", n, len(pkt))
	}
	if pkt[5]&flagAuth == 0 {
		return 0, nil, protoErr("answer not signed")
	}
	acl := s.c.a.authCodeLen
	if len(pkt) < 16+n+2+acl {
		return 0, nil, protoErr("integrity trailer truncated")
	}
	s.k1.Reset()
	s.k1.Write(pkt[4 : len(pkt)-acl])
	if subtle.ConstantTimeCompare(s.k1.Sum(s.sum[:0])[:acl], pkt[len(pkt)-acl:]) != 1 {
		return 0, nil, protoErr("answer integrity code does not match")
	}
	m := pkt[16 : 16+n]
	if pkt[5]&flagEncrypted != 0 {
		if len(m) < 32 || len(m)%16 != 0 || len(scratch) < len(m)-16 {
			return 0, nil, protoErr("encrypted payload of %d bytes", len(m))
		}
		prev := m[:16]
		out := scratch[:0]
		for off := 16; off < len(m); off += 16 {
			s.aes.Decrypt(s.block[:], m[off:off+16])
			for i := range 16 {
				s.block[i] ^= prev[i]
			}
			out = append(out, s.block[:]...)
			prev = m[off : off+16]
		}
		pad := int(out[len(out)-1])
		if pad+1 > len(out) {
			return 0, nil, protoErr("confidentiality pad of %d in %d bytes", pad, len(out))
		}
		m = out[:len(out)-1-pad]
	}
	return ipmiResponse(m, netFn, cmd, s.rqSeq)
}

// ipmiResponse checks an IPMI LAN response message: rqAddr, netFn/LUN,
// checksum, rsAddr, rqSeq/LUN, cmd, completion code, data, checksum.
func ipmiResponse(m []byte, netFn, cmd, rqSeq uint8) (uint8, []byte, error) {
	if len(m) < 8 {
		return 0, nil, protoErr("IPMI response of %d bytes", len(m))
	}
	if protocol.Checksum(m[:2]) != m[2] || protocol.Checksum(m[3:len(m)-1]) != m[len(m)-1] {
		return 0, nil, protoErr("IPMI response checksum")
	}
	if m[1]>>2 != netFn|1 || m[5] != cmd || m[4]>>2 != rqSeq {
		return 0, nil, protoErr("IPMI response netFn 0x%02x cmd 0x%02x seq %d, want 0x%02x 0x%02x %d",
			m[1]>>2, m[5], m[4]>>2, netFn|1, cmd, rqSeq)
	}
	return m[6], m[7 : len(m)-1], nil
}

// newRNG is a ChaCha8 stream (a CSPRNG) seeded from crypto/rand: IVs and
// console randoms at a few ns each instead of a syscall or a fresh seed.
func newRNG() *rand.ChaCha8 {
	var seed [32]byte
	crand.Read(seed[:]) // never fails (Go 1.24+)
	return rand.NewChaCha8(seed)
}
