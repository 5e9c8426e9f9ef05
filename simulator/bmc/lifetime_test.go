package bmc

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
)

// stuckMachine's power changes hang until their context ends.
type stuckMachine struct {
	*bmctest.Machine
	started chan struct{}
	ended   atomic.Bool
}

func (m *stuckMachine) SetPower(ctx context.Context, _ simulator.PowerAction) error {
	close(m.started)
	<-ctx.Done()
	m.ended.Store(true)
	return ctx.Err()
}

// A power change that outlasts Chassis Control's answer ends with the BMC:
// Close cancels it and waits for it.
func TestLatePowerChangeEndsWithTheBMC(t *testing.T) {
	m := &stuckMachine{Machine: bmctest.New("stuck"), started: make(chan struct{})}
	b, err := New(m, "127.0.0.1:0", Options{ControlWait: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b.Start(context.Background())
	_, cc, err := b.chassisControl(context.Background(), nil, []byte{0x01})
	if err != nil || cc != types.CodeOK {
		t.Fatalf("chassis control answered %v, %v; want OK once ControlWait passed", cc, err)
	}
	select {
	case <-m.started:
	case <-time.After(5 * time.Second):
		t.Fatal("the power change never started")
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return in 5s")
	}
	if !m.ended.Load() {
		t.Error("Close returned while the power change still ran")
	}
	if _, cc, _ := b.chassisControl(context.Background(), nil, []byte{0x01}); cc == types.CodeOK {
		t.Error("a closed BMC accepted a power change")
	}
}
