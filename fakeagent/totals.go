package fakeagent

import "sync/atomic"

// Totals counts what a set of agents sent to the driver, over every boot
// (an Agent's State counts one boot's): lookups tried (answered or not),
// heartbeats the driver accepted, heartbeats that failed. A bench reads it
// at the start and end of each phase: how many lookups and heartbeats a
// phase cost says where its time went.
type Totals struct {
	Lookups, Heartbeats, HeartbeatErrors atomic.Uint64
}

// TotalsSnapshot is Totals at one moment.
type TotalsSnapshot struct {
	Lookups, Heartbeats, HeartbeatErrors uint64
}

// Snapshot reads t (zero for a nil t).
func (t *Totals) Snapshot() TotalsSnapshot {
	if t == nil {
		return TotalsSnapshot{}
	}
	return TotalsSnapshot{Lookups: t.Lookups.Load(), Heartbeats: t.Heartbeats.Load(), HeartbeatErrors: t.HeartbeatErrors.Load()}
}

type counted int

const (
	countLookup counted = iota
	countHeartbeat
	countHeartbeatError
)

// count counts one of what; nothing when t is nil (an agent on its own).
func (t *Totals) count(what counted) {
	if t == nil {
		return
	}
	switch what {
	case countLookup:
		t.Lookups.Add(1)
	case countHeartbeat:
		t.Heartbeats.Add(1)
	case countHeartbeatError:
		t.HeartbeatErrors.Add(1)
	}
}
