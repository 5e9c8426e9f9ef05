package fakeagent

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

func TestLookupAndHeartbeat(t *testing.T) {
	tests := []struct {
		name     string
		dialect  Dialect
		maxMinor int
		want     heartbeat
	}{
		{name: "v1 modern API", dialect: DialectV1, maxMinor: 99, want: heartbeat{Node: nodeA, Version: AgentVersion, APIVersion: "1.68"}},
		{name: "v1 at API 1.65 heartbeats at 1.65", dialect: DialectV1, maxMinor: 65, want: heartbeat{Node: nodeA, Version: AgentVersion, APIVersion: "1.65"}},
		{name: "legacy vendor_passthru", dialect: DialectLegacy, maxMinor: 99, want: heartbeat{Node: nodeA, Legacy: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := newScriptedIronic(t, tc.maxMinor)
			api.addNode(nodeA, true, macA)
			api.addNode(nodeB, true, macB)
			ta := startAgent(t, api, testHardware(t, macA), func(c *Config) { c.Dialect = tc.dialect })
			var hb heartbeat
			select {
			case hb = <-api.hbCh:
			case <-time.After(20 * time.Second):
				t.Fatal("no heartbeat")
			}
			want := tc.want
			want.URL = ta.srv.URL
			if tc.dialect == DialectV1 {
				want.Token = api.token(nodeA)
				if want.Token == "" {
					t.Fatal("the lookup issued no token")
				}
			}
			if diff := cmp.Diff(want, hb); diff != "" {
				t.Errorf("heartbeat (-want +got):\n%s", diff)
			}
			st := ta.State()
			if !st.LookedUp || st.NodeUUID != nodeA || st.HeartbeatTimeout != time.Second {
				t.Errorf("state = %+v, want looked up as %s with heartbeat_timeout 1s", st, nodeA)
			}
			if tc.dialect == DialectV1 {
				api.mu.Lock()
				lookupVersion := api.lookupVersion
				api.mu.Unlock()
				if lookupVersion != "1.62" {
					t.Errorf("lookup sent API version %q, want 1.62", lookupVersion)
				}
			}
			if got, want := st.HasToken, tc.dialect == DialectV1; got != want {
				t.Errorf("has token = %v, want %v", got, want)
			}
		})
	}
}

func TestLookupRetriesUntilNodeAccepts(t *testing.T) {
	for _, d := range []Dialect{DialectV1, DialectLegacy} {
		t.Run(string(d), func(t *testing.T) {
			api := newScriptedIronic(t, 99)
			api.addNode(nodeA, false, macA) // e.g. still "available"
			ta := startAgent(t, api, testHardware(t, macA), func(c *Config) { c.Dialect = d })
			waitFor(t, "several refused lookups", func() bool { return api.lookupCount() >= 3 })
			if ta.State().LookedUp {
				t.Fatal("agent looked up a node that refuses lookups")
			}
			api.setAccept(nodeA, true)
			ta.waitLookedUp(t)
		})
	}
}

func TestReLookupWhenDriverForgetsAgent(t *testing.T) {
	tests := []struct {
		name   string
		forget func(api *scriptedIronic)
	}{
		// A power off wipes the token: the next heartbeat gets 400 about it.
		{"400 invalid token", func(api *scriptedIronic) { api.wipe(nodeA) }},
		// The node was deleted and enrolled again: 404, then found anew.
		{"404 unknown node", func(api *scriptedIronic) {
			api.deleteNode(nodeA)
			api.addNode(nodeA, true, macA)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := newScriptedIronic(t, 99)
			api.addNode(nodeA, true, macA)
			ta := startAgent(t, api, testHardware(t, macA), nil)
			labtest.Recv(t, api.hbCh, "a heartbeat")
			firstToken := api.token(nodeA)
			lookups := ta.State().Lookups
			tc.forget(api)
			waitFor(t, "a heartbeat with a new token", func() bool {
				select {
				case hb := <-api.hbCh:
					return hb.Token != firstToken && hb.Token == api.token(nodeA)
				default:
					return false
				}
			})
			if got := ta.State().Lookups; got <= lookups {
				t.Errorf("lookups = %d, want more than %d", got, lookups)
			}
		})
	}
}

func TestHeartbeatErrorsAreRetried(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	api.hbStatus = 409 // node locked
	ta := startAgent(t, api, testHardware(t, macA), nil)
	waitFor(t, "failed heartbeats", func() bool { return ta.State().HeartbeatErrors >= 2 })
	if ta.State().Lookups != 1 {
		t.Errorf("a 409 made the agent look up again: %+v", ta.State())
	}
	api.mu.Lock()
	api.hbStatus = 0
	api.mu.Unlock()
	labtest.Recv(t, api.hbCh, "a heartbeat")
}

func TestHeartbeatJitterBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	timeout := 300 * time.Second
	for range 10000 {
		if d := HeartbeatInterval(timeout, r.Float64()); d < 90*time.Second || d >= 180*time.Second {
			t.Fatalf("HeartbeatInterval(300s) = %s, want in [90s, 180s)", d)
		}
		if d := ErrorBackoff(5*time.Second, r.Float64()); d < 5*time.Second || d >= 10*time.Second {
			t.Fatalf("ErrorBackoff(5s) = %s, want in [5s, 10s)", d)
		}
	}
	for _, tc := range []struct {
		r    float64
		want time.Duration
	}{{0, 90 * time.Second}, {0.5, 135 * time.Second}, {0.9999999, 180 * time.Second}} {
		if got := HeartbeatInterval(timeout, tc.r); got.Round(time.Second) != tc.want {
			t.Errorf("HeartbeatInterval(300s, %v) = %s, want %s", tc.r, got, tc.want)
		}
	}
}

// A virtual media boot: Ironic put the token on the ISO's command line and
// answers lookups with "******"; the agent heartbeats with the token it
// was booted with.
func TestPresetTokenFromVirtualMedia(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	api.mu.Lock()
	api.nodes[nodeA].token = "from-the-iso"
	api.mu.Unlock()
	startAgent(t, api, testHardware(t, macA), func(c *Config) { c.AgentToken = "from-the-iso" })
	hb := labtest.Recv(t, api.hbCh, "a heartbeat")
	if hb.Token != "from-the-iso" {
		t.Fatalf("heartbeat token %q, want the preset one", hb.Token)
	}
}

// A lookup answered "******" to an agent that holds no token (the answer
// that carried it was lost, as when its conductor died answering): the
// agent goes on as IPA does, and says so on the console. One booted with
// the token prints nothing.
func TestMaskedTokenWithoutOneIsOnTheConsole(t *testing.T) {
	for _, preset := range []string{"", "from-the-iso"} {
		api := newScriptedIronic(t, 99)
		api.addNode(nodeA, true, macA)
		api.mu.Lock()
		api.nodes[nodeA].token = "handed-out-before"
		if preset != "" {
			api.nodes[nodeA].token = preset
		}
		api.mu.Unlock()
		console := new(labtest.SyncBuffer)
		ta := startAgent(t, api, testHardware(t, macA), func(c *Config) { c.AgentToken, c.Console = preset, console })
		waitFor(t, "the lookup", func() bool { return ta.State().Phase == PhaseHeartbeat })
		if preset != "" {
			labtest.Recv(t, api.hbCh, "a heartbeat with the preset token")
			if got := console.String(); got != "" {
				t.Errorf("booted with the token: console %q, want nothing", got)
			}
			continue
		}
		waitFor(t, "the console line", func() bool { return console.String() == MaskedTokenLine })
		if ta.State().Phase != PhaseHeartbeat {
			t.Errorf("phase %s after a masked token, want heartbeating (as IPA goes on)", ta.State().Phase)
		}
	}
}

// Overdue stays 0 while the agent heartbeats and while a stop_heartbeats
// fault parks it, and grows when the loop is stuck (here on the agent's
// own lock, as a deadlock would hold it); it reads no lock to say so.
func TestOverdueMeasuresAStuckLoop(t *testing.T) {
	api := newScriptedIronic(t, 99)
	api.timeout = 0.05 // heartbeats 15-30 ms apart
	api.addNode(nodeA, true, macA)
	ta := startAgent(t, api, testHardware(t, macA), func(c *Config) { c.RequestTimeout = 50 * time.Millisecond })
	labtest.Recv(t, api.hbCh, "a heartbeat")
	if d := ta.Overdue(time.Now()); d != 0 {
		t.Errorf("overdue %s while heartbeating", d)
	}
	ta.mu.Lock()
	waitFor(t, "the stuck loop to be overdue", func() bool { return ta.Overdue(time.Now()) > 0 })
	ta.mu.Unlock()
	waitFor(t, "the loop to keep time again", func() bool { return ta.Overdue(time.Now()) == 0 })

	if err := ta.SetFaults(Faults{StopHeartbeats: &HeartbeatStop{}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "silence", func() bool { return ta.State().Phase == PhaseSilent })
	// Parked with no deadline: not overdue even an hour on.
	waitFor(t, "no deadline while silent until the faults change", func() bool { return ta.Overdue(time.Now().Add(time.Hour)) == 0 })
}
