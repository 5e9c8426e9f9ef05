package bmc

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The BMC checks every datagram's framing here before the IPMI stack sees it,
// so that length fields, payload types and checksums the stack would trust are
// known to be sane. Anything that fails is dropped, like a real BMC does.

// packetKind is what a datagram claims to be.
type packetKind uint8

const (
	kindASFPing  packetKind = iota + 1 // RMCP/ASF presence ping
	kindIPMIv15                        // IPMI 1.5 session (or sessionless) message
	kindRMCPPlus                       // IPMI 2.0 RMCP+ packet
)

// RMCP+ payload types the BMC serves (IPMI 2.0 table 13-16). SOL (0x01) and
// OEM payloads are not served.
const (
	payloadIPMI        = 0x00
	payloadOpenSession = 0x10
	payloadRAKP1       = 0x12
	payloadRAKP3       = 0x14
)

// packetHeader is the decoded framing of one datagram.
type packetHeader struct {
	Kind      packetKind
	AuthType  uint8 // 1.5 auth type, or 0x06 for RMCP+
	SessionID uint32
	Seq       uint32
	// RMCP+ only.
	PayloadType   uint8
	Encrypted     bool
	Authenticated bool
	// Payload is the IPMI message (1.5) or the RMCP+ payload.
	Payload []byte
}

var errMalformed = errors.New("malformed packet")

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, a...))
}

// decodePacket checks the RMCP, ASF, IPMI 1.5 and RMCP+ framing of b.
func decodePacket(b []byte) (packetHeader, error) {
	var h packetHeader
	if len(b) < 4 {
		return h, malformed("%d bytes, shorter than an RMCP header", len(b))
	}
	if b[0] != 0x06 {
		return h, malformed("RMCP version 0x%02x", b[0])
	}
	class := b[3]
	if class&0x80 != 0 {
		return h, malformed("RMCP ACK")
	}
	switch class & 0x1f {
	case 0x06:
		return decodeASF(b)
	case 0x07:
	default:
		return h, malformed("RMCP class 0x%02x", class)
	}
	if len(b) < 5 {
		return h, malformed("no session header")
	}
	if b[4] == 0x06 {
		return decodeRMCPPlus(b)
	}
	return decodeV15(b)
}

func decodeASF(b []byte) (packetHeader, error) {
	var h packetHeader
	if len(b) < 12 {
		return h, malformed("ASF message of %d bytes", len(b))
	}
	if binary.BigEndian.Uint32(b[4:8]) != 4542 {
		return h, malformed("ASF IANA %x", b[4:8])
	}
	if b[8] != 0x80 {
		return h, malformed("ASF message type 0x%02x is not a presence ping", b[8])
	}
	h.Kind = kindASFPing
	return h, nil
}

func decodeV15(b []byte) (packetHeader, error) {
	h := packetHeader{Kind: kindIPMIv15, AuthType: b[4]}
	switch h.AuthType {
	case 0x00, 0x01, 0x02, 0x04, 0x05:
	default:
		return h, malformed("IPMI 1.5 auth type 0x%02x", h.AuthType)
	}
	off := 5
	if len(b) < off+8 {
		return h, malformed("IPMI 1.5 session header truncated")
	}
	h.Seq = binary.LittleEndian.Uint32(b[off:])
	h.SessionID = binary.LittleEndian.Uint32(b[off+4:])
	off += 8
	if h.AuthType != 0 {
		off += 16
	}
	if len(b) < off+1 {
		return h, malformed("IPMI 1.5 message length missing")
	}
	n := int(b[off])
	off++
	if len(b) < off+n {
		return h, malformed("IPMI 1.5 message length %d, %d bytes left", n, len(b)-off)
	}
	h.Payload = b[off : off+n]
	if err := checkIPMIRequest(h.Payload); err != nil {
		return h, err
	}
	return h, nil
}

func decodeRMCPPlus(b []byte) (packetHeader, error) {
	h := packetHeader{Kind: kindRMCPPlus, AuthType: 0x06}
	if len(b) < 16 {
		return h, malformed("RMCP+ session header truncated")
	}
	pt := b[5]
	h.Encrypted = pt&0x80 != 0
	h.Authenticated = pt&0x40 != 0
	h.PayloadType = pt & 0x3f
	h.SessionID = binary.LittleEndian.Uint32(b[6:])
	h.Seq = binary.LittleEndian.Uint32(b[10:])
	n := int(binary.LittleEndian.Uint16(b[14:]))
	if len(b) < 16+n {
		return h, malformed("RMCP+ payload length %d, %d bytes left", n, len(b)-16)
	}
	h.Payload = b[16 : 16+n]
	switch h.PayloadType {
	case payloadIPMI:
	case payloadOpenSession, payloadRAKP1, payloadRAKP3:
		if h.SessionID != 0 || h.Encrypted || h.Authenticated {
			return h, malformed("session set-up payload inside a session")
		}
		return h, checkSetup(h.PayloadType, h.Payload)
	default:
		return h, malformed("RMCP+ payload type 0x%02x not served", h.PayloadType)
	}
	if h.SessionID == 0 {
		if h.Encrypted || h.Authenticated {
			return h, malformed("protected payload outside a session")
		}
	} else if h.Authenticated {
		// Integrity pad, pad length, next header (0x07), then the auth code.
		// The shortest auth code is HMAC-SHA1-96's 12 bytes.
		if len(b)-(16+n) < 2+12 {
			return h, malformed("RMCP+ integrity trailer truncated")
		}
	}
	if !h.Encrypted {
		if err := checkIPMIRequest(h.Payload); err != nil {
			return h, err
		}
	} else if n < 32 || n%16 != 0 {
		// AES-CBC-128: a 16-byte IV, then whole blocks.
		return h, malformed("encrypted payload of %d bytes", n)
	}
	return h, nil
}

// checkSetup verifies the fixed parts of the RMCP+ session set-up messages
// (IPMI 2.0 tables 13-16, 13-11, 13-13). The user name length of RAKP 1 is
// checked here because go-ipmi v0.9.1 computes 28+length in a uint8, which
// wraps and panics on a hostile length (found by FuzzBMC).
func checkSetup(payloadType uint8, p []byte) error {
	switch payloadType {
	case payloadOpenSession:
		if len(p) < 32 {
			return malformed("Open Session request of %d bytes", len(p))
		}
	case payloadRAKP1:
		if len(p) < 28 {
			return malformed("RAKP 1 of %d bytes", len(p))
		}
		if n := int(p[27]); n > 16 || 28+n > len(p) {
			return malformed("RAKP 1 user name length %d in %d bytes", n, len(p))
		}
	case payloadRAKP3:
		if len(p) < 8 {
			return malformed("RAKP 3 of %d bytes", len(p))
		}
	}
	return nil
}

// checkIPMIRequest verifies an IPMI LAN request message: rsAddr, netFn/LUN,
// checksum 1, rqAddr, rqSeq/LUN, cmd, data, checksum 2.
func checkIPMIRequest(m []byte) error {
	if len(m) < 7 {
		return malformed("IPMI message of %d bytes", len(m))
	}
	if sum(m[:3]) != 0 {
		return malformed("IPMI header checksum")
	}
	if sum(m[3:]) != 0 {
		return malformed("IPMI data checksum")
	}
	if (m[1]>>2)&1 != 0 {
		return malformed("IPMI response where a request belongs")
	}
	return nil
}

func sum(b []byte) uint8 {
	var s uint8
	for _, c := range b {
		s += c
	}
	return s
}
