package conductor

import (
	"fmt"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/store"
)

// TestDueSelectsWhatTheChecksPick: the store's selection the periodic
// check asks for (due, store.Due.Matches: what the stores' queries are
// tested against) picks exactly the nodes callbackTimedOut or watchdogDue
// would, over every state, power state and time around each timeout, for
// the default configuration, the watchdog off and a call-back timeout off.
// A selection narrower than the checks would hide due nodes from them.
func TestDueSelectsWhatTheChecksPick(t *testing.T) {
	now := time.Unix(1_800_000_000, 0).UTC()
	never := time.Time{}
	configs := map[string]Config{
		"defaults":             {WatchdogAction: WatchdogReboot},
		"watchdog off":         {},
		"rescue timeout off":   {WatchdogAction: WatchdogMaintenance, RescueCallbackTimeout: -1},
		"short clean timeouts": {WatchdogAction: WatchdogReboot, CleanCallbackTimeout: 5 * time.Second, HeartbeatTimeout: 7 * time.Second},
	}
	for name, cfg := range configs {
		cfg.defaults()
		c := &Conductor{cfg: cfg}
		d := c.due(now)
		var times []time.Time
		for _, lim := range []time.Duration{cfg.HeartbeatTimeout, cfg.DeployCallbackTimeout, cfg.CleanCallbackTimeout, cfg.RescueCallbackTimeout} {
			times = append(times, now.Add(-lim), now.Add(-lim-time.Nanosecond))
		}
		times = append(times, never, now)
		picked, checked := 0, 0
		for _, st := range states.All() {
			for _, pw := range []string{string(power.On), string(power.Off), ""} {
				for _, upd := range times {
					for _, hb := range times {
						for _, wd := range []time.Time{never, now.Add(-cfg.HeartbeatTimeout - time.Nanosecond), now} {
							for _, flags := range []int{0, 1, 2} {
								n := &store.Node{UUID: "n", ProvisionState: st, PowerState: pw, ProvisionUpdatedAt: upd,
									Reservation: map[int]string{1: "other"}[flags], Maintenance: flags == 2,
									Agent: store.Agent{LastHeartbeat: hb, WatchdogLastAction: wd}}
								want := n.Reservation == "" && !n.Maintenance && (c.callbackTimedOut(n, now) || c.watchdogDue(n, now))
								if got := d.Matches(n); got != want {
									t.Fatalf("%s: node %s: store.Due selects it: %v, the checks pick it: %v", name, describe(n, now), got, want)
								}
								checked++
								if want {
									picked++
								}
							}
						}
					}
				}
			}
		}
		if picked == 0 || picked == checked {
			t.Fatalf("%s: the checks picked %d of %d nodes: the grid does not cover both sides", name, picked, checked)
		}
	}
}

func describe(n *store.Node, now time.Time) string {
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return now.Sub(t).String() + " ago"
	}
	return fmt.Sprintf("%q power %q updated %s, heartbeat %s, watchdog %s, reserved %q, maintenance %v", n.ProvisionState, n.PowerState,
		ago(n.ProvisionUpdatedAt), ago(n.Agent.LastHeartbeat), ago(n.Agent.WatchdogLastAction), n.Reservation, n.Maintenance)
}
