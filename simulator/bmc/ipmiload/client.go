package ipmiload

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"
)

// Options configure a client or a load.
type Options struct {
	Username string
	Password string
	// Suite is the cipher suite (default 3).
	Suite Suite
	// Timeout is how long one request waits for its answer before it is
	// sent again (default 1 s); Retries is how often (default 2).
	Timeout time.Duration
	Retries int
}

func (o *Options) defaults() {
	if o.Suite == 0 {
		o.Suite = Suite3
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.Retries <= 0 {
		o.Retries = 2
	}
}

// Client is one lanplus session over its own socket, one request at a
// time (as ipmitool).
type Client struct {
	opts Options
	conn *net.UDPConn
	rng  *rand.ChaCha8
	s    session
	out  []byte
	in   []byte
	dec  []byte
}

// Open opens a session to the BMC at addr: Open Session, RAKP 1 to 4, and
// Set Session Privilege Level to administrator.
func Open(ctx context.Context, addr netip.AddrPort, opts Options) (*Client, error) {
	opts.defaults()
	c0, err := newCreds(opts.Username, opts.Password, opts.Suite)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("lanplus session to %s: %w", addr, err)
	}
	c := &Client{opts: opts, conn: conn, rng: newRNG(), out: make([]byte, 0, 256), in: make([]byte, 1024), dec: make([]byte, 1024)}
	c.s.reset(c0, uint32(c.rng.Uint64())|1)
	if err := c.handshake(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("lanplus session to %s: %w", addr, err)
	}
	return c, nil
}

func (c *Client) handshake(ctx context.Context) error {
	s := &c.s
	pkt, err := c.roundTrip(ctx, s.appendOpen(c.out[:0], 1), ofType(ptOpenResp))
	if err != nil {
		return fmt.Errorf("Open Session: %w", err)
	}
	if err := s.openResp(pkt); err != nil {
		return err
	}
	pkt, err = c.roundTrip(ctx, s.appendRAKP1(c.out[:0], 2, c.rng), ofType(ptRAKP2))
	if err != nil {
		return fmt.Errorf("RAKP 1: %w", err)
	}
	if err := s.rakp2(pkt); err != nil {
		return err
	}
	pkt, err = c.roundTrip(ctx, s.appendRAKP3(c.out[:0], 3), ofType(ptRAKP4))
	if err != nil {
		return fmt.Errorf("RAKP 3: %w", err)
	}
	if err := s.rakp4(pkt); err != nil {
		return err
	}
	if _, err := c.Raw(ctx, netFnApp, cmdSetSessionPriv, []byte{privAdmin}); err != nil {
		return fmt.Errorf("Set Session Privilege Level: %w", err)
	}
	return nil
}

// ofType accepts the RMCP+ datagrams of payload type pt.
func ofType(pt uint8) func([]byte) bool {
	return func(p []byte) bool { return len(p) > 5 && p[5]&0x3f == pt }
}

// roundTrip sends req and returns the first datagram ok accepts, sending
// again after each Timeout.
func (c *Client) roundTrip(ctx context.Context, req []byte, ok func([]byte) bool) ([]byte, error) {
	for try := 0; try <= c.opts.Retries; try++ {
		if _, err := c.conn.Write(req); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(c.opts.Timeout)
		if d, has := ctx.Deadline(); has && d.Before(deadline) {
			deadline = d
		}
		c.conn.SetReadDeadline(deadline)
		for {
			n, err := c.conn.Read(c.in)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				break
			}
			if err != nil {
				return nil, err
			}
			if ok(c.in[:n]) {
				return c.in[:n], nil
			}
		}
	}
	return nil, ErrTimeout
}

// Raw sends one IPMI request in the session and returns the answer's data;
// a completion code other than 0 is an error.
func (c *Client) Raw(ctx context.Context, netFn, cmd uint8, data []byte) ([]byte, error) {
	cc, resp, err := c.RawCC(ctx, netFn, cmd, data)
	if err != nil {
		return nil, err
	}
	if cc != 0 {
		return resp, fmt.Errorf("%w: command 0x%02x/0x%02x: completion code 0x%02x", ErrProtocol, netFn, cmd, cc)
	}
	return resp, nil
}

// RawCC is Raw with the completion code returned rather than judged.
func (c *Client) RawCC(ctx context.Context, netFn, cmd uint8, data []byte) (uint8, []byte, error) {
	s := &c.s
	req := s.appendRequest(c.out[:0], netFn, cmd, data, c.rng)
	// The answer roundTrip accepts was checked and decrypted once, here.
	var cc uint8
	var resp []byte
	_, err := c.roundTrip(ctx, req, func(p []byte) bool {
		// Answers of this session only; a late answer to an earlier
		// request (resent) fails its sequence check and is skipped.
		if len(p) < 16 || binary.LittleEndian.Uint32(p[6:]) != s.consoleID {
			return false
		}
		var err error
		cc, resp, err = s.response(p, c.dec, netFn, cmd)
		return err == nil
	})
	if err != nil {
		return 0, nil, err
	}
	return cc, append([]byte(nil), resp...), nil
}

// PowerOn reports the chassis power state (Get Chassis Status).
func (c *Client) PowerOn(ctx context.Context) (bool, error) {
	d, err := c.Raw(ctx, netFnChassis, cmdGetChassisStatus, nil)
	if err != nil {
		return false, err
	}
	if len(d) < 3 {
		return false, protoErr("Get Chassis Status answer of %d bytes", len(d))
	}
	return d[0]&1 != 0, nil
}

// ChassisControl sends Chassis Control (0 off, 1 on, 2 cycle, 3 reset, 5 soft off).
func (c *Client) ChassisControl(ctx context.Context, action uint8) error {
	_, err := c.Raw(ctx, netFnChassis, cmdChassisControl, []byte{action})
	return err
}

// Close closes the session (Close Session) and the socket.
func (c *Client) Close(ctx context.Context) error {
	defer c.conn.Close()
	var id [4]byte
	binary.LittleEndian.PutUint32(id[:], c.s.bmcID)
	_, err := c.Raw(ctx, netFnApp, cmdCloseSession, id[:])
	return err
}
