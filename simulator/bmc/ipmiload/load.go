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
	"sync"
	"sync/atomic"
	"time"
)

// LoadOptions configure a load against one BMC.
type LoadOptions struct {
	Options
	// Sockets are the client's UDP sockets (default 2), each driven by one
	// goroutine; InFlight is how many sessions run at once over all of
	// them (default 8; a BMC caps its sessions, ours at 16 by default).
	Sockets  int
	InFlight int
	// Window is how long the load runs (default 5 s); with Ops, it ends
	// once Ops operations are done, if that is sooner (a Go benchmark's b.N).
	Window time.Duration
	Ops    int
	// SocketPerSession gives every session its own socket (its own client
	// port), as separate ipmitool runs have: pyghmi's BMC keeps one session
	// per client address. Sockets is then InFlight.
	SocketPerSession bool
}

func (o *LoadOptions) defaults() {
	o.Options.defaults()
	if o.Sockets <= 0 {
		o.Sockets = 2
	}
	if o.InFlight <= 0 {
		o.InFlight = 8
	}
	o.Sockets = min(o.Sockets, o.InFlight)
	if o.SocketPerSession {
		o.Sockets = o.InFlight
	}
	if o.Window <= 0 {
		o.Window = 5 * time.Second
	}
}

// Result is what one load did in its window.
type Result struct {
	// Ops are the whole operations completed in the window: sessions
	// (RunSessions) or requests (RunRequests).
	Ops     int     `json:"ops"`
	Seconds float64 `json:"seconds"`
	PerS    float64 `json:"per_s"`
	// Errors are operations that failed (a wrong answer, or none after
	// the retries); the slot then starts over with a new session.
	Errors     int    `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
}

// RunSessions opens and closes sessions against addr for the window,
// InFlight at a time: Open Session, RAKP 1/2, RAKP 3/4 (both codes
// checked, the session keys derived), then Close Session in the new
// session, encrypted and signed. Ops counts the sessions closed.
func RunSessions(ctx context.Context, addr netip.AddrPort, o LoadOptions) (Result, error) {
	return run(ctx, addr, o, false)
}

// RunRequests opens InFlight sessions (as RunSessions, plus Set Session
// Privilege Level), then sends Get Chassis Status in each, one at a time
// per session, for the window; then closes them. Ops counts the answers.
func RunRequests(ctx context.Context, addr netip.AddrPort, o LoadOptions) (Result, error) {
	return run(ctx, addr, o, true)
}

func run(ctx context.Context, addr netip.AddrPort, o LoadOptions, requests bool) (Result, error) {
	o.defaults()
	c, err := newCreds(o.Username, o.Password, o.Suite)
	if err != nil {
		return Result{}, err
	}
	ws := make([]*worker, o.Sockets)
	for i := range ws {
		conn, err := dial(addr, o.SocketPerSession)
		if err != nil {
			for _, w := range ws[:i] {
				w.conn.Close()
			}
			return Result{}, fmt.Errorf("IPMI load on %s: %w", addr, err)
		}
		n := o.InFlight / o.Sockets
		if i < o.InFlight%o.Sockets {
			n++
		}
		// Each socket's goroutine has its own credentials copy: the
		// password-keyed HMAC is state.
		ci, _ := newCreds(c.user, o.Password, o.Suite)
		ws[i] = newWorker(conn, ci, uint8(i), n, o, requests)
		ws[i].addr = addr
		if o.Ops > 0 {
			ws[i].quota = max(1, o.Ops*n/o.InFlight)
		}
	}
	defer func() {
		for _, w := range ws {
			w.conn.Close()
		}
	}()
	var wg sync.WaitGroup
	if requests {
		// Sessions first, outside the window.
		setupEnd := time.Now().Add(10 * time.Second)
		for _, w := range ws {
			wg.Go(func() { w.loop(ctx, time.Time{}, setupEnd) })
		}
		wg.Wait()
		for _, w := range ws {
			if w.firstErr != "" {
				return Result{Errors: w.errors, FirstError: w.firstErr}, fmt.Errorf("IPMI load on %s: open sessions: %s", addr, w.firstErr)
			}
		}
	}
	start := time.Now()
	deadline := start.Add(o.Window)
	for _, w := range ws {
		wg.Go(func() { w.loop(ctx, deadline, deadline.Add(2*o.Timeout*time.Duration(o.Retries+1))) })
	}
	wg.Wait()
	var r Result
	end := deadline
	if o.Ops > 0 {
		end = start
		for _, w := range ws {
			if w.end.IsZero() {
				w.end = deadline
			}
			if w.end.After(end) {
				end = w.end
			}
		}
	}
	r.Seconds = end.Sub(start).Seconds()
	for _, w := range ws {
		r.Ops += w.ops
		r.Errors += w.errors
		if r.FirstError == "" {
			r.FirstError = w.firstErr
		}
	}
	r.PerS = float64(r.Ops) / r.Seconds
	return r, ctx.Err()
}

// Phases of one slot's session.
const (
	phIdle uint8 = iota
	phOpen
	phRAKP1
	phRAKP3
	phPriv
	phReady // session open, waiting for the window (RunRequests)
	phStatus
	phClose
)

var phaseName = [...]string{"idle", "Open Session", "RAKP 1", "RAKP 3", "Set Session Privilege Level", "ready", "Get Chassis Status", "Close Session"}

// slot is one session in flight.
type slot struct {
	s     session
	phase uint8
	gen   uint16
	tries int
	sent  time.Time
	out   []byte // the request in flight, sent again on a timeout
}

// worker drives its slots over one socket from one goroutine: an answer is
// checked and the slot's next request sent from the same loop.
type worker struct {
	conn     *net.UDPConn
	addr     netip.AddrPort
	c        *creds
	id       uint8
	slots    []slot
	o        LoadOptions
	requests bool
	rng      *rand.ChaCha8
	in, dec  []byte

	ops, errors  int
	firstErr     string
	readDeadline time.Time
	// quota ends the worker's operations after that many (0: none); end
	// is when it did.
	quota int
	end   time.Time
}

// over says whether the worker's operations are over: the window ended,
// or its quota is done.
func (w *worker) over(now, deadline time.Time) bool {
	return w.quota > 0 && w.ops >= w.quota || !now.Before(deadline)
}

// done counts one operation.
func (w *worker) done(now time.Time) {
	w.ops++
	if w.ops == w.quota {
		w.end = now
	}
}

func newWorker(conn *net.UDPConn, c *creds, id uint8, n int, o LoadOptions, requests bool) *worker {
	w := &worker{conn: conn, c: c, id: id, slots: make([]slot, n), o: o, requests: requests, rng: newRNG(),
		in: make([]byte, 2048), dec: make([]byte, 2048)}
	for i := range w.slots {
		w.slots[i].out = make([]byte, 0, 256)
		w.startSession(i)
	}
	return w
}

// consoleID names slot i's current session: socket, generation, slot.
func (w *worker) consoleID(i int) uint32 {
	return uint32(w.id+1)<<24 | uint32(w.slots[i].gen)<<8 | uint32(i)
}

func (w *worker) send(i int, pkt []byte) {
	sl := &w.slots[i]
	sl.out = pkt
	sl.sent = time.Now()
	_, _ = w.conn.Write(pkt) // a lost datagram is a timeout
}

// startSession begins a new session in slot i (without sending it: the
// loop sends every slot's first packet).
func (w *worker) startSession(i int) {
	sl := &w.slots[i]
	if w.o.SocketPerSession && sl.gen > 0 {
		if conn, err := dialFresh(w.addr); err == nil {
			w.conn.Close()
			w.conn = conn
			w.readDeadline = time.Time{}
		}
	}
	sl.gen++
	sl.s.reset(w.c, w.consoleID(i))
	sl.phase = phOpen
	sl.tries = 0
	sl.out = sl.s.appendOpen(sl.out[:0], uint8(i))
}

func (w *worker) fail(i int, err error) {
	w.errors++
	if w.firstErr == "" {
		w.firstErr = fmt.Sprintf("%s: %v", phaseName[w.slots[i].phase], err)
	}
	w.startSession(i)
	w.send(i, w.slots[i].out)
}

// loop runs the slots until every one is idle (or ready, while opening
// sessions) or until stop. Operations end at deadline; the zero deadline
// means "open the sessions only".
func (w *worker) loop(ctx context.Context, deadline, stop time.Time) {
	setup := deadline.IsZero()
	for i := range w.slots {
		sl := &w.slots[i]
		switch sl.phase {
		case phOpen:
			w.send(i, sl.out)
		case phReady:
			w.next(i, time.Now(), deadline, setup)
		}
	}
	var lastScan time.Time
	for {
		now := time.Now()
		if now.After(stop) || ctx.Err() != nil {
			return
		}
		if now.Sub(lastScan) > 20*time.Millisecond {
			lastScan = now
			busy := false
			for i := range w.slots {
				sl := &w.slots[i]
				if sl.phase == phIdle || sl.phase == phReady {
					continue
				}
				busy = true
				if now.Sub(sl.sent) < w.o.Timeout {
					continue
				}
				if sl.tries < w.o.Retries {
					sl.tries++
					w.send(i, sl.out)
					continue
				}
				w.fail(i, ErrTimeout)
			}
			if !busy {
				return
			}
		}
		if now.After(w.readDeadline.Add(-40 * time.Millisecond)) {
			w.readDeadline = now.Add(50 * time.Millisecond)
			w.conn.SetReadDeadline(w.readDeadline)
		}
		n, err := w.conn.Read(w.in)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ECONNREFUSED from an earlier datagram
		}
		w.answer(w.in[:n], deadline, setup)
	}
}

// answer handles one datagram: it finds its slot by the console session
// ID it carries, checks it and sends the slot's next request.
func (w *worker) answer(pkt []byte, deadline time.Time, setup bool) {
	if len(pkt) < 16 || pkt[4] != 0x06 {
		return
	}
	var id uint32
	if pt := pkt[5] & 0x3f; pt == ptIPMI {
		id = binary.LittleEndian.Uint32(pkt[6:])
	} else if len(pkt) >= 24 {
		id = binary.LittleEndian.Uint32(pkt[20:]) // the console's ID in Open Session response, RAKP 2, RAKP 4
	}
	i := int(id & 0xff)
	if i >= len(w.slots) || id != w.consoleID(i) {
		return // an answer to a session this slot gave up
	}
	sl := &w.slots[i]
	s := &sl.s
	now := time.Now()
	var err error
	switch sl.phase {
	case phOpen:
		if err = s.openResp(pkt); err == nil {
			sl.phase = phRAKP1
			w.sendNew(i, s.appendRAKP1(sl.out[:0], uint8(i), w.rng))
		}
	case phRAKP1:
		if err = s.rakp2(pkt); err == nil {
			sl.phase = phRAKP3
			w.sendNew(i, s.appendRAKP3(sl.out[:0], uint8(i)))
		}
	case phRAKP3:
		if err = s.rakp4(pkt); err == nil {
			// A session counts when it is closed: Close Session at once.
			if w.requests {
				sl.phase = phPriv
				w.sendNew(i, s.appendRequest(sl.out[:0], netFnApp, cmdSetSessionPriv, []byte{privAdmin}, w.rng))
			} else {
				w.close(i)
			}
		}
	case phPriv:
		if err = w.ok(i, pkt, netFnApp, cmdSetSessionPriv, 1); err == nil {
			if setup {
				sl.phase = phReady
			} else {
				w.next(i, now, deadline, setup)
			}
		}
	case phStatus:
		if err = w.ok(i, pkt, netFnChassis, cmdGetChassisStatus, 3); err == nil {
			if !w.over(now, deadline) {
				w.done(now)
			}
			w.next(i, now, deadline, setup)
		}
	case phClose:
		if err = w.ok(i, pkt, netFnApp, cmdCloseSession, 0); err == nil {
			sl.phase = phIdle
			if !w.requests && !w.over(now, deadline) {
				w.done(now)
			}
			if !w.requests && !w.over(now, deadline) {
				w.startSession(i)
				w.send(i, sl.out)
			}
		}
	}
	if err != nil {
		w.fail(i, err)
	}
}

// next sends slot i's next request in an open session: Get Chassis Status
// in the window, Close Session after it.
func (w *worker) next(i int, now, deadline time.Time, setup bool) {
	sl := &w.slots[i]
	if !w.over(now, deadline) {
		sl.phase = phStatus
		w.sendNew(i, sl.s.appendRequest(sl.out[:0], netFnChassis, cmdGetChassisStatus, nil, w.rng))
		return
	}
	w.close(i)
}

func (w *worker) close(i int) {
	sl := &w.slots[i]
	sl.phase = phClose
	var id [4]byte
	binary.LittleEndian.PutUint32(id[:], sl.s.bmcID)
	w.sendNew(i, sl.s.appendRequest(sl.out[:0], netFnApp, cmdCloseSession, id[:], w.rng))
}

func (w *worker) sendNew(i int, pkt []byte) {
	w.slots[i].tries = 0
	w.send(i, pkt)
}

// ok checks an in-session answer: completion code 0, at least min bytes of data.
func (w *worker) ok(i int, pkt []byte, netFn, cmd uint8, min int) error {
	cc, data, err := w.slots[i].s.response(pkt, w.dec, netFn, cmd)
	if err != nil {
		return err
	}
	if cc != 0 {
		return protoErr("completion code 0x%02x", cc)
	}
	if len(data) < min {
		return protoErr("answer data of %d bytes, want %d", len(data), min)
	}
	return nil
}

func dial(addr netip.AddrPort, fresh bool) (*net.UDPConn, error) {
	if fresh {
		return dialFresh(addr)
	}
	return net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
}

// nextPort is the local port dialFresh tries next.
var nextPort atomic.Uint32

const portLow, portHigh = 10000, 32000 // below Linux's ephemeral range (32768-60999)

// FreshPorts is how many sessions with SocketPerSession this process opens
// before a local port comes round again: a load against a BMC that never
// forgets a client address (pyghmi's) must stay under it, counting every
// load played against that BMC.
const FreshPorts = portHigh - portLow

// dialFresh dials addr from a local port this process has not used
// lately: ports go round a range of 22,000, so a BMC that never forgets a
// client address (pyghmi keeps every session it ever opened, keyed by the
// client's address) never sees one again in a load. A kernel-picked port
// comes back within a few hundred sessions.
func dialFresh(addr netip.AddrPort) (*net.UDPConn, error) {
	nextPort.CompareAndSwap(0, portLow+uint32(rand.IntN(portHigh-portLow)))
	var err error
	for range 100 {
		p := nextPort.Add(1)
		if p >= portHigh {
			nextPort.CompareAndSwap(p, portLow)
			p = portLow + p%(portHigh-portLow)
		}
		local := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(p))
		var c *net.UDPConn
		if c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(local), net.UDPAddrFromAddrPort(addr)); err == nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("no free local port for %s: %w", addr, err)
}
