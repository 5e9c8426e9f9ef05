package scenarios

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/fakeagent/pxedeploy"
	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/fake"
	"github.com/ironlab/ironlab/simulator/lab"
)

// A PXE node failed by its call-back timeout passes takeover_outcome only
// when a call-back was accepted and never acted on: on the ramdisk's
// console, not in the history (its conductor was killed between the 202
// and saving the node), and the history has the timeout. CI caught the
// case: fp-10 failed the conductors scenario so, with no trace of its
// accepted call-back in the history.
func TestLostCallback(t *testing.T) {
	accepted := pxedeploy.AcceptedLine(1)
	timedOut := []string{"provision/deploy", "provision/wait", "provision/callback timeout", "error/fail", "provision/fail"}
	lost := lostLookup{conductor: "c2", addresses: []string{"52:54:00:00:00:01"}, err: "EOF"}
	tests := map[string]struct {
		events  []string // kind/event
		console string
		lost    []lostLookup // the front's; nil: a lab without one
		want    string       // "" passes, else a part of the failure
	}{
		"agent's token handed out in a lookup answer its conductor's death lost": {
			events: timedOut, console: fakeagent.MaskedTokenLine,
			lost: []lostLookup{{conductor: "c1", addresses: []string{"52:54:00:00:00:09"}}, lost},
		},
		"the same, the lost lookup naming the node by UUID": {
			events: timedOut, console: fakeagent.MaskedTokenLine,
			lost: []lostLookup{{conductor: "c2", nodeUUID: "uuid-fp-0"}},
		},
		"token handed out already, no lookup of the node lost": {
			events: timedOut, console: fakeagent.MaskedTokenLine,
			lost: []lostLookup{{conductor: "c1", addresses: []string{"52:54:00:00:00:09"}}},
			want: "no lookup of it was cut short",
		},
		"token handed out already in a lab without a front": {
			events: timedOut, console: fakeagent.MaskedTokenLine,
			want: "no front",
		},
		"lookup lost, but no timeout in the history": {
			events: []string{"provision/deploy", "provision/wait", "error/fail", "provision/fail"}, console: fakeagent.MaskedTokenLine,
			lost: []lostLookup{lost},
			want: `no "callback timeout" event`,
		},
		"accepted, conductor killed before recording it": {
			events:  []string{"provision/deploy", "provision/wait", "provision/callback timeout", "error/fail", "provision/fail"},
			console: "ironlab fake BIOS: boot #1 from network\n" + accepted,
		},
		"never accepted": {
			events:  []string{"provision/deploy", "provision/wait", "provision/callback timeout", "error/fail", "provision/fail"},
			console: "ironlab fake BIOS: boot #1 from network\n",
			want:    "the ramdisk's console shows 0 accepted, the history 0",
		},
		"the accepted one was acted on, a later wait timed out": {
			events:  []string{"provision/deploy", "provision/wait", "pxe/pass_deploy_info", "provision/resume", "provision/wait", "provision/callback timeout", "provision/fail"},
			console: accepted,
			want:    "the ramdisk's console shows 1 accepted, the history 1",
		},
		"accepted, but no timeout in the history": {
			events:  []string{"provision/deploy", "provision/wait", "error/fail", "provision/fail"},
			console: accepted,
			want:    `no "callback timeout" event`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var evs []map[string]string
			for _, e := range tc.events {
				kind, event, _ := strings.Cut(e, "/")
				evs = append(evs, map[string]string{"kind": kind, "event": event})
			}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/nodes/fp-0/events" {
					http.NotFound(w, r)
					return
				}
				json.NewEncoder(w).Encode(map[string]any{"events": evs})
			}))
			defer srv.Close()
			m, err := fake.New(fake.Options{Name: "fp-0"})
			if err != nil {
				t.Fatal(err)
			}
			m.ConsolePrintf("%s", tc.console)
			r := &runner{api: ironic.Dial(srv.URL, "1.78", nil)}
			if tc.lost != nil {
				r.conds = &conductorSet{lost: tc.lost}
			}
			n := &lab.Node{Name: "fp-0", UUID: "uuid-fp-0", MACs: []string{"52:54:00:00:00:0A", "52:54:00:00:00:01"}, Machine: m}
			got := r.lostCallback(context.Background(), n)
			switch {
			case tc.want == "" && got != "":
				t.Errorf("lostCallback: %q, want it to pass", got)
			case tc.want != "" && !strings.Contains(got, tc.want):
				t.Errorf("lostCallback: %q, want a failure with %q", got, tc.want)
			}
		})
	}
}
