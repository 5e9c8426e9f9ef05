package scenarios

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/scenarios/labtest/pgtest"
)

const conductorLab = `name: t
lab:
  conductors: 3
  store: postgres
  images: [{id: img, size: 1MiB}]
  groups:
    - {name: g, count: 2, driver: fake_agent}
steps:
  - enroll: {}
`

func TestConductorFaultsParse(t *testing.T) {
	s, err := Parse("t.yaml", []byte(conductorLab+`  - fault: {conductor: {name: c4, join: true}}
  - fault: {conductor: {name: c4, kill_at: "wait call-back", pause: 2s}}
  - fault: {conductor: {name: c2, restart_after: 1s}}
  - fault: {conductor: {name: c3}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if s.Lab.Conductors != 3 || s.Lab.Store != "postgres" {
		t.Errorf("lab: %d conductors on %q", s.Lab.Conductors, s.Lab.Store)
	}
	join, pause, restart, kill := s.Steps[1].Fault.Conductor, s.Steps[2].Fault.Conductor, s.Steps[3].Fault.Conductor, s.Steps[4].Fault.Conductor
	if !join.Join || pause.pause.Seconds() != 2 || !restart.restart || kill.restart || kill.pause != 0 {
		t.Errorf("faults: join %+v, pause %+v, restart %+v, kill %+v", join, pause, restart, kill)
	}
	// Several conductors mean PostgreSQL without saying so.
	s, err = Parse("t.yaml", []byte(strings.Replace(conductorLab, "  store: postgres\n", "", 1)))
	if err != nil || s.Lab.Store != "postgres" {
		t.Errorf("conductors: 3 alone: store %q, %v", s.Lab.Store, err)
	}
}

func TestConductorErrorsNameFileLine(t *testing.T) {
	tests := map[string]struct{ yaml, want string }{
		"unknown conductor": {
			yaml: conductorLab + "  - fault: {conductor: {name: c9, kill_at: deploying}}\n",
			want: `t.yaml:10:31: steps[1].fault.conductor.name: no conductor "c9" in the lab (it has c1, c2, c3; a fault with join: true adds one)`,
		},
		"killed before it joined": {
			yaml: conductorLab + "  - fault: {conductor: {name: c4}}\n  - fault: {conductor: {name: c4, join: true}}\n",
			want: `t.yaml:10:31: steps[1].fault.conductor.name: no conductor "c4"`,
		},
		"joins twice": {
			yaml: conductorLab + "  - fault: {conductor: {name: c1, join: true}}\n",
			want: `t.yaml:10:31: steps[1].fault.conductor.name: conductor "c1" is in the lab already`,
		},
		"no name with several": {
			yaml: conductorLab + "  - fault: {conductor: {kill_at: deploying}}\n",
			want: `steps[1].fault.conductor.name: which conductor? the lab has c1, c2, c3`,
		},
		"a name without postgres": {
			yaml: good + "  - fault: {conductor: {name: c1}}\n",
			want: `t.yaml:9:31: steps[2].fault.conductor.name: conductor names go with lab.store: postgres`,
		},
		"pause and restart": {
			yaml: conductorLab + "  - fault: {conductor: {name: c1, pause: 2s, restart_after: 1s}}\n",
			want: `t.yaml:10:61: steps[1].fault.conductor.restart_after: a paused conductor goes on after the pause`,
		},
		"bad pause": {
			yaml: conductorLab + "  - fault: {conductor: {name: c1, pause: forever}}\n",
			want: `t.yaml:10:42: steps[1].fault.conductor.pause: want a positive duration like 10s, got "forever"`,
		},
		"unknown store": {
			yaml: strings.Replace(conductorLab, "store: postgres", "store: mysql", 1),
			want: `t.yaml:4:10: lab.store: must be sqlite or postgres, got "mysql"`,
		},
		"sqlite for several": {
			yaml: strings.Replace(conductorLab, "store: postgres", "store: sqlite", 1),
			want: `t.yaml:4:10: lab.store: 3 conductors share one database: want postgres`,
		},
		"too many conductors": {
			yaml: strings.Replace(conductorLab, "conductors: 3", "conductors: 99", 1),
			want: `t.yaml:3:15: lab.conductors: must be 1 to 16 (0 means 1), got 99`,
		},
		"allow_failed with an event": {
			yaml: conductorLab + "  - wait: {event: x.y, allow_failed: true}\n",
			want: `steps[1].wait.allow_failed: goes with a wait for a state`,
		},
		"takeover outcome of no such state": {
			yaml: conductorLab + "  - expect: {takeover_outcome: {state: deploying}}\n",
			want: `t.yaml:10:40: steps[1].expect.takeover_outcome.state: want active, available or manageable`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded, want an error containing %q", tc.want)
			}
			if !errors.Is(err, ErrBadScenario) {
				t.Errorf("error %v does not wrap ErrBadScenario", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n  %v\nwant it to contain\n  %s", err, tc.want)
			}
		})
	}
}

// TestConductorsScenario plays the built-in conductors scenario: three
// `ironlab driver` processes on a PostgreSQL of the lab's own, one SIGKILLed,
// one paused, a fourth joining mid-deploy. Besides the runner's own checks,
// the test reads result.json's account of the conductors and every disk.
func TestConductorsScenario(t *testing.T) {
	pgtest.Require(t)
	s, err := Load("conductors")
	if err != nil {
		t.Fatal(err)
	}
	res, results, state := runScenarioReachable(t, s)
	byName := map[string]ConductorResult{}
	before, after := 0, 0
	for _, c := range res.Conductors {
		byName[c.Name] = c
		before += c.NodesBefore
		after += c.NodesAfter
	}
	if len(res.Conductors) != 4 || byName["c4"].NodesBefore != 0 {
		t.Errorf("conductors %+v, want c1..c4, c4 joined with no nodes", res.Conductors)
	}
	if c2 := byName["c2"]; c2.Alive || c2.NodesBefore == 0 || c2.NodesAfter != 0 {
		t.Errorf("c2 (killed) %+v: want dead, its nodes all gone to others", c2)
	}
	for _, n := range []string{"c1", "c4"} {
		if c := byName[n]; !c.Alive || c.NodesAfter == 0 {
			t.Errorf("%s %+v: want alive, servicing nodes", n, c)
		}
	}
	// c3 is back from its pause (SIGCONT) near the end: alive, and it
	// gets nodes again once the others' rings have it back, which may be
	// after the run's last look.
	if c3 := byName["c3"]; !c3.Alive {
		t.Errorf("c3 (paused, resumed) %+v: want alive", c3)
	}
	page, err := os.ReadFile(filepath.Join(results, "conductors", "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	if c2 := fmt.Sprintf("<th>conductor c2</th><td>%d nodes before the first conductor fault, 0 at the end · dead", byName["c2"].NodesBefore); !strings.Contains(string(page), c2) {
		t.Errorf("report.html does not show %q", c2)
	}
	if before != 60 || after != 60 {
		t.Errorf("nodes serviced before %d, after %d: want 60 each (every node has one conductor)", before, after)
	}
	active := 0
	for _, n := range res.Nodes {
		switch n.FinalState {
		case "active":
			active++
			f, err := os.Open(filepath.Join(state, "disks", n.Name+".raw"))
			if err != nil {
				t.Fatal(err)
			}
			h, err := images.Verify(f)
			f.Close()
			if err != nil || h.ID != "demo-os" {
				t.Errorf("%s: disk: %v (image %q)", n.Name, err, h.ID)
			}
		case "deploy failed":
			// A node whose conductor died with an answer fails at the
			// call-back timeout, as in Ironic: a PXE node's accepted
			// call-back, or an agent node's token handed out in a lookup
			// answer that never got out. The scenario's takeover_outcome
			// has already checked the console and the history (PXE) or
			// the console and the front's lost lookup (agent).
			lost := strings.Contains(n.LastError, "Timeout reached while waiting for callback")
			if !lost && !strings.Contains(n.LastError, "took the node over") {
				t.Errorf("%s: deploy failed with %q, want the takeover named (or the call-back timeout)", n.Name, n.LastError)
			}
		default:
			t.Errorf("%s: %s, want active or deploy failed", n.Name, n.FinalState)
		}
	}
	if active < 30 {
		t.Errorf("%d of 60 nodes active: the takeovers failed more than the nodes caught mid-step", active)
	}
}

// runScenarioReachable is runScenario with a state folder the postgres
// user can reach (as root, the lab's PostgreSQL runs as postgres).
func runScenarioReachable(t *testing.T, s *Scenario) (*Result, string, string) {
	t.Helper()
	tmp := t.TempDir()
	for _, d := range []string{tmp, filepath.Dir(tmp)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return runScenarioIn(t, s, tmp)
}
