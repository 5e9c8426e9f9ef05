package sqlite

import (
	"context"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/driver/store/storetest"
)

// BenchmarkTransition measures one persisted state transition: the state
// machine's check (states.Next) and the node's new state written with its
// event in one transaction, round the cycle manageable -> cleaning ->
// available -> manageable.
func BenchmarkTransition(b *testing.B) {
	ctx := context.Background()
	s, _ := open(b)
	n := &store.Node{UUID: "n1", Name: "node-0", Driver: "fake_agent", ProvisionState: states.Manageable}
	if err := s.CreateNode(ctx, n); err != nil {
		b.Fatal(err)
	}
	cycle := []string{states.EvProvide, states.EvDone, states.EvManage}
	b.ResetTimer()
	for i := range b.N {
		ev := cycle[i%len(cycle)]
		to, err := states.Next(n.ProvisionState, ev)
		if err != nil {
			b.Fatal(err)
		}
		e := &store.Event{NodeUUID: n.UUID, Time: time.Now(), Kind: store.KindProvision, FromState: n.ProvisionState, ToState: to, Event: ev}
		n.ProvisionState = to
		if err := s.UpdateNode(ctx, n, e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHeartbeatWrite measures the store's half of a heartbeat: the
// one small write of the agent's fields (RecordHeartbeat).
func BenchmarkHeartbeatWrite(b *testing.B) {
	ctx := context.Background()
	s, _ := open(b)
	if err := s.CreateNode(ctx, &store.Node{UUID: "n1", Driver: "fake_agent", ProvisionState: states.Available}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := s.RecordHeartbeat(ctx, "n1", store.Heartbeat{URL: "http://127.0.0.1:9999", Version: "10", Dialect: "v1",
			At: time.Unix(time.Now().Unix(), 0).UTC()}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDueNodes: storetest.BenchDueNodes on SQLite.
func BenchmarkDueNodes(b *testing.B) {
	s, _ := open(b)
	storetest.BenchDueNodes(b, s)
}
