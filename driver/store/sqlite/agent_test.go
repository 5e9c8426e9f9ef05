package sqlite

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
)

// TestGetAgentIsGetNodesAgent: GetAgent reads the agent's fields as GetNode
// has them, each written by its own write (heartbeat, token, watchdog).
func TestGetAgentIsGetNodesAgent(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	if err := s.CreateNode(ctx, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: states.Available}); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		n, err := s.GetNode(ctx, "n1")
		if err != nil {
			t.Fatal(err)
		}
		a, err := s.GetAgent(ctx, "n1")
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(n.Agent, a); d != "" {
			t.Errorf("%s: GetAgent (-GetNode's +GetAgent):\n%s", when, d)
		}
	}
	check("no agent")
	at := time.Unix(1700000000, 0).UTC()
	if _, err := s.RecordHeartbeat(ctx, "n1", store.Heartbeat{URL: "https://127.0.0.1:9/n1", Version: "10.0.0", VerifyCA: "PEM", Dialect: "v1", At: at}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.IssueAgentToken(ctx, "n1", "token"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetWatchdog(ctx, "n1", 2, at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	check("after a heartbeat, a token and a watchdog action")
	if a, _ := s.GetAgent(ctx, "n1"); a.URL != "https://127.0.0.1:9/n1" || a.Token != "token" || a.WatchdogReboots != 2 || !a.LastHeartbeat.Equal(at) {
		t.Errorf("agent = %+v", a)
	}
	if _, err := s.GetAgent(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("agent of no node: %v, want ErrNotFound", err)
	}
}
