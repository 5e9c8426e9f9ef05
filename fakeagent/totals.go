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

// Snapshot reads t.
func (t *Totals) Snapshot() TotalsSnapshot {
	return TotalsSnapshot{Lookups: t.Lookups.Load(), Heartbeats: t.Heartbeats.Load(), HeartbeatErrors: t.HeartbeatErrors.Load()}
}
