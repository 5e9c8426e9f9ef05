// Package native is the driver's IPMI power and management interface in Go:
// it speaks RMCP+ (or IPMI 1.5) to the BMC itself through
// github.com/bougou/go-ipmi's client, with no subprocess. It is the spec's
// NativeIPMIPower, the power side of the agent_pyghmi and pxe_pyghmi classes.
package native

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/power/ipmitool"
)

// Config bounds the IPMI exchanges. The zero value is usable.
type Config struct {
	// Timeout is how long one request waits for its answer (default 2 s).
	Timeout time.Duration
	// Retries is how often an unanswered request is resent (default 2).
	Retries int
	// PowerStateTimeout is how long a power change may take to show in Get
	// Chassis Status (default 60 s).
	PowerStateTimeout time.Duration
	// PollInterval is the pause between status polls after a change (default 1 s).
	PollInterval time.Duration
	// SessionLinger is how long a session stays open after a call, for the
	// next call to the same BMC with the same credentials (default 6 s;
	// negative: every call opens and closes its own session). A deploy's
	// power calls come in runs (boot device, power state, power on): one
	// session instead of three, as ipmitool's shell or pyghmi's kept
	// sessions do; far below any BMC's session inactivity timeout (60 s in
	// the IPMI 2.0 spec). 6 s and not 2: on a busy conductor the calls of
	// one run come seconds apart (3000 nodes: 3.3 sessions per deploy at
	// 2 s, 1.1 at 6 s), and each new session is 6 more exchanges.
	// A BMC whose calls come further apart keeps its sessions longer, up
	// to MaxSessionLinger (see lingerAfter).
	SessionLinger time.Duration
	// MaxSessionLinger is the longest a session stays open after a call
	// (default 30 s: half the IPMI 2.0 spec's inactivity timeout).
	MaxSessionLinger time.Duration
}

// DefaultSessionLinger is Config.SessionLinger's default.
const DefaultSessionLinger = 6 * time.Second

// DefaultMaxSessionLinger is Config.MaxSessionLinger's default.
const DefaultMaxSessionLinger = 30 * time.Second

// keepAliveEvery is how often go-ipmi's client sends a keep-alive (Get
// Session Info) on a session, from a goroutine of its own, counted from the
// end of the set-up. That goroutine's socket write races with Close: a
// Close that lands between its dial check and its write leaves it writing
// to a nil socket, a nil dereference that kills the conductor
// (udpclient.go:269 in v0.9.1). A 10,000-node bench died so: its sessions
// lingered 30 s after a call made just after set-up, so they closed as
// their first keep-alive fired. No session is closed near a keep-alive
// (clearOfKeepAlive).
const keepAliveEvery = time.Duration(client.DefaultKeepAliveIntervalSec) * time.Second

// clearOfKeepAlive is how long a Close of a session set up age ago must
// wait to land clear of its keep-alives: 0 when it is clear now. A Close
// may start no later than Timeout + 1 s before a keep-alive (its Close
// Session is bounded by Timeout, then the socket closes) and no sooner than
// (1 + Retries) x Timeout + 1 s after it (the keep-alive's own exchange,
// resent while the BMC does not answer): 3 s and 7 s by default.
func (p *Power) clearOfKeepAlive(age time.Duration) time.Duration {
	before := p.cfg.Timeout + time.Second
	window := before + time.Duration(1+p.cfg.Retries)*p.cfg.Timeout + time.Second
	if age < keepAliveEvery-before {
		return 0
	}
	if into := (age + before) % keepAliveEvery; into < window {
		return window - into
	}
	return 0
}

// Power is the native IPMI power and management interface.
type Power struct {
	cfg   Config
	mu    sync.Mutex
	slots map[string]chan *bmcSlot
}

// bmcSlot is one BMC's turn: the call that holds it (taken from its
// channel) talks to the BMC. It holds the session kept open from the call
// before, when that call ended and how long the next kept session stays.
type bmcSlot struct {
	kept   *openSession
	last   time.Time
	linger time.Duration
}

// openSession is a BMC's session: its client, the driver_info it was
// opened with, when its set-up ended (its keep-alives count from then),
// and, while it is kept open between calls, the timer that closes it.
type openSession struct {
	c         *client.Client
	info      ipmitool.Info
	connected time.Time
	timer     *time.Timer
}

// ErrIPMI is wrapped by every failed exchange with a BMC.
var ErrIPMI = errors.New("IPMI request failed")

// New returns the interface with cfg's defaults filled in.
func New(cfg Config) *Power {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 2
	}
	if cfg.PowerStateTimeout <= 0 {
		cfg.PowerStateTimeout = 60 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.SessionLinger == 0 {
		cfg.SessionLinger = DefaultSessionLinger
	}
	if cfg.MaxSessionLinger <= 0 {
		cfg.MaxSessionLinger = DefaultMaxSessionLinger
	}
	cfg.MaxSessionLinger = max(cfg.MaxSessionLinger, cfg.SessionLinger)
	return &Power{cfg: cfg, slots: map[string]chan *bmcSlot{}}
}

// Name is the interface's name in the API.
func (p *Power) Name() string { return "ipmi" }

// Validate checks driver_info (the ipmitool interface's fields).
func (p *Power) Validate(info power.DriverInfo) error {
	_, err := ipmitool.ParseInfo(info)
	return err
}

// GetPowerState reads Get Chassis Status.
func (p *Power) GetPowerState(ctx context.Context, info power.DriverInfo) (power.State, error) {
	var st power.State
	err := p.session(ctx, info, "power status", func(ctx context.Context, c *client.Client) error {
		var err error
		st, err = status(ctx, c)
		return err
	})
	return st, err
}

func status(ctx context.Context, c *client.Client) (power.State, error) {
	r, err := c.GetChassisStatus(ctx)
	if err != nil {
		return "", err
	}
	if r.PowerIsOn {
		return power.On, nil
	}
	return power.Off, nil
}

// SetPowerState sends Chassis Control and polls until the state shows;
// Reboot is off (if on) then on, as Ironic does.
func (p *Power) SetPowerState(ctx context.Context, info power.DriverInfo, target power.State) error {
	return p.session(ctx, info, "set power "+string(target), func(ctx context.Context, c *client.Client) error {
		switch target {
		case power.On:
			return p.change(ctx, c, chassis.ChassisControlPowerUp, power.On)
		case power.Off:
			return p.change(ctx, c, chassis.ChassisControlPowerDown, power.Off)
		case power.SoftOff:
			return p.change(ctx, c, chassis.ChassisControlSoftShutdown, power.Off)
		case power.Reboot:
			st, err := status(ctx, c)
			if err != nil {
				return err
			}
			if st == power.On {
				if err := p.change(ctx, c, chassis.ChassisControlPowerDown, power.Off); err != nil {
					return err
				}
			}
			return p.change(ctx, c, chassis.ChassisControlPowerUp, power.On)
		}
		return fmt.Errorf("%q is not a target state", target)
	})
}

func (p *Power) change(ctx context.Context, c *client.Client, ctl chassis.ChassisControl, want power.State) error {
	if _, err := c.ChassisControl(ctx, ctl); err != nil {
		return err
	}
	deadline := time.Now().Add(p.cfg.PowerStateTimeout)
	for {
		st, err := status(ctx, c)
		if err != nil {
			return err
		}
		if st == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still %q after %s", st, p.cfg.PowerStateTimeout)
		}
		t := time.NewTimer(p.cfg.PollInterval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// SetBootDevice writes boot option parameter 3 (keep the flags past the 60 s
// timeout) and then the boot flags (parameter 5), as pyghmi's set_bootdev does.
func (p *Power) SetBootDevice(ctx context.Context, info power.DriverInfo, dev power.Device, opts power.BootOptions) error {
	code, ok := map[power.Device]byte{power.PXE: 0x04, power.Disk: 0x08}[dev]
	if !ok {
		return fmt.Errorf("set boot device %q: unsupported device", dev)
	}
	flags := byte(0x80)
	if opts.Persistent {
		flags |= 0x40
	}
	if opts.UEFI {
		flags |= 0x20
	}
	return p.session(ctx, info, "set boot device "+string(dev), func(ctx context.Context, c *client.Client) error {
		if _, err := c.RawCommand(ctx, types.NetFnChassisRequest, 0x08, []byte{0x03, 0x08}, "Set System Boot Options"); err != nil {
			return err
		}
		_, err := c.RawCommand(ctx, types.NetFnChassisRequest, 0x08, []byte{0x05, flags, code, 0, 0, 0}, "Set System Boot Options")
		return err
	})
}

// session runs fn in an IPMI session with the node's BMC: the one still
// open from the call before (SessionLinger), else a new one. Sessions to one
// BMC take turns: BMCs have few session slots. A call the BMC did not answer
// in a session kept open runs once more in a new one (the BMC may have
// dropped the session meanwhile: a reset); a session a call failed in is
// closed.
func (p *Power) session(ctx context.Context, info power.DriverInfo, what string, fn func(context.Context, *client.Client) error) error {
	bi, err := ipmitool.ParseInfo(info)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		return fmt.Errorf("%s via BMC %s: %w: %w", what, bi.Addr(), ErrIPMI, err)
	}
	slot := p.slot(bi.Addr())
	var st *bmcSlot
	select {
	case st = <-slot:
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	kept := st.kept
	st.kept = nil
	if kept == nil && !st.last.IsZero() {
		st.linger = p.lingerAfter(time.Since(st.last))
	}
	if kept != nil {
		kept.timer.Stop() // its close, if it fires, finds the session taken
		if kept.info == bi {
			err := fn(ctx, kept.c)
			if err == nil {
				p.keep(ctx, slot, st, kept)
				return nil
			}
			if !unanswered(err) || ctx.Err() != nil {
				p.closeSession(ctx, kept)
				p.release(slot, st)
				return fail(err)
			}
			// No answer in the kept session: the BMC may have dropped it
			// (a reset); a new session tells.
			p.waitClear(kept)
			dropClient(ctx, kept.c)
		} else {
			p.closeSession(ctx, kept)
		}
	}
	c, err := p.open(ctx, bi)
	var s *openSession
	if err == nil {
		s = &openSession{c: c, info: bi, connected: time.Now()}
		if err = fn(ctx, c); err != nil {
			p.closeSession(ctx, s)
		}
	}
	if err != nil {
		p.release(slot, st)
		return fail(err)
	}
	p.keep(ctx, slot, st, s)
	return nil
}

// lingerAfter is how long a BMC's next session stays open when a call
// came gap after the one before, the session kept from it already closed:
// its calls come further apart than the linger. On a conductor busy with
// thousands of nodes, a node's calls queue behind the others' (10,000
// nodes: 4.3 sessions per deploy at 6 s, 0.07 at 1000 nodes), so the next
// session stays open twice that gap, at most MaxSessionLinger. A gap
// longer than that is a node left alone, not a busy conductor: back to
// SessionLinger. A BMC's first session lingers SessionLinger.
func (p *Power) lingerAfter(gap time.Duration) time.Duration {
	if gap > p.cfg.MaxSessionLinger {
		return p.cfg.SessionLinger
	}
	return min(max(2*gap, p.cfg.SessionLinger), p.cfg.MaxSessionLinger)
}

// release hands the BMC's turn back with no session kept.
func (p *Power) release(slot chan *bmcSlot, st *bmcSlot) {
	st.kept, st.last = nil, time.Now()
	slot <- st
}

// unanswered reports whether err is go-ipmi's "no answer from the BMC" (its
// LAN exchange's wording: a read deadline passed without a matching
// response), what a BMC does with a session it no longer knows.
func unanswered(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "IPMI LAN: ") && (strings.Contains(msg, "read deadline") || strings.Contains(msg, "timed out"))
}

// open connects a new session. A BMC that answers later than Timeout (an
// overloaded one) must not fail the set-up: go-ipmi's client takes the
// first datagram that comes as the answer to a session-setup message (Open
// Session, RAKP 1 and 3 carry no sequence number it checks), so a late
// answer to a resent message was read as the answer to the next one
// ("unpacked data is too short (36/40)", RAKP 4 integrity check mismatches:
// 60 of 10,000 deploys failed so on a loaded machine). So the set-up sends
// every message once and waits for its answer; an attempt that got no
// answer, or a garbled one, is given up with its socket (late answers go
// to a closed port), and the next attempt, on a new socket, waits twice as
// long: Timeout, 2x, 4x..., 1 + Retries attempts, as a TCP connect backs
// off. Once the session is up, requests are resent Retries times on no
// answer: go-ipmi matches their answers by sequence number and command.
func (p *Power) open(ctx context.Context, bi ipmitool.Info) (*client.Client, error) {
	var errs []error
	timeout := p.cfg.Timeout
	for attempt := 0; attempt <= p.cfg.Retries; attempt++ {
		c, err := p.connect(ctx, bi, timeout)
		if err == nil {
			c.WithTimeout(p.cfg.Timeout).WithRetry(p.cfg.Retries)
			return c, nil
		}
		errs = append(errs, fmt.Errorf("attempt %d (%s): %w", attempt+1, timeout, err))
		if ctx.Err() != nil || !retryableSetup(err) {
			break
		}
		timeout *= 2
	}
	return nil, errors.Join(errs...)
}

// connect is one session set-up on a socket of its own, every message sent
// once and waited for timeout.
func (p *Power) connect(ctx context.Context, bi ipmitool.Info, timeout time.Duration) (*client.Client, error) {
	c, err := client.NewClient(bi.Address, bi.Port, bi.Username, bi.Password)
	if err != nil {
		return nil, err
	}
	c.WithTimeout(timeout).WithRetry(0).WithMaxPrivilegeLevel(types.PrivilegeLevelAdministrator)
	if bi.ProtocolVersion == "1.5" {
		c.WithInterface(client.InterfaceLan)
	}
	if bi.CipherSuite != "" {
		n, _ := strconv.Atoi(bi.CipherSuite)
		c.WithCipherSuiteID(types.CipherSuiteID(n))
	}
	if err := c.Connect(ctx); err != nil {
		dropClient(ctx, c) // no session, or one the BMC will time out
		return nil, err
	}
	return c, nil
}

// retryableSetup reports whether a failed set-up may succeed on a new
// socket: an answer did not come in time, or what came was not the answer
// waited for (too short, an integrity check that fails, a status no BMC
// sends). A BMC that refused the login answered in time and said so
// (RAKP 2's code does not match the password; IPMI 1.5's Activate
// Session): asking again changes nothing, and BMCs lock accounts out after
// failed logins.
func retryableSetup(err error) bool {
	msg := err.Error()
	for _, late := range []string{"timeout", "deadline", "timed out", "no datagram matched", "too short", "integrity check value does not match", ": Unknown"} {
		if strings.Contains(msg, late) {
			return true
		}
	}
	return false
}

// keep hands the session back to its BMC's slot, open for the slot's
// linger, longer if that would close it as a keep-alive fires (closed now
// when SessionLinger is negative).
func (p *Power) keep(ctx context.Context, slot chan *bmcSlot, st *bmcSlot, s *openSession) {
	if p.cfg.SessionLinger < 0 {
		p.closeSession(ctx, s)
		p.release(slot, st)
		return
	}
	linger := st.linger
	linger += p.clearOfKeepAlive(time.Since(s.connected) + linger)
	s.timer = time.AfterFunc(linger, func() {
		st := <-slot
		if st.kept == s { // else a call took s meanwhile: not ours to close
			if d := p.clearOfKeepAlive(time.Since(s.connected)); d > 0 {
				// The slot came late, as a keep-alive fires: later.
				s.timer.Reset(d)
			} else {
				p.closeClient(context.Background(), s.c)
				st.kept = nil
			}
		}
		slot <- st
	})
	st.kept, st.last = s, time.Now()
	slot <- st
}

// Close closes the sessions kept open (Close Session to each BMC, at once,
// each bounded by the request timeout); a session beside one of go-ipmi's
// keep-alives is closed once clear of it, after Close returns. A call
// after Close opens a new session.
func (p *Power) Close() error {
	p.mu.Lock()
	slots := make([]chan *bmcSlot, 0, len(p.slots))
	for _, s := range p.slots {
		slots = append(slots, s)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, slot := range slots {
		st := <-slot // after the call in progress, if any
		s := st.kept
		if s == nil {
			slot <- st
			continue
		}
		s.timer.Stop()
		st.kept = nil
		if p.clearOfKeepAlive(time.Since(s.connected)) > 0 {
			// Beside a keep-alive: closed once clear, not holding up
			// Close (a driver stopping) for up to the window.
			slot <- st
			go p.closeSession(context.Background(), s)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.closeSession(context.Background(), s)
			slot <- st
		}()
	}
	wg.Wait()
	return nil
}

// dropClient closes c's socket without waiting for an answer to Close
// Session (its context is over before it is sent).
func dropClient(ctx context.Context, c *client.Client) {
	gone, cancel := context.WithCancel(ctx)
	cancel()
	_ = c.Close(gone)
}

// waitClear waits until s can be closed clear of its keep-alives.
func (p *Power) waitClear(s *openSession) {
	if d := p.clearOfKeepAlive(time.Since(s.connected)); d > 0 {
		time.Sleep(d)
	}
}

// closeSession closes s (Close Session) clear of its keep-alives.
func (p *Power) closeSession(ctx context.Context, s *openSession) {
	p.waitClear(s)
	p.closeClient(ctx, s.c)
}

// closeClient closes a session (Close Session), bounded by the request timeout.
func (p *Power) closeClient(ctx context.Context, c *client.Client) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.Timeout)
	defer cancel()
	_ = c.Close(cctx)
}

func (p *Power) slot(addr string) chan *bmcSlot {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.slots[addr]
	if !ok {
		s = make(chan *bmcSlot, 1)
		s <- &bmcSlot{linger: p.cfg.SessionLinger}
		p.slots[addr] = s
	}
	return s
}
