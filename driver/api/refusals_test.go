package api_test

import (
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver"
	"github.com/ironlab/ironlab/driver/api"
	"github.com/ironlab/ironlab/scenarios/labtest"
)

// TestRefusedHeartbeatsLogged: what an agent is refused (a forged token,
// an unknown node, a malformed body, a lookup of no node) the driver's log
// says too, at warn level with the node, the status the agent got and
// why; an agent that keeps heartbeating with a bad token gets one line
// per node every 10 s, the next saying how many were not logged.
func TestRefusedHeartbeatsLogged(t *testing.T) {
	var logs labtest.SyncBuffer
	now := time.Unix(1700000000, 0)
	t.Cleanup(api.SetRefusalClock(func() time.Time { return now }))
	s := newServer(t, func(c *driver.Config) {
		c.FastTrack = true
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	r := s.do(t, "POST", "/v1/nodes", "", `{"name": "n0", "driver": "fake_agent"}`)
	id := r.json["uuid"].(string)
	r = s.do(t, "GET", "/v1/lookup?node_uuid="+id, "1.62", "")
	token := r.json["config"].(map[string]any)["agent_token"].(string)
	beat := func(ident, token string) int {
		t.Helper()
		return s.do(t, "POST", "/v1/heartbeat/"+ident, "1.68",
			fmt.Sprintf(`{"callback_url": "http://127.0.0.1:9/n0", "agent_token": %q, "agent_version": "9.4.0"}`, token)).status
	}
	refusals := func(kind string) []string {
		var out []string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, `msg="`+kind+` refused"`) {
				out = append(out, l)
			}
		}
		return out
	}
	for range 5 {
		if st := beat(id, "forged"); st != 400 {
			t.Fatalf("heartbeat with a forged token: HTTP %d, want 400", st)
		}
	}
	lines := refusals("heartbeat")
	if len(lines) != 1 {
		t.Fatalf("5 heartbeats with a forged token logged %d lines, want 1:\n%s", len(lines), logs.String())
	}
	want := regexp.MustCompile(`level=WARN msg="heartbeat refused" node=` + id + ` status=400 reason="invalid or missing agent token received for node ` + id + `" agent=127\.0\.0\.1:\d+$`)
	if !want.MatchString(lines[0]) {
		t.Errorf("the refusal's line:\n%s\nwant it to match %s", lines[0], want)
	}
	// Another node's refusals have their own line, whatever the reason.
	if st := beat("ghost", token); st != 404 {
		t.Fatalf("heartbeat of an unknown node: HTTP %d, want 404", st)
	}
	if st := s.do(t, "POST", "/v1/nodes/other/vendor_passthru/heartbeat", "", `{"agent_url": 9}`).status; st != 400 {
		t.Fatalf("legacy heartbeat with a malformed body: HTTP %d, want 400", st)
	}
	if st := s.do(t, "GET", "/v1/lookup?addresses=52:54:00:00:00:99", "1.62", "").status; st != 404 {
		t.Fatalf("lookup of no node: HTTP %d, want 404", st)
	}
	lines = refusals("heartbeat")
	if len(lines) != 3 || !strings.Contains(lines[1], "node=ghost status=404 ") || !strings.Contains(lines[2], `node=other status=400 reason="`) ||
		!strings.Contains(lines[2], "agent_url") {
		t.Errorf("refusals of an unknown node, then a malformed body:\n%s", strings.Join(lines, "\n"))
	}
	if l := refusals("lookup"); len(l) != 1 || !strings.Contains(l[0], "level=WARN") || !strings.Contains(l[0], "node=52:54:00:00:00:99 status=404 ") {
		t.Errorf("a refused lookup's lines:\n%s", strings.Join(l, "\n"))
	}
	// An accepted heartbeat logs no refusal.
	if st := beat(id, token); st != 202 {
		t.Fatalf("heartbeat with its token: HTTP %d, want 202", st)
	}
	if n := len(refusals("heartbeat")); n != 3 {
		t.Errorf("an accepted heartbeat: %d refusal lines, want still 3", n)
	}
	// 10 s later the next refusal is logged, with the 4 that were not.
	now = now.Add(10 * time.Second)
	if st := beat(id, "forged"); st != 400 {
		t.Fatalf("heartbeat with a forged token: HTTP %d, want 400", st)
	}
	lines = refusals("heartbeat")
	if len(lines) != 4 || !strings.Contains(lines[3], "node="+id+" status=400 ") || !strings.HasSuffix(lines[3], " suppressed=4") {
		t.Errorf("the forged token's next line, 10 s after the first:\n%s", strings.Join(lines, "\n"))
	}
}
