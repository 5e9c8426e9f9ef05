package fakeagent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// AgentVersion is what the agent reports as agent_version and in /v1/status.
// Ironic gates some behaviour on IPA's version number, so this is an IPA-like
// release number rather than ironlab's own.
const AgentVersion = "10.0.0"

// Why Run returned, when the driver ended the agent's life.
var (
	// ErrPoweredOff: standby.power_off completed.
	ErrPoweredOff = errors.New("agent powered off the machine")
	// ErrRebooted: standby.run_image rebooted the machine into its image.
	ErrRebooted = errors.New("agent rebooted the machine into its image")
	// ErrRescued: rescue.finalize_rescue completed; the agent stopped
	// serving and heartbeating and the machine stays up for the rescue user.
	ErrRescued = errors.New("agent finalized rescue")
)

// Phase is where an agent is in its life.
type Phase string

const (
	PhaseNew       Phase = "new"          // Run not called yet
	PhaseLookup    Phase = "lookup"       // looking the node up
	PhaseHeartbeat Phase = "heartbeating" // looked up, heartbeating
	PhaseSilent    Phase = "silent"       // heartbeats stopped by a fault
	PhaseCrashed   Phase = "crashed"      // crashed by a fault; serves nothing
	PhaseRescued   Phase = "rescued"      // finalize_rescue ran; serves nothing
	PhaseStopped   Phase = "stopped"      // Run returned
)

// State is an observable snapshot of an agent.
type State struct {
	Phase            Phase         `json:"phase"`
	LookedUp         bool          `json:"looked_up"`
	NodeUUID         string        `json:"node_uuid,omitempty"`
	HasToken         bool          `json:"has_token"`
	AgentURL         string        `json:"agent_url,omitempty"`
	Lookups          int           `json:"lookups"`
	HeartbeatsSent   int           `json:"heartbeats_sent"`
	HeartbeatErrors  int           `json:"heartbeat_errors"`
	LastHeartbeat    time.Time     `json:"last_heartbeat,omitzero"`
	HeartbeatTimeout time.Duration `json:"heartbeat_timeout"`
	// LastCommand is the full name ("deploy.execute_deploy_step") and
	// LastCommandStatus its status, of the most recent command.
	LastCommand       string `json:"last_command,omitempty"`
	LastCommandStatus string `json:"last_command_status,omitempty"`
	// RescuePasswordHash is what finalize_rescue stored for the rescue user.
	RescuePasswordHash string `json:"rescue_password_hash,omitempty"`
}

// Agent is the fake IPA of one machine. Create it with New, serve its API
// (Agent is an http.Handler, or through a Mux) and call Run.
type Agent struct {
	cfg       Config
	baseLog   *slog.Logger
	logp      atomic.Pointer[slog.Logger] // baseLog with the node's UUID once known
	startedAt time.Time

	// ctx lives as long as the agent; async commands run under it.
	ctx    context.Context
	cancel context.CancelFunc

	kick       chan struct{} // a finished async command asks for a heartbeat
	powerOff   chan struct{} // closed when the driver ended the agent's life
	powerOnce  sync.Once
	stopErr    error // why: ErrPoweredOff, ErrRebooted or ErrRescued
	runOnce    sync.Once
	apiMinor   int // the driver API's maximum microversion minor, 0 = unknown
	lastForced time.Time
	muxUUID    string // where the Mux has us; guarded by the Mux's lock

	mu            sync.Mutex
	phase         Phase
	faults        Faults
	faultsChanged chan struct{} // closed and replaced by SetFaults
	hbSinceFaults int
	silentUntil   time.Time // while silent; zero = until faults change
	silent        bool
	silenceDone   bool
	crashed       bool
	nodeUUID      string
	token         string
	lookedUp      bool
	md5Allowed    bool
	hbTimeout     time.Duration
	lookups       int
	hbSinceLookup int // heartbeats accepted since the last lookup
	// dueBy is when the lookup or heartbeat loop's next attempt should be
	// done (Unix ns; 0: no deadline); see Overdue.
	dueBy atomic.Int64
	// afterSilence, set by tests before Run, runs right after each
	// stop_heartbeats decision of the heartbeat loop.
	afterSilence   func(silent bool)
	hbSent         int
	hbErrors       int
	lastHB         time.Time
	getTokenSeen   bool // IPA requires tokens on GET once one GET carried one
	commands       []*command
	byID           map[string]*command
	partUUIDs      map[string]any
	permitted      []string // the lookup's permitted_image_formats
	rescuePassword string
	rescued        bool // finalize_rescue ran: the API answers nothing
	events         eventRing

	// Auto-TLS: cert and advertiseURL (https) of a standalone agent after
	// AutoTLS; muxTLS when the agent's Mux serves it over https.
	cert         *Certificate
	advertiseURL string
	muxTLS       bool
	decoyOnce    sync.Once // the wrong_verify_ca fault's certificate
	decoyPEM     string
	decoyErr     error
}

// New checks cfg and builds an agent. Nothing runs until Run.
func New(cfg Config) (*Agent, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{
		cfg:           cfg,
		startedAt:     time.Now(),
		ctx:           ctx,
		cancel:        cancel,
		kick:          make(chan struct{}, 1),
		powerOff:      make(chan struct{}),
		phase:         PhaseNew,
		faults:        cfg.Faults,
		faultsChanged: make(chan struct{}),
		md5Allowed:    true,
		token:         cfg.AgentToken,
		hbTimeout:     DefaultHeartbeatTimeout,
		byID:          map[string]*command{},
		partUUIDs:     map[string]any{},
	}
	a.baseLog = cfg.Logger.With("component", "fakeagent", "dialect", string(cfg.Dialect))
	l := a.baseLog
	if cfg.NodeUUID != "" {
		l = l.With("node_uuid", cfg.NodeUUID)
	}
	a.logp.Store(l)
	return a, nil
}

// SetFaults replaces the agent's fault knobs at runtime. Counting for
// stop_heartbeats restarts from now; a hung command resumes if the new faults
// no longer hang it.
func (a *Agent) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.faults = f
	a.hbSinceFaults = 0
	a.silent, a.silenceDone, a.silentUntil = false, false, time.Time{}
	if a.phase == PhaseSilent {
		a.phase = PhaseHeartbeat
	}
	close(a.faultsChanged)
	a.faultsChanged = make(chan struct{})
	a.eventLocked("faults set", "faults", f)
	return nil
}

// Faults returns the current fault knobs.
func (a *Agent) Faults() Faults {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.faults
}

// State returns a snapshot of the agent's progress.
func (a *Agent) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := State{
		Phase: a.phase, LookedUp: a.lookedUp, NodeUUID: a.nodeUUID, HasToken: a.token != "",
		Lookups: a.lookups, HeartbeatsSent: a.hbSent, HeartbeatErrors: a.hbErrors,
		LastHeartbeat: a.lastHB, HeartbeatTimeout: a.hbTimeout, RescuePasswordHash: a.rescuePassword,
	}
	if a.lookedUp {
		s.AgentURL = a.agentURLLocked()
	}
	if n := len(a.commands); n > 0 {
		c := a.commands[n-1]
		s.LastCommand, s.LastCommandStatus = c.full, c.status
	}
	return s
}

// Inventory is what the agent would send in its next lookup.
func (a *Agent) Inventory() Inventory {
	return BuildInventory(a.cfg.Hardware.Hardware(), a.cfg.BootMode, a.cfg.Hostname)
}

// AgentURL is the callback URL the agent advertises ("" before lookup in Mux mode).
func (a *Agent) AgentURL() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.agentURLLocked()
}

func (a *Agent) agentURLLocked() string {
	if a.cfg.Mux != nil {
		if a.nodeUUID == "" {
			return ""
		}
		if a.muxTLS {
			return a.cfg.Mux.TLSURL(a.nodeUUID)
		}
		return a.cfg.Mux.URL(a.nodeUUID)
	}
	if a.advertiseURL != "" {
		return a.advertiseURL
	}
	return a.cfg.AdvertiseURL
}

// verifyCALocked is the PEM sent as agent_verify_ca ("" for plain http).
func (a *Agent) verifyCALocked() string {
	if a.cfg.Mux != nil {
		if a.muxTLS {
			return a.cfg.Mux.certificatePEM()
		}
		return ""
	}
	if a.cert != nil {
		return a.cert.PEM
	}
	return ""
}

func (a *Agent) setPhase(p Phase) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if (a.phase != PhaseCrashed && a.phase != PhaseRescued) || p == PhaseStopped {
		a.phase = p
	}
}

// Run looks the node up, heartbeats, and looks up again whenever the driver
// forgot the agent (404, or 400 about its token), until ctx ends (returns
// nil) or standby.power_off ran (returns ErrPoweredOff). Run may be called
// once.
func (a *Agent) Run(ctx context.Context) error {
	err := errors.New("fakeagent: Run called twice")
	a.runOnce.Do(func() { err = a.run(ctx) })
	return err
}

func (a *Agent) run(ctx context.Context) error {
	defer func() {
		a.expectNothing()
		a.cancel()
		if a.cfg.Mux != nil {
			a.cfg.Mux.unregister(a)
		}
		a.setPhase(PhaseStopped)
		a.event("agent stopped")
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-a.powerOff:
			cancel()
		case <-ctx.Done():
		}
	}()
	a.event("agent started", "api", a.cfg.APIURL)
	for {
		if err := a.lookupLoop(ctx); err != nil {
			return a.exitErr()
		}
		if a.cfg.Mux != nil {
			a.cfg.Mux.register(a.State().NodeUUID, a)
		}
		if err := a.heartbeatLoop(ctx); err != nil {
			return a.exitErr()
		}
		// The driver forgot us. Pause before looking up again so that an
		// agent whose lookup hands out no usable token cannot spin.
		a.expect(a.cfg.LookupInterval)
		if !sleepCtx(ctx, a.cfg.LookupInterval) {
			return a.exitErr()
		}
	}
}

func (a *Agent) exitErr() error {
	select {
	case <-a.powerOff:
		return a.stopErr
	default:
		return nil
	}
}

// HeartbeatInterval is IPA's pause between heartbeats: timeout x U(0.3, 0.6).
// r is a uniform sample in [0, 1).
func HeartbeatInterval(timeout time.Duration, r float64) time.Duration {
	return time.Duration(float64(timeout) * (0.3 + 0.3*r))
}

// ErrorBackoff is IPA's pause after a failed heartbeat: base x U(1, 2),
// base being 5 s in IPA. r is a uniform sample in [0, 1).
func ErrorBackoff(base time.Duration, r float64) time.Duration {
	return time.Duration(float64(base) * (1 + r))
}

// MaskedTokenMarker starts MaskedTokenLine.
const MaskedTokenMarker = "ironlab agent: the agent token has already been retrieved"

// MaskedTokenLine is the console line of a lookup answered with the token
// masked ("******": handed out already) while the agent holds none, as
// when the answer that carried it was lost. IPA warns the same way and
// goes on; the driver then refuses its heartbeats, and the deploy fails at
// its call-back timeout.
const MaskedTokenLine = MaskedTokenMarker + " (lookup answered ******) and this agent holds none; its heartbeats will be refused\n"

// lookupWarnEvery is how often a lookup that keeps failing is a warning.
const lookupWarnEvery = 10 * time.Second

// errNeedLookup means the driver no longer knows this agent.
var errNeedLookup = errors.New("driver forgot the agent; looking up again")

func (a *Agent) lookupLoop(ctx context.Context) error {
	a.setPhase(PhaseLookup)
	a.mu.Lock()
	a.lookedUp, a.hbSinceLookup = false, 0
	a.mu.Unlock()
	var failed int
	var lastWarn time.Time
	for {
		a.expect(a.cfg.LookupInterval)
		res, err := a.lookupOnce(ctx)
		a.mu.Lock()
		a.lookups++
		a.mu.Unlock()
		a.cfg.Totals.Lookups.Add(1)
		if err == nil {
			a.mu.Lock()
			if a.nodeUUID != res.uuid {
				a.logp.Store(a.baseLog.With("node_uuid", res.uuid))
			}
			a.nodeUUID = res.uuid
			if res.token != "" && res.token != "******" {
				a.token = res.token
			} else if a.cfg.Dialect == DialectV1 && res.token == "******" {
				a.logger().Warn("the driver says the agent token was already handed out; keeping the one we have", "have_token", a.token != "")
				if a.token == "" && a.cfg.Console != nil {
					io.WriteString(a.cfg.Console, MaskedTokenLine)
				}
			}
			if res.timeout > 0 {
				a.hbTimeout = res.timeout
			}
			if res.md5Allowed != nil {
				a.md5Allowed = *res.md5Allowed
			}
			if res.permitted != nil {
				a.permitted = res.permitted
			}
			a.lookedUp = true
			a.mu.Unlock()
			a.event("lookup succeeded", "node_uuid", res.uuid, "heartbeat_timeout", res.timeout.String(), "token", res.token != "")
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// IPA logs every failed lookup; at a lab's pace (0.2 s) that floods
		// a VM's console, so a standalone agent (a VM's ramdisk, `ironlab
		// agent`: its log is the machine's console) warns at the first
		// failure and then once every lookupWarnEvery (with the count), the
		// rest debug. An agent that never gets through is then plain on its
		// console. The Mux's agents (thousands in one process, looking up
		// before `ironlab up`'s user enrolls them) keep it debug.
		failed++
		if a.cfg.Mux == nil && (lastWarn.IsZero() || time.Since(lastWarn) >= lookupWarnEvery) {
			lastWarn = time.Now()
			a.logger().Warn("lookup failed; retrying", "err", err, "failures", failed, "retry_in", a.cfg.LookupInterval.String())
		} else {
			a.logger().Debug("lookup failed; retrying", "err", err, "failures", failed, "retry_in", a.cfg.LookupInterval.String())
		}
		if !sleepCtx(ctx, a.cfg.LookupInterval) {
			return ctx.Err()
		}
	}
}

func (a *Agent) heartbeatLoop(ctx context.Context) error {
	a.setPhase(PhaseHeartbeat)
	timer := time.NewTimer(0) // the first heartbeat goes out at once
	a.expect(0)
	defer timer.Stop()
	parked := false // silent until the faults change; no timer armed
	// changed is the faults' channel as of the last look at them: read
	// with the silence decision (under the same lock), so faults set right
	// after the loop parked still wake it. Read afresh at the top of each
	// round, a SetFaults between the decision to park and that read was
	// lost, and the agent stayed silent for good.
	a.mu.Lock()
	var changed <-chan struct{} = a.faultsChanged
	a.mu.Unlock()
	for {
		forced := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
			a.mu.Lock()
			changed = a.faultsChanged
			a.mu.Unlock()
			if parked {
				parked = false
				a.arm(timer, 0) // re-evaluate silence with the new faults
			}
			continue
		case <-timer.C:
		case <-a.kick:
			// A finished command forces a heartbeat, at most once per gap.
			if wait := time.Until(a.lastForced.Add(a.cfg.ForcedHeartbeatGap)); wait > 0 {
				a.arm(timer, wait)
				continue
			}
			forced = true
		}
		if a.isCrashed() {
			a.expectNothing()
			<-ctx.Done()
			return ctx.Err()
		}
		wait, silent, ch := a.silence()
		changed = ch
		if a.afterSilence != nil {
			a.afterSilence(silent)
		}
		if silent {
			if wait > 0 {
				a.arm(timer, wait)
			} else {
				parked = true
				a.expectNothing()
			}
			continue
		}
		if forced {
			a.lastForced = time.Now()
		}
		err := a.heartbeatOnce(ctx)
		switch {
		case err == nil:
			a.cfg.Totals.Heartbeats.Add(1)
			a.mu.Lock()
			a.hbSent++
			a.hbSinceFaults++
			a.lastHB = time.Now()
			timeout, n := a.hbTimeout, a.hbSinceLookup
			a.hbSinceLookup++
			a.mu.Unlock()
			if n == 0 && a.cfg.Mux == nil {
				// On a VM's console: the agent got through (or not).
				a.logger().Info("first heartbeat since lookup accepted", "forced", forced)
			} else {
				a.logger().Debug("heartbeat sent", "forced", forced)
			}
			a.arm(timer, HeartbeatInterval(timeout, rand.Float64()))
		case errors.Is(err, errNeedLookup):
			a.event("heartbeat refused; looking up again", "err", err.Error())
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			a.cfg.Totals.HeartbeatErrors.Add(1)
			a.mu.Lock()
			a.hbErrors++
			a.mu.Unlock()
			backoff := ErrorBackoff(a.cfg.HeartbeatErrorBackoff, rand.Float64())
			a.logger().Warn("heartbeat failed", "err", err, "retry_in", backoff.String())
			a.arm(timer, backoff)
		}
	}
}

// silence applies the stop_heartbeats fault: it reports whether to skip this
// heartbeat and how long until the silence ends (0 = until faults change),
// with the channel SetFaults closes when the faults it judged by change.
func (a *Agent) silence() (time.Duration, bool, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ch := a.faultsChanged
	wait, silent := a.silenceLocked()
	return wait, silent, ch
}

func (a *Agent) silenceLocked() (time.Duration, bool) {
	stop := a.faults.StopHeartbeats
	if stop == nil || a.silenceDone {
		return 0, false
	}
	now := time.Now()
	if !a.silent {
		if a.hbSinceFaults < stop.After {
			return 0, false
		}
		a.silent = true
		if stop.For > 0 {
			a.silentUntil = now.Add(time.Duration(stop.For))
		}
		a.phase = PhaseSilent
		a.eventLocked("heartbeats stopped by fault", "after", stop.After, "for", time.Duration(stop.For).String())
	}
	if a.silentUntil.IsZero() {
		return 0, true
	}
	if now.Before(a.silentUntil) {
		return a.silentUntil.Sub(now), true
	}
	a.silent, a.silenceDone = false, true
	a.phase = PhaseHeartbeat
	a.eventLocked("heartbeats resumed")
	return 0, false
}

func (a *Agent) isCrashed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.crashed
}

func (a *Agent) crash(during string) {
	a.mu.Lock()
	a.crashed = true
	a.phase = PhaseCrashed
	a.eventLocked("agent crashed by fault", "command", during)
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}: // wake the heartbeat loop so it parks
	default:
	}
}

func (a *Agent) forceHeartbeat() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *Agent) requestPowerOff() { a.end(ErrPoweredOff, "powering off", a.cfg.PowerOff) }

func (a *Agent) requestReboot() { a.end(ErrRebooted, "rebooting into the image", a.cfg.Reboot) }

func (a *Agent) requestRescue() {
	a.mu.Lock()
	a.phase, a.rescued = PhaseRescued, true
	a.mu.Unlock()
	a.end(ErrRescued, "rescue finalized: API stopped", nil)
}

// end ends the agent's life once: action (power off, reboot) runs in its
// own goroutine, and Run returns why.
func (a *Agent) end(why error, msg string, action func(ctx context.Context) error) {
	a.powerOnce.Do(func() {
		a.event(msg)
		if action != nil {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := action(ctx); err != nil {
					a.logger().Error(msg+" failed", "err", err)
				}
			}()
		}
		a.stopErr = why
		close(a.powerOff)
	})
}

// arm sets the heartbeat loop's timer and says when the loop is due.
func (a *Agent) arm(t *time.Timer, d time.Duration) {
	resetTimer(t, d)
	a.expect(d)
}

// expect records that the loop (lookup or heartbeat) makes its next
// attempt within d, which that attempt's request may exceed by at most
// RequestTimeout: Overdue measures against it.
func (a *Agent) expect(d time.Duration) {
	a.dueBy.Store(time.Now().Add(d + a.cfg.RequestTimeout).UnixNano())
}

// expectNothing: the loop waits with no deadline (silent until the faults
// change, crashed by a fault, or stopped).
func (a *Agent) expectNothing() { a.dueBy.Store(0) }

// Overdue reports how long the agent's lookup or heartbeat loop is past
// the time its next attempt (and that attempt's request) should have been
// done by; 0 while it keeps time or waits with no deadline (silent until
// its faults change, crashed by a fault, stopped). It reads one atomic, so
// it answers even when the agent is stuck on its own lock: a ramdisk's
// watchdog asks it (fakeagent/ramdisk prints every goroutine's stack on
// the console when it grows).
func (a *Agent) Overdue(now time.Time) time.Duration {
	due := a.dueBy.Load()
	if due == 0 || now.UnixNano() <= due {
		return 0
	}
	return now.Sub(time.Unix(0, due))
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	t.Reset(d)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// event logs msg and keeps it for log.collect_system_logs.
func (a *Agent) event(msg string, attrs ...any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.eventLocked(msg, attrs...)
}

func (a *Agent) eventLocked(msg string, attrs ...any) {
	a.logger().Info(msg, attrs...)
	a.events.add(time.Now(), msg, attrs)
}

func (a *Agent) logger() *slog.Logger { return a.logp.Load() }
