package ipmiload_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bmc"
	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
	"github.com/ironlab/ironlab/simulator/bmc/ipmiload"
	"github.com/ironlab/ironlab/simulator/bmc/pyghmipeer"
)

func startBMC(t testing.TB, m *bmctest.Machine) *bmc.BMC {
	t.Helper()
	b, err := bmc.New(m, "127.0.0.1:0", bmc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b.Start(context.Background())
	t.Cleanup(func() { b.Close() })
	return b
}

// startPyghmi runs pyghmi's BMC (Debian's python3-pyghmi, the base of
// virtualbmc) on a free port: the independent peer the client must agree with.
func startPyghmi(t testing.TB) netip.AddrPort {
	t.Helper()
	py := labtest.Require(t, "/usr/bin/python3")
	labtest.RequireFunc(t, "python3-pyghmi", "apt-get install python3-pyghmi", func() error {
		return exec.Command(py, "-c", "import pyghmi.ipmi.bmc").Run()
	})
	l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := l.LocalAddr().(*net.UDPAddr).AddrPort()
	l.Close()
	stop, err := pyghmipeer.Start(context.Background(), py, t.TempDir(), int(addr.Port()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return addr
}

var creds = ipmiload.Options{Username: "admin", Password: "password"}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestClientAgainstOurBMC: each suite opens a session, reads the power, turns
// the machine on (the machine, not the client, says it happened), reads it
// back and closes the session.
func TestClientAgainstOurBMC(t *testing.T) {
	for _, suite := range []ipmiload.Suite{ipmiload.Suite3, ipmiload.Suite17} {
		t.Run(fmt.Sprint("suite", suite), func(t *testing.T) {
			ctx := ctxT(t)
			m := bmctest.New("n0")
			b := startBMC(t, m)
			o := creds
			o.Suite = suite
			c, err := ipmiload.Open(ctx, b.Addr(), o)
			if err != nil {
				t.Fatal(err)
			}
			if on, err := c.PowerOn(ctx); err != nil || on {
				t.Fatalf("power on = %v, %v; want off", on, err)
			}
			if err := c.ChassisControl(ctx, 1); err != nil {
				t.Fatal(err)
			}
			if p, _, _ := m.State(); p != simulator.PowerOn {
				t.Fatalf("machine is %s after Chassis Control on", p)
			}
			if on, err := c.PowerOn(ctx); err != nil || !on {
				t.Fatalf("power on = %v, %v; want on", on, err)
			}
			if err := c.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if got := b.Counters().Sessions; got != 1 {
				t.Fatalf("BMC counted %d sessions, want 1", got)
			}
		})
	}
}

func TestClientWrongPassword(t *testing.T) {
	ctx := ctxT(t)
	b := startBMC(t, bmctest.New("n0"))
	o := creds
	o.Password = "wrong"
	_, err := ipmiload.Open(ctx, b.Addr(), o)
	if !errors.Is(err, ipmiload.ErrAuth) {
		t.Fatalf("wrong password: %v, want ErrAuth", err)
	}
}

// TestClientAgainstPyghmi: pyghmi's BMC (suite 3 only) accepts the client's
// session and requests, so the client's packets are not merely what our BMC
// happens to accept.
func TestClientAgainstPyghmi(t *testing.T) {
	ctx := ctxT(t)
	addr := startPyghmi(t)
	c, err := ipmiload.Open(ctx, addr, creds)
	if err != nil {
		t.Fatal(err)
	}
	if on, err := c.PowerOn(ctx); err != nil || on {
		t.Fatalf("power on = %v, %v; want off", on, err)
	}
	if err := c.ChassisControl(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if on, err := c.PowerOn(ctx); err != nil || !on {
		t.Fatalf("power on = %v, %v; want on after Chassis Control", on, err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	o := creds
	o.Password = "wrong"
	o.Retries = 1
	o.Timeout = 500 * time.Millisecond
	if _, err := ipmiload.Open(ctx, addr, o); err == nil {
		t.Fatal("pyghmi accepted a wrong password")
	}
}

// TestLoad runs both loops briefly against our BMC and pyghmi's: every
// answer checks out (no errors) and the BMC counted what the client did.
func TestLoad(t *testing.T) {
	ctx := ctxT(t)
	for _, peer := range []string{"ours-suite3", "ours-suite17", "pyghmi"} {
		t.Run(peer, func(t *testing.T) {
			// Several sessions share each socket, except for pyghmi: it
			// keeps one session per client address, so every session has
			// its own socket.
			o := ipmiload.LoadOptions{Options: creds, Window: 300 * time.Millisecond, InFlight: 6, Sockets: 2}
			var b *bmc.BMC
			var addr netip.AddrPort
			switch peer {
			case "pyghmi":
				addr = startPyghmi(t)
				o.SocketPerSession = true
			default:
				b = startBMC(t, bmctest.New("n0"))
				addr = b.Addr()
				if peer == "ours-suite17" {
					o.Suite = ipmiload.Suite17
				}
			}
			s, err := ipmiload.RunSessions(ctx, addr, o)
			if err != nil || s.Errors != 0 || s.Ops == 0 {
				t.Fatalf("sessions: %+v, %v", s, err)
			}
			r, err := ipmiload.RunRequests(ctx, addr, o)
			if err != nil || r.Errors != 0 || r.Ops == 0 {
				t.Fatalf("requests: %+v, %v", r, err)
			}
			if b != nil {
				c := b.Counters()
				// Sessions: the closed ones, those cut by the window, the
				// request loop's; requests: 4 per session, plus the loop's.
				if c.Sessions < uint64(s.Ops+o.InFlight) || c.Requests < uint64(4*s.Ops+r.Ops) {
					t.Fatalf("BMC counted %+v for %d sessions and %d requests", c, s.Ops, r.Ops)
				}
			}
			t.Logf("%s: %.0f sessions/s, %.0f requests/s", peer, s.PerS, r.PerS)
		})
	}
}
