// Package bmc serves virtual BMCs: one IPMI endpoint (UDP, loopback) per
// simulator.Machine, many in one process. Real ipmitool (lan and lanplus),
// pyghmi and Ironic's IPMI power drivers talk to them; chassis commands act on
// the Machine, so the boot device set over IPMI is what the machine boots next.
//
// The IPMI 1.5 / 2.0 (RMCP+) session layer is github.com/bougou/go-ipmi's
// server; this package frames it (packet checks, faults), restricts it to the
// commands a BMC of the lab answers, and implements the chassis commands over
// Machine.
package bmc

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	gobmc "github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/clock"
	"github.com/bougou/go-ipmi/pkg/hal/mock"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/server"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ironlab/ironlab/simulator"
)

// Credentials are the one user a virtual BMC knows.
type Credentials struct {
	Username string `json:"username" yaml:"username"`
	Password string `json:"password" yaml:"password"`
}

// DefaultCredentials are what a node's BMC accepts unless the lab says otherwise.
// They are a function, not a variable: no package can change another's default.
func DefaultCredentials() Credentials {
	return Credentials{Username: "admin", Password: "password"}
}

// Options configure one BMC. The zero value is usable.
type Options struct {
	// Credentials default to DefaultCredentials.
	Credentials Credentials
	// MaxSessions caps concurrent RMCP+ sessions (default 16; IPMI 1.5
	// sessions have the library's own cap of 4).
	MaxSessions int
	// IdleTimeout closes a session that has been silent this long (default 60 s).
	IdleTimeout time.Duration
	// ControlWait is how long Chassis Control waits for Machine.SetPower
	// before answering; a slower power change (a VM's start takes 1-2 s)
	// completes in the background, as on a real BMC, which acknowledges at
	// once. The default, 500 ms, stays inside ipmitool's shortest timeout
	// (-N 1): a later answer makes ipmitool resend the request and wait again.
	ControlWait time.Duration
	// Faults are the BMC's initial injected failures.
	Faults Faults
	// Clock is the BMC's time (session idle timeouts, their sweep); the
	// real clock by default. Tests advance their own instead of sleeping.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.Credentials == (Credentials{}) {
		o.Credentials = DefaultCredentials()
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 16
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = gobmc.DefaultInactivityTimeout
	}
	if o.ControlWait <= 0 {
		o.ControlWait = 500 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = clock.Real
	}
}

// The library's user slot for our one user; slot 1 is the anonymous user.
const userID = 2

// BMC is one virtual BMC in front of one Machine.
type BMC struct {
	m    simulator.Machine
	opts Options
	log  *slog.Logger
	conn *gateConn
	core *gobmc.BMC
	srv  *server.Server
	// inline serves the session set-up and quick commands in the read
	// loop; made on first use (an idle BMC of 10,000 does without).
	inline atomic.Pointer[inline]
	call   atomic.Pointer[machineCall]
	// sweep evicts the BMC's idle sessions, with every other BMC's of its
	// clock (sweep.go); sweepIdx is the BMC's place in it.
	sweep    *sweeper
	sweepIdx int

	faults atomic.Pointer[Faults]

	mu    sync.Mutex
	creds Credentials
	boot  bootOptions

	// life ends on Close: power changes still running after their answer
	// (chassisControl) end with it and Close waits for them.
	life     context.Context
	endLife  context.CancelFunc
	workMu   sync.Mutex
	work     sync.WaitGroup
	workDone bool

	startOnce sync.Once
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// ErrBadCredentials is returned for credentials IPMI cannot carry.
var ErrBadCredentials = errors.New("bad BMC credentials")

// New binds a BMC for m on addr (e.g. "127.0.0.1:6230"). It answers once
// Start is called. addr must be a loopback address: the lab never listens
// elsewhere.
func New(m simulator.Machine, addr string, opts Options) (*BMC, error) {
	opts.defaults()
	if err := checkCredentials(opts.Credentials); err != nil {
		return nil, err
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("BMC for %s: address %q: %w", m.Name(), addr, err)
	}
	if !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("BMC for %s: address %s is not loopback", m.Name(), addr)
	}
	uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, fmt.Errorf("BMC for %s: listen on %s: %w", m.Name(), addr, err)
	}
	b := &BMC{
		m:     m,
		opts:  opts,
		log:   opts.Logger.With("node", m.Name(), "bmc", uc.LocalAddr().String()),
		creds: opts.Credentials,
		done:  make(chan struct{}),
	}
	b.life, b.endLife = context.WithCancel(context.Background())
	f := opts.Faults
	b.faults.Store(&f)
	b.conn = &gateConn{UDPConn: uc, b: b}

	b.core = gobmc.New(deviceInfo, guidOf(m.UUID()), &labHAL{HAL: mock.New(), b: b},
		gobmc.WithClock(libClock{opts.Clock}),
		gobmc.WithCipherSuites([]types.CipherSuiteID{types.CipherSuiteID3, types.CipherSuiteID17}),
	)
	b.core.Sessions = gobmc.NewSessionStoreWithOptions(opts.Clock,
		gobmc.WithMaxSessions(opts.MaxSessions),
		gobmc.WithInactivityTimeout(opts.IdleTimeout))
	b.core.Sessions.SetOnRemove(func(id uint32) {
		if in := b.inline.Load(); in != nil {
			in.forget(id)
		}
		b.core.SOL.DeactivateBySession(id)
	})
	if err := b.core.Users.Upsert(userID, b.userUpdate(opts.Credentials, f.RefuseCredentials)); err != nil {
		uc.Close()
		return nil, fmt.Errorf("BMC for %s: add user: %w", m.Name(), err)
	}
	// Every request of the served command set fits in far less than 1 KiB
	// (the library's default read buffer is 4 KiB per BMC); a longer
	// datagram arrives cut and fails its length checks.
	b.srv = server.NewServer(b.core, b.conn, server.WithHandlerRegistry(fleetRegistry()), server.WithServerBufferSize(readBufferSize))
	return b, nil
}

// deviceInfo is what Get Device ID reports.
var deviceInfo = gobmc.DeviceInfo{
	DeviceID:                0x20,
	DeviceRevision:          1,
	FirmwareMajor:           1,
	FirmwareMinor:           0x00,
	IPMIVersion:             0x02, // BCD, low nibble major: 2.0
	AdditionalDeviceSupport: 0x80, // chassis device
	ManufacturerID:          0,
	ProductID:               0x1ab, // "ironlab"
}

// Start serves until ctx ends or Close is called. It returns at once.
func (b *BMC) Start(ctx context.Context) {
	b.startOnce.Do(func() {
		// No goroutine waits for ctx: 10,000 BMCs in one process each
		// had one, 2-8 KiB of stack apiece.
		stop := context.AfterFunc(ctx, func() { b.Close() })
		joinSweep(b)
		go func() {
			defer close(b.done)
			defer stop()
			if err := b.srv.Serve(ctx); err != nil && !errors.Is(err, context.Canceled) {
				b.log.Error("BMC stopped", "err", err)
			}
		}()
	})
}

// Close stops the BMC and releases its socket.
func (b *BMC) Close() error {
	b.closeOnce.Do(func() {
		b.closeErr = b.srv.Close()
		b.startOnce.Do(func() { close(b.done) }) // never started
		<-b.done
		leaveSweep(b)
		b.workMu.Lock()
		b.workDone = true
		b.workMu.Unlock()
		b.endLife()
		b.work.Wait()
	})
	return b.closeErr
}

// goWork runs f in the background for as long as the BMC lives: its
// context ends on Close, which waits for it. It reports false (and runs
// nothing) once the BMC is closing.
func (b *BMC) goWork(f func(ctx context.Context)) bool {
	b.workMu.Lock()
	defer b.workMu.Unlock()
	if b.workDone {
		return false
	}
	b.work.Add(1)
	go func() {
		defer b.work.Done()
		f(b.life)
	}()
	return true
}

// Addr is where the BMC listens.
func (b *BMC) Addr() netip.AddrPort {
	return b.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Machine is the machine this BMC controls.
func (b *BMC) Machine() simulator.Machine { return b.m }

// Faults are the BMC's current injected failures.
func (b *BMC) Faults() Faults { return *b.faults.Load() }

// SetFaults replaces the BMC's injected failures; it takes effect on the next packet.
func (b *BMC) SetFaults(f Faults) {
	b.faults.Store(&f)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.core.Users.Update(userID, b.userUpdate(b.creds, f.RefuseCredentials)); err != nil {
		b.log.Error("apply credential fault", "err", err)
	}
}

// Credentials are what the BMC accepts now.
func (b *BMC) Credentials() Credentials {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.creds
}

// SetCredentials changes the user name and password the BMC accepts; open
// sessions stay open.
func (b *BMC) SetCredentials(c Credentials) error {
	if err := checkCredentials(c); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.core.Users.Upsert(userID, b.userUpdate(c, b.Faults().RefuseCredentials)); err != nil {
		return fmt.Errorf("BMC for %s: set credentials: %w", b.m.Name(), err)
	}
	b.creds = c
	return nil
}

func checkCredentials(c Credentials) error {
	if c.Username == "" || len(c.Username) > 16 {
		return fmt.Errorf("%w: user name must be 1 to 16 bytes, got %q", ErrBadCredentials, c.Username)
	}
	if len(c.Password) > gobmc.MaxPasswordLen {
		return fmt.Errorf("%w: password longer than %d bytes", ErrBadCredentials, gobmc.MaxPasswordLen)
	}
	return nil
}

// userUpdate sets the library's user record. Refusing credentials gives the
// user a random password nobody knows, so logins fail exactly as a wrong
// password does: at RAKP 2 (lanplus) or Activate Session (lan).
func (b *BMC) userUpdate(c Credentials, refuse bool) func(*gobmc.User) error {
	return func(u *gobmc.User) error {
		u.Name = c.Username
		pw := []byte(c.Password)
		if refuse {
			pw = make([]byte, gobmc.MaxPasswordLen)
			if _, err := rand.Read(pw); err != nil {
				return err
			}
		}
		u.SetPassword(pw)
		u.Enabled = true
		if u.ChannelAccess == nil {
			u.ChannelAccess = map[uint8]gobmc.UserChannelAccess{}
		}
		u.ChannelAccess[1] = gobmc.UserChannelAccess{
			MaxPrivilege: gobmc.PrivilegeLevelAdministrator,
			Enabled:      true,
		}
		return nil
	}
}

// guidOf turns an RFC 4122 UUID string into IPMI's GUID byte order (the
// whole 16 bytes reversed, IPMI 2.0 section 20.8); unparsable names give zeros.
func guidOf(uuid string) [16]byte {
	var u, g [16]byte
	j := 0
	for i := 0; i < len(uuid) && j < 32; i++ {
		c := uuid[i]
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		case c == '-':
			continue
		default:
			return g
		}
		u[j/2] |= v << (4 * (1 - j%2))
		j++
	}
	if j != 32 {
		return g
	}
	for i := range u {
		g[15-i] = u[i]
	}
	return g
}

// gateConn is the BMC's socket as the IPMI stack sees it: malformed packets
// and, under the no-answer fault, all packets never reach the stack; answers
// are held back by the delay fault.
type gateConn struct {
	*net.UDPConn
	b       *BMC
	dropped atomic.Uint64
	// requests counts the datagrams handed to the IPMI stack; sessions the
	// session activations among them (RMCP+ Open Session, 1.5 Activate
	// Session).
	requests atomic.Uint64
	sessions atomic.Uint64
	// peers are the client addresses seen last, as net.Addr (which the
	// library wants): one allocation per new client instead of two per
	// datagram. Only the read loop uses them; made on the first datagram.
	peers *peerCache
}

type peerCache struct {
	seen [4]struct {
		ap   netip.AddrPort
		addr *net.UDPAddr
	}
	next int
}

func (c *gateConn) addrOf(ap netip.AddrPort) net.Addr {
	if c.peers == nil {
		c.peers = &peerCache{}
	}
	pc := c.peers
	for i := range pc.seen {
		if p := &pc.seen[i]; p.addr != nil && p.ap == ap {
			return p.addr
		}
	}
	p := &pc.seen[pc.next]
	pc.next = (pc.next + 1) % len(pc.seen)
	p.ap, p.addr = ap, net.UDPAddrFromAddrPort(ap)
	return p.addr
}

// Counters are what one BMC has served since it was built.
type Counters struct {
	// Requests are the well-formed datagrams the BMC answered (ASF pings,
	// session setup and IPMI commands alike).
	Requests uint64 `json:"requests"`
	// Sessions are the sessions clients opened (RMCP+ Open Session
	// requests and IPMI 1.5 Activate Session requests).
	Sessions uint64 `json:"sessions"`
	// Dropped are the malformed datagrams the BMC ignored.
	Dropped uint64 `json:"dropped"`
}

// Counters reads the BMC's request counters (atomic, cheap).
func (b *BMC) Counters() Counters {
	return Counters{Requests: b.conn.requests.Load(), Sessions: b.conn.sessions.Load(), Dropped: b.conn.dropped.Load()}
}

// OpenSessions is how many sessions the BMC holds now (RMCP+ and IPMI 1.5,
// those still being set up among them).
func (b *BMC) OpenSessions() int {
	return b.core.Sessions.Count() + b.core.V15Sessions.Count()
}

// opensSession says whether a checked packet activates a session.
func opensSession(h packetHeader) bool {
	switch h.Kind {
	case kindRMCPPlus:
		return h.PayloadType == payloadOpenSession
	case kindIPMIv15:
		// rsAddr, netFn/LUN, checksum, rqAddr, rqSeq/LUN, cmd.
		return len(h.Payload) > 5 && h.Payload[1]>>2 == 0x06 && h.Payload[5] == 0x3a
	}
	return false
}

func (c *gateConn) ReadFrom(buf []byte) (int, net.Addr, error) {
	for {
		n, ap, err := c.UDPConn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return n, nil, err
		}
		addr := c.addrOf(ap)
		if c.b.faults.Load().NoAnswer {
			continue
		}
		if n == len(buf) {
			c.dropped.Add(1) // larger than any IPMI packet we serve
			continue
		}
		h, err := decodePacket(buf[:n])
		if err != nil {
			c.dropped.Add(1)
			c.b.log.Debug("dropped packet", "from", addr, "err", err)
			continue
		}
		c.requests.Add(1)
		if opensSession(h) {
			c.sessions.Add(1)
		}
		if c.b.serveInline(h, buf[:n], addr) {
			continue
		}
		return n, addr, nil
	}
}

func (c *gateConn) WriteTo(data []byte, addr net.Addr) (int, error) {
	d := time.Duration(c.b.faults.Load().Delay)
	if d <= 0 {
		return c.UDPConn.WriteTo(data, addr)
	}
	late := append([]byte(nil), data...)
	time.AfterFunc(d, func() { _, _ = c.UDPConn.WriteTo(late, addr) })
	return len(data), nil
}

// fleetRegistry is the command set of a lab BMC: the library's session
// commands and Get Device ID, this package's chassis commands over Machine,
// and 0xC1 (invalid command) for everything else. Every BMC of the process
// shares it; the chassis handlers find their BMC through the request's
// handler context (bmcOf). Only the served commands are registered (the rest answer 0xC1
// through allowOnly as unregistered commands). Registering the library's
// whole set per BMC was 4 KiB of each BMC's 28 KiB, and even the served set
// per BMC about 3 KiB of 19 (BenchmarkRSSPerIdleBMC).
var fleetRegistry = sync.OnceValue(func() *handlers.Registry {
	r := handlers.NewRegistry()
	r.Use(recoverPanics)
	r.Use(allowOnly)
	lib := libraryHandlers()
	for key := range served {
		netFn, cmd := key[0], key[1]
		r.Register(types.Command{NetFn: types.NetFn(netFn), ID: cmd}, libraryCommand(lib, netFn, cmd))
	}
	r.RegisterFunc(types.CommandGetSystemGUID, onBMC((*BMC).getSystemGUID))
	r.RegisterFunc(types.CommandGetChassisStatus, onBMC((*BMC).getChassisStatus))
	r.RegisterFunc(types.CommandChassisControl, onBMC((*BMC).chassisControl))
	r.RegisterFunc(types.CommandSetSystemBootOptions, onBMC((*BMC).setBootOptions))
	r.RegisterFunc(types.CommandGetSystemBootOptions, onBMC((*BMC).getBootOptions))
	return r
})

// labHAL is the library's hardware layer of a BMC (its mock: the chassis
// commands are this package's, over Machine) with the way back to the BMC,
// for the handlers of fleetRegistry: every request's handler context holds
// the library's BMC, and through it this.
type labHAL struct {
	*mock.HAL
	b *BMC
}

// onBMC makes a BMC method a handler of fleetRegistry: it runs on the BMC
// of the request (a handler context without one, which the library never
// sends, gets completion code 0xFF).
func onBMC(m func(*BMC, context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error)) func(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
	return func(ctx context.Context, hctx *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
		b := bmcOf(hctx)
		if b == nil {
			return nil, types.CodeUnspecifiedError, nil
		}
		return m(b, ctx, hctx, req)
	}
}

// bmcOf is the BMC a request came to, or nil.
func bmcOf(hctx *handlers.HandlerContext) *BMC {
	if hctx == nil || hctx.BMC == nil {
		return nil
	}
	if h, ok := hctx.BMC.HAL().(*labHAL); ok {
		return h.b
	}
	return nil
}

// readBufferSize is each BMC's datagram buffer.
const readBufferSize = 1024

// libraryHandlers is the library's whole command set, built once.
var libraryHandlers = sync.OnceValue(func() *handlers.Registry {
	r := handlers.NewRegistry()
	handlers.RegisterAllHandlers(r)
	return r
})

// libraryCommand dispatches one command to the library's handler.
func libraryCommand(lib *handlers.Registry, netFn, cmd uint8) handlers.Handler {
	return handlers.HandlerFunc(func(ctx context.Context, hctx *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
		return lib.Dispatch(ctx, hctx, netFn, cmd, req)
	})
}

var served = map[[2]uint8]bool{
	{0x06, 0x01}: true, // Get Device ID
	{0x06, 0x37}: true, // Get System GUID
	{0x06, 0x38}: true, // Get Channel Authentication Capabilities
	{0x06, 0x39}: true, // Get Session Challenge (1.5)
	{0x06, 0x3a}: true, // Activate Session (1.5)
	{0x06, 0x3b}: true, // Set Session Privilege Level
	{0x06, 0x3c}: true, // Close Session
	{0x06, 0x54}: true, // Get Channel Cipher Suites
	{0x00, 0x01}: true, // Get Chassis Status
	{0x00, 0x02}: true, // Chassis Control
	{0x00, 0x08}: true, // Set System Boot Options
	{0x00, 0x09}: true, // Get System Boot Options
}

// recoverPanics turns a panicking command handler into completion code 0xFF:
// one bad request must not take down every BMC of the process.
func recoverPanics(next handlers.Handler) handlers.Handler {
	return handlers.HandlerFunc(func(ctx context.Context, hctx *handlers.HandlerContext, req []byte) (resp []byte, cc types.CompletionCode, err error) {
		defer func() {
			if r := recover(); r != nil {
				log := slog.Default()
				if b := bmcOf(hctx); b != nil {
					log = b.log
				}
				log.Error("IPMI handler panicked", "panic", r, "request", fmt.Sprintf("% x", req))
				resp, cc, err = nil, types.CodeUnspecifiedError, nil
			}
		}()
		return next.Handle(ctx, hctx, req)
	})
}

func allowOnly(next handlers.Handler) handlers.Handler {
	return handlers.HandlerFunc(func(ctx context.Context, hctx *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
		if hctx == nil || !served[[2]uint8{uint8(hctx.Command.NetFn), hctx.Command.ID}] {
			return nil, types.CodeInvalidCommand, nil
		}
		return next.Handle(ctx, hctx, req)
	})
}
