package bmc

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"hash"
	"math/rand/v2"
	"net"
	"sync"

	gobmc "github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/protocol"
	"github.com/bougou/go-ipmi/pkg/types"
)

// The library's server handles every datagram in a new goroutine (whose
// stack then grows: a tenth of the BMC's CPU), with a new HMAC and AES
// cipher for every packet and a crypto/rand read for every IV. The
// session set-up messages and the quick in-session commands are served
// here instead, in the BMC's read loop, by the same library handlers and
// the same registry, under the same session lock, with each session's
// HMAC and cipher kept: everything else (a Chassis Control waiting for the
// machine, IPMI 1.5, unusual algorithms) still goes to the library.

// inlineCommands are the in-session commands answered in the read loop:
// none waits on anything but memory and the Machine's state.
var inlineCommands = map[[2]uint8]bool{
	{0x00, 0x01}: true, // Get Chassis Status
	{0x00, 0x09}: true, // Get System Boot Options
	{0x06, 0x01}: true, // Get Device ID
	{0x06, 0x37}: true, // Get System GUID
	{0x06, 0x3b}: true, // Set Session Privilege Level
	{0x06, 0x3c}: true, // Close Session
}

// sessionCrypto is one session's integrity HMAC (keyed with K1) and AES
// cipher (K2), made once.
type sessionCrypto struct {
	k1     []byte // the session's K1 these were made from
	mac    hash.Hash
	macLen int
	block  cipher.Block
	// blk and iv are scratch (a local array handed to the cipher's
	// interface methods escapes: an allocation per packet).
	blk, iv [16]byte
}

// inline is the BMC's read-loop server state; only the read loop uses
// its scratch (rng, out, dec, msg, sum, hctx), crypto is also pruned by
// the session store's remove hook.
type inline struct {
	rng *rand.ChaCha8
	out []byte
	dec []byte
	msg []byte
	sum [64]byte
	// hctx is the one handler context, filled for each request (one on the
	// heap per request otherwise).
	hctx handlers.HandlerContext

	mu     sync.Mutex
	crypto map[uint32]*sessionCrypto
}

func newInline() *inline {
	var seed [32]byte
	crand.Read(seed[:]) // never fails (Go 1.24+)
	return &inline{rng: rand.NewChaCha8(seed), crypto: map[uint32]*sessionCrypto{}}
}

func (in *inline) forget(bmcID uint32) {
	in.mu.Lock()
	delete(in.crypto, bmcID)
	in.mu.Unlock()
}

func (in *inline) cryptoOf(sess *gobmc.Session) *sessionCrypto {
	in.mu.Lock()
	defer in.mu.Unlock()
	c := in.crypto[sess.BMCID]
	if c != nil && len(c.k1) > 0 && len(sess.K1) > 0 && &c.k1[0] == &sess.K1[0] {
		return c
	}
	var newHash func() hash.Hash
	var n int
	switch sess.IntegrityAlg {
	case types.IntegrityAlg_HMAC_SHA1_96:
		newHash, n = sha1.New, 12
	case types.IntegrityAlg_HMAC_SHA256_128:
		newHash, n = sha256.New, 16
	default:
		return nil
	}
	if sess.CryptAlg != types.CryptAlg_AES_CBC_128 || len(sess.K1) == 0 || len(sess.K2) < 16 {
		return nil
	}
	block, err := aes.NewCipher(sess.K2[:16])
	if err != nil {
		return nil
	}
	c = &sessionCrypto{k1: sess.K1, mac: hmac.New(newHash, sess.K1), macLen: n, block: block}
	in.crypto[sess.BMCID] = c
	return c
}

// serveInline answers pkt (checked by decodePacket as h) in the read loop
// and reports true, or reports false and leaves it to the library.
func (b *BMC) serveInline(h packetHeader, pkt []byte, addr net.Addr) bool {
	if h.Kind != kindRMCPPlus {
		return false
	}
	ctx := context.Background()
	var resp []byte
	var err error
	var pt uint8
	switch h.PayloadType {
	case payloadOpenSession:
		resp, err = handlers.HandleOpenSession(ctx, b.core, h.Payload)
		pt = payloadOpenSession + 1
	case payloadRAKP1:
		resp, err = handlers.HandleRAKP1(ctx, b.core, h.Payload)
		pt = payloadRAKP1 + 1
	case payloadRAKP3:
		resp, err = handlers.HandleRAKP3(ctx, b.core, h.Payload)
		pt = payloadRAKP3 + 1
	case payloadIPMI:
		if h.SessionID == 0 || !h.Encrypted || !h.Authenticated {
			return false
		}
		return b.serveInSession(h, pkt, addr)
	default:
		return false
	}
	if err == nil && resp != nil {
		_, _ = b.conn.WriteTo(protocol.BuildRMCPPlusPacket(pt, 0, 0, 0, resp), addr)
	}
	return true // as the library: no answer to a set-up message it refuses
}

// serveInSession is the library's in-session path (integrity, sequence
// window, decryption, dispatch, encryption, signature) with the session's
// crypto kept, for the inline commands.
func (b *BMC) serveInSession(h packetHeader, pkt []byte, addr net.Addr) bool {
	sess, err := b.core.Sessions.Get(h.SessionID)
	if err != nil {
		return false // the library drops it the same way
	}
	in := b.inline.Load()
	if in == nil {
		in = newInline()
		b.inline.Store(in) // only the read loop stores it
	}
	c := in.cryptoOf(sess)
	if c == nil {
		return false
	}
	// Decrypt first (under no lock: K2 never changes once the session is
	// active) to see which command it is; the integrity check comes before
	// anything is acted on.
	m, ok := c.decrypt(h.Payload, in.dec[:0])
	if !ok {
		return false
	}
	in.dec = m[:0]
	netFn, cmd, data, seq, ok := protocol.ParseIPMIRequest(m)
	if !ok || !inlineCommands[[2]uint8{netFn, cmd}] {
		return false
	}
	sess.ProcMu.Lock()
	defer sess.ProcMu.Unlock()
	if !c.verify(pkt, in.sum[:0]) || !gobmc.InboundSeqValid(sess.InboundSeq, h.Seq) {
		return true // dropped, as the library does
	}
	sess.InboundSeq = h.Seq
	sess.SetAddr(addr)
	b.core.Sessions.Touch(sess.BMCID)
	ch, _ := b.core.Channels.Get(sess.Channel)
	in.hctx = handlers.HandlerContext{BMC: b.core, Session: sess, Channel: ch, User: sess.User}
	respData, cc, _ := fleetRegistry().Dispatch(context.Background(), &in.hctx, netFn, cmd, data)
	msg := appendIPMIResponse(in.msg[:0], netFn, cmd, seq, uint8(cc), respData)
	in.msg = msg[:0]
	out := c.seal(in.out[:0], sess, msg, in.rng, in.sum[:0])
	in.out = out[:0]
	_, _ = b.conn.WriteTo(out, addr)
	return true
}

// appendIPMIResponse is protocol.BuildIPMIResponse into dst: rqSA (0x20,
// as the library sends it), netFn/LUN, checksum, rsSA, rqSeq, cmd,
// completion code, data, checksum.
func appendIPMIResponse(dst []byte, netFn, cmd, seq, cc uint8, data []byte) []byte {
	at := len(dst)
	dst = append(dst, protocol.RemoteConsoleAddr, (netFn|1)<<2)
	dst = append(dst, protocol.Checksum(dst[at:at+2]))
	dst = append(dst, protocol.BMCAddr, seq<<2, cmd, cc)
	dst = append(dst, data...)
	return append(dst, protocol.Checksum(dst[at+3:]))
}

// decrypt is AES-CBC-128 of an IV and whole blocks, without the
// confidentiality trailer.
func (c *sessionCrypto) decrypt(p, dst []byte) ([]byte, bool) {
	if len(p) < 32 || len(p)%16 != 0 {
		return nil, false
	}
	blk := c.blk[:]
	prev := p[:16]
	for off := 16; off < len(p); off += 16 {
		c.block.Decrypt(blk, p[off:off+16])
		for i := range blk {
			blk[i] ^= prev[i]
		}
		dst = append(dst, blk...)
		prev = p[off : off+16]
	}
	pad := int(dst[len(dst)-1])
	if pad+1 > len(dst) {
		return nil, false
	}
	return dst[:len(dst)-1-pad], true
}

// verify checks an in-session packet's integrity trailer (the library's
// verifyRMCPPlusIntegrity).
func (c *sessionCrypto) verify(pkt, sum []byte) bool {
	payloadLen := int(binary.LittleEndian.Uint16(pkt[14:16]))
	end := 16 + payloadLen
	padLen := types.IntegrityPadLen(12, payloadLen)
	codeAt := end + padLen + 2
	if len(pkt) != codeAt+c.macLen {
		return false
	}
	for _, x := range pkt[end : end+padLen] {
		if x != 0xff {
			return false
		}
	}
	if pkt[end+padLen] != byte(padLen) || pkt[end+padLen+1] != 0x07 {
		return false
	}
	c.mac.Reset()
	c.mac.Write(pkt[4:codeAt])
	return subtle.ConstantTimeCompare(c.mac.Sum(sum)[:c.macLen], pkt[codeAt:]) == 1
}

// seal builds the encrypted, signed answer packet for msg.
func (c *sessionCrypto) seal(dst []byte, sess *gobmc.Session, msg []byte, rng *rand.ChaCha8, sum []byte) []byte {
	pad := (16 - (len(msg)+1)%16) % 16
	n := 16 + len(msg) + pad + 1
	dst = append(dst, 0x06, 0x00, 0xff, 0x07, 0x06, payloadIPMI|0x80|0x40)
	dst = binary.LittleEndian.AppendUint32(dst, sess.ConsoleID)
	dst = binary.LittleEndian.AppendUint32(dst, sess.NextOutboundSeq())
	dst = binary.LittleEndian.AppendUint16(dst, uint16(n))
	rng.Read(c.iv[:])
	dst = append(dst, c.iv[:]...)
	blk := c.blk[:]
	prev := c.iv
	for off := 0; off < len(msg)+pad+1; off += 16 {
		for i := range blk {
			var x byte
			switch j := off + i; {
			case j < len(msg):
				x = msg[j]
			case j < len(msg)+pad:
				x = byte(j - len(msg) + 1)
			default:
				x = byte(pad)
			}
			blk[i] = x ^ prev[i]
		}
		c.block.Encrypt(blk, blk)
		dst = append(dst, blk...)
		copy(prev[:], blk)
	}
	padLen := types.IntegrityPadLen(12, n)
	for range padLen {
		dst = append(dst, 0xff)
	}
	dst = append(dst, byte(padLen), 0x07)
	c.mac.Reset()
	c.mac.Write(dst[4:])
	return append(dst, c.mac.Sum(sum)[:c.macLen]...)
}
