package native

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bmc"
	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
)

func startBMC(t *testing.T, m simulator.Machine) *bmc.BMC {
	t.Helper()
	b, err := bmc.New(m, "127.0.0.1:0", bmc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b.Start(context.Background())
	t.Cleanup(func() { b.Close() })
	return b
}

func infoFor(b *bmc.BMC, extra map[string]any) power.DriverInfo {
	info := power.DriverInfo{
		"ipmi_address":  b.Addr().Addr().String(),
		"ipmi_port":     float64(b.Addr().Port()),
		"ipmi_username": "admin",
		"ipmi_password": "password",
	}
	for k, v := range extra {
		info[k] = v
	}
	return info
}

var fast = Config{Timeout: time.Second, PollInterval: 10 * time.Millisecond, PowerStateTimeout: 5 * time.Second}

func TestNativeAgainstBMC(t *testing.T) {
	for name, extra := range map[string]map[string]any{
		"lanplus":  nil,
		"suite 3":  {"ipmi_cipher_suite": "3"},
		"suite 17": {"ipmi_cipher_suite": "17"},
		"lan 1.5":  {"ipmi_protocol_version": "1.5"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			m := bmctest.New("node-1")
			info := infoFor(startBMC(t, m), extra)
			p := New(fast)
			if err := p.Validate(info); err != nil {
				t.Fatal(err)
			}
			for _, step := range []struct {
				target power.State
				want   simulator.PowerState
				acts   []simulator.PowerAction
			}{
				{power.On, simulator.PowerOn, []simulator.PowerAction{simulator.ActionOn}},
				{power.Reboot, simulator.PowerOn, []simulator.PowerAction{simulator.ActionOff, simulator.ActionOn}},
				{power.SoftOff, simulator.PowerOff, []simulator.PowerAction{simulator.ActionSoftOff}},
				{power.Reboot, simulator.PowerOn, []simulator.PowerAction{simulator.ActionOn}},
				{power.Off, simulator.PowerOff, []simulator.PowerAction{simulator.ActionOff}},
			} {
				p0, b0, _ := m.State()
				m.SetState(p0, b0)
				if err := p.SetPowerState(ctx, info, step.target); err != nil {
					t.Fatalf("%s: %v", step.target, err)
				}
				got, _, acts := m.State()
				if d := cmp.Diff(step.acts, bmctest.Collapsed(acts)); d != "" { // resends repeat an action
					t.Errorf("%s: machine power actions (-want +got):\n%s", step.target, d)
				}
				st, err := p.GetPowerState(ctx, info)
				if err != nil {
					t.Fatal(err)
				}
				if got != step.want || string(st) != "power "+string(step.want) {
					t.Errorf("%s: driver says %q, machine is %s, want %s", step.target, st, got, step.want)
				}
			}
			for _, tc := range []struct {
				dev  power.Device
				opts power.BootOptions
				want simulator.BootConfig
			}{
				{power.PXE, power.BootOptions{}, simulator.BootConfig{Device: simulator.BootNetwork}},
				{power.Disk, power.BootOptions{Persistent: true}, simulator.BootConfig{Device: simulator.BootDisk, Persistent: true}},
				{power.PXE, power.BootOptions{UEFI: true, Persistent: true}, simulator.BootConfig{Device: simulator.BootNetwork, Persistent: true, UEFI: true}},
			} {
				if err := p.SetBootDevice(ctx, info, tc.dev, tc.opts); err != nil {
					t.Fatal(err)
				}
				if _, got, _ := m.State(); got != tc.want {
					t.Errorf("boot device %s %+v: machine boots %+v, want %+v", tc.dev, tc.opts, got, tc.want)
				}
			}
		})
	}
}

func TestNativeWrongPassword(t *testing.T) {
	for name, extra := range map[string]map[string]any{"lanplus": nil, "lan 1.5": {"ipmi_protocol_version": "1.5"}} {
		t.Run(name, func(t *testing.T) {
			m := bmctest.New("node-1")
			bad := map[string]any{"ipmi_password": "wrong"}
			for k, v := range extra {
				bad[k] = v
			}
			info := infoFor(startBMC(t, m), bad)
			err := New(fast).SetPowerState(context.Background(), info, power.On)
			if !errors.Is(err, ErrIPMI) {
				t.Fatalf("wrong password: %v, want ErrIPMI", err)
			}
			// A refused login is not asked again (BMCs lock accounts out
			// after failed logins): one set-up attempt.
			if strings.Contains(err.Error(), "attempt 2") {
				t.Errorf("wrong password was tried again: %v", err)
			}
			if p, boot, acts := m.State(); p != simulator.PowerOff || boot.Device != simulator.BootDisk || len(acts) != 0 {
				t.Errorf("machine changed: %s %+v %v", p, boot, acts)
			}
		})
	}
}

func TestNativeDeadBMC(t *testing.T) {
	b := startBMC(t, bmctest.New("node-2"))
	b.SetFaults(bmc.Faults{NoAnswer: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := New(Config{Timeout: 200 * time.Millisecond, Retries: 1}).GetPowerState(ctx, infoFor(b, nil))
	if !errors.Is(err, ErrIPMI) || !strings.Contains(err.Error(), b.Addr().String()) {
		t.Fatalf("dead BMC: %v; want ErrIPMI naming %s", err, b.Addr())
	}
	if ctx.Err() != nil {
		t.Fatal("took the whole context deadline")
	}
}

// TestNativeKeepsSessionBetweenCalls: a run of calls to one BMC (boot
// device, power state, power on: a deploy's boot) is one session; after
// SessionLinger the next call opens its own; a BMC that lost the session
// meanwhile (restarted) gets a new one and the call succeeds; Close ends
// the kept session; a negative SessionLinger opens a session per call.
func TestNativeKeepsSessionBetweenCalls(t *testing.T) {
	ctx := context.Background()
	m := bmctest.New("node-1")
	b := startBMC(t, m)
	info := infoFor(b, nil)
	cfg := fast
	cfg.Timeout, cfg.Retries, cfg.SessionLinger = 300*time.Millisecond, 1, 300*time.Millisecond
	p := New(cfg)
	run := func() {
		t.Helper()
		if err := p.SetBootDevice(ctx, info, power.PXE, power.BootOptions{}); err != nil {
			t.Fatal(err)
		}
		if st, err := p.GetPowerState(ctx, info); err != nil || st != power.Off {
			t.Fatalf("power state: %q, %v; want off", st, err)
		}
		if err := p.SetPowerState(ctx, info, power.On); err != nil {
			t.Fatal(err)
		}
		if err := p.SetPowerState(ctx, info, power.Off); err != nil {
			t.Fatal(err)
		}
	}
	run()
	if got := b.Counters().Sessions; got != 1 {
		t.Errorf("a run of 4 calls opened %d sessions, want 1", got)
	}
	if p0, boot, _ := m.State(); p0 != simulator.PowerOff || boot.Device != simulator.BootNetwork {
		t.Errorf("machine: %s, boots %+v; want off, from the network", p0, boot)
	}
	time.Sleep(2 * cfg.SessionLinger) // the kept session closes
	if _, err := p.GetPowerState(ctx, info); err != nil {
		t.Fatal(err)
	}
	if got := b.Counters().Sessions; got != 2 {
		t.Errorf("a call after the linger: %d sessions in all, want 2", got)
	}

	// The BMC restarts while the driver keeps a session: it answers none
	// of that session's requests; the call goes on in a new session.
	addr := b.Addr()
	b.Close()
	b2, err := bmc.New(m, addr.String(), bmc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b2.Start(ctx)
	defer b2.Close()
	if st, err := p.GetPowerState(ctx, info); err != nil || st != power.Off {
		t.Fatalf("after the BMC restarted: %q, %v; want off", st, err)
	}
	if got := b2.Counters().Sessions; got != 1 {
		t.Errorf("the restarted BMC counted %d sessions, want 1", got)
	}
	// Close ends the kept session: the next call opens another.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.GetPowerState(ctx, info); err != nil {
		t.Fatalf("a call after Close: %v", err)
	}
	if got := b2.Counters().Sessions; got != 2 {
		t.Errorf("a call after Close: the BMC counted %d sessions in all, want 2", got)
	}

	cfg.SessionLinger = -1
	p = New(cfg)
	b3 := startBMC(t, m)
	info = infoFor(b3, nil)
	run()
	if got := b3.Counters().Sessions; got != 4 {
		t.Errorf("without linger, 4 calls opened %d sessions, want 4", got)
	}
}

// TestNativeLingersAsLongAsTheCallsComeApart: a BMC whose calls come
// further apart than SessionLinger (a node's calls queued behind
// thousands of others' on a busy conductor) opens one more session, and
// keeps the next one open twice the gap, so the calls after it share it;
// a gap longer than MaxSessionLinger (a node left alone) goes back to
// SessionLinger.
func TestNativeLingersAsLongAsTheCallsComeApart(t *testing.T) {
	ctx := context.Background()
	b := startBMC(t, bmctest.New("node-1"))
	info := infoFor(b, nil)
	cfg := fast
	cfg.SessionLinger, cfg.MaxSessionLinger = 200*time.Millisecond, 1500*time.Millisecond
	p := New(cfg)
	defer p.Close()
	call := func(after time.Duration, sessions uint64, why string) {
		t.Helper()
		time.Sleep(after)
		if _, err := p.GetPowerState(ctx, info); err != nil {
			t.Fatal(err)
		}
		if got := b.Counters().Sessions; got != sessions {
			t.Errorf("%s: %d sessions in all, want %d", why, got, sessions)
		}
	}
	// The calls that should share a session come well inside the
	// lingers learned (a loaded machine only makes gaps longer).
	call(0, 1, "the first call")
	call(800*time.Millisecond, 2, "800 ms later, past the 200 ms linger")
	call(300*time.Millisecond, 2, "300 ms later: the session lingers twice 800 ms, at most 1.5 s")
	call(300*time.Millisecond, 2, "and again")
	call(2*time.Second, 3, "2 s later, past the longest linger")
	call(500*time.Millisecond, 4, "500 ms later: back to 200 ms")
}

// A kept session whose linger ends as go-ipmi's keep-alive fires (30 s
// after set-up) stays open until the keep-alive is done (clearOfKeepAlive):
// a Close beside the keep-alive crashes go-ipmi's client.
func TestNativeClosesClearOfTheKeepAlive(t *testing.T) {
	ctx := context.Background()
	b := startBMC(t, bmctest.New("node-1"))
	info := infoFor(b, nil)
	cfg := fast
	cfg.SessionLinger = 200 * time.Millisecond
	p := New(cfg)
	defer p.Close()
	if _, err := p.GetPowerState(ctx, info); err != nil {
		t.Fatal(err)
	}
	slot := p.slot(b.Addr().String())
	kept := func(edit func(*openSession)) bool {
		st := <-slot
		defer func() { slot <- st }()
		if st.kept != nil && edit != nil {
			edit(st.kept)
		}
		return st.kept != nil
	}
	// As if the session had been set up 29 s ago: its next linger would end
	// 0.8 s before the keep-alive.
	if !kept(func(s *openSession) { s.connected = time.Now().Add(-29 * time.Second) }) {
		t.Fatal("no session kept after the first call")
	}
	if _, err := p.GetPowerState(ctx, info); err != nil {
		t.Fatal(err)
	}
	if got := b.Counters().Sessions; got != 1 {
		t.Fatalf("%d sessions, want the kept one", got)
	}
	time.Sleep(time.Second)
	if !kept(nil) {
		t.Fatal("the session closed 1 s after the call, 29 s after set-up: beside the keep-alive")
	}
	deadline := time.Now().Add(15 * time.Second)
	for kept(nil) {
		if time.Now().After(deadline) {
			t.Fatal("the session was not closed 15 s after its linger")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Close does not wait for a session beside its keep-alive: that one is
// closed (Close Session) once clear, after Close has returned.
func TestCloseLeavesASessionBesideItsKeepAliveForLater(t *testing.T) {
	ctx := context.Background()
	b := startBMC(t, bmctest.New("node-1"))
	info := infoFor(b, nil)
	p := New(fast)
	if _, err := p.GetPowerState(ctx, info); err != nil {
		t.Fatal(err)
	}
	slot := p.slot(b.Addr().String())
	st := <-slot
	st.kept.connected = time.Now().Add(-29 * time.Second) // its keep-alive is 1 s away
	slot <- st
	before := b.Counters().Requests
	p.Close()
	if got := b.Counters().Requests; got != before {
		t.Errorf("Close sent %d requests to a session beside its keep-alive, want none yet", got-before)
	}
	deadline := time.Now().Add(15 * time.Second)
	for b.Counters().Requests == before {
		if time.Now().After(deadline) {
			t.Fatal("the session beside its keep-alive was never closed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := b.Counters().Requests - before; got != 1 {
		t.Errorf("%d requests after the window, want one Close Session", got)
	}
}

func TestClearOfKeepAlive(t *testing.T) {
	p := New(Config{}) // Timeout 2 s, Retries 2: no Close from 3 s before a keep-alive to 7 s after it
	for _, c := range []struct{ age, want time.Duration }{
		{0, 0},
		{6 * time.Second, 0},
		{26900 * time.Millisecond, 0},        // more than 3 s before the first keep-alive
		{27 * time.Second, 10 * time.Second}, // 3 s before: wait until 7 s after it
		{29900 * time.Millisecond, 7100 * time.Millisecond},
		{32 * time.Second, 5 * time.Second},  //
		{37 * time.Second, 0},                // 7 s after
		{50 * time.Second, 0},                //
		{57 * time.Second, 10 * time.Second}, // the second keep-alive
		{91 * time.Second, 6 * time.Second},  // the third
	} {
		if got := p.clearOfKeepAlive(c.age); got != c.want {
			t.Errorf("clearOfKeepAlive(%s) = %s, want %s", c.age, got, c.want)
		}
	}
	slow := New(Config{Timeout: 5 * time.Second, Retries: 1})
	if got := slow.clearOfKeepAlive(25 * time.Second); got != 16*time.Second {
		t.Errorf("Timeout 5 s, Retries 1: clearOfKeepAlive(25s) = %s, want 16s (from 6 s before to 11 s after)", got)
	}
}

func TestLingerAfter(t *testing.T) {
	p := New(Config{SessionLinger: 6 * time.Second})
	for _, c := range []struct{ gap, want time.Duration }{
		{time.Second, 6 * time.Second},       // a failed call's session closed: no longer than the default
		{4 * time.Second, 8 * time.Second},   // twice the gap
		{12 * time.Second, 24 * time.Second}, //
		{20 * time.Second, 30 * time.Second}, // at most MaxSessionLinger
		{30 * time.Second, 30 * time.Second}, //
		{31 * time.Second, 6 * time.Second},  // a node left alone
		{10 * time.Minute, 6 * time.Second},  //
	} {
		if got := p.lingerAfter(c.gap); got != c.want {
			t.Errorf("lingerAfter(%s) = %s, want %s", c.gap, got, c.want)
		}
	}
	if got := New(Config{SessionLinger: 45 * time.Second}).cfg.MaxSessionLinger; got != 45*time.Second {
		t.Errorf("MaxSessionLinger below SessionLinger: %s, want SessionLinger's 45s", got)
	}
}

// BenchmarkBootCalls is a deploy's run of power calls to one BMC (boot
// device, power state, power on, power off), with sessions kept between
// calls (kept) and one session per call (per-call, as before
// SessionLinger). The BMC runs in the same process.
func BenchmarkBootCalls(b *testing.B) {
	for _, bc := range []struct {
		name   string
		linger time.Duration
	}{{"kept", 0}, {"per-call", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			bm, err := bmc.New(bmctest.New("node-1"), "127.0.0.1:0", bmc.Options{})
			if err != nil {
				b.Fatal(err)
			}
			bm.Start(ctx)
			defer bm.Close()
			info := infoFor(bm, nil)
			cfg := fast
			cfg.SessionLinger = bc.linger
			p := New(cfg)
			b.ReportAllocs()
			for b.Loop() {
				if err := p.SetBootDevice(ctx, info, power.PXE, power.BootOptions{}); err != nil {
					b.Fatal(err)
				}
				if _, err := p.GetPowerState(ctx, info); err != nil {
					b.Fatal(err)
				}
				if err := p.SetPowerState(ctx, info, power.On); err != nil {
					b.Fatal(err)
				}
				if err := p.SetPowerState(ctx, info, power.Off); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(bm.Counters().Sessions)/float64(b.N), "sessions/op")
		})
	}
}

// TestNativeSlowBMC: a BMC that answers later than the request timeout (an
// overloaded one: 10,000 nodes on a busy laptop) still gets its session
// set up and its call done. The late answers to the resent session-setup
// messages must not be taken for the answers to the next ones (go-ipmi's
// client reads the first datagram for those: "unpacked data is too short
// (36/40)", RAKP4 integrity check mismatches).
func TestNativeSlowBMC(t *testing.T) {
	m := bmctest.New("node-1")
	b := startBMC(t, m)
	b.SetFaults(bmc.Faults{Delay: bmc.Duration(150 * time.Millisecond)})
	p := New(Config{Timeout: 100 * time.Millisecond, Retries: 2, PollInterval: 10 * time.Millisecond, PowerStateTimeout: 10 * time.Second, SessionLinger: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		if _, err := p.GetPowerState(ctx, infoFor(b, nil)); err != nil {
			t.Fatalf("call %d to a BMC answering in 150 ms (request timeout 100 ms): %v", i, err)
		}
	}
	if err := p.SetPowerState(ctx, infoFor(b, nil), power.On); err != nil {
		t.Fatalf("power on via the slow BMC: %v", err)
	}
	if st, _ := m.Power(ctx); st != simulator.PowerOn {
		t.Fatalf("machine is %v after power on", st)
	}
}
