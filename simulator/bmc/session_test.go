package bmc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
)

func connect(t *testing.T, b *BMC) (*client.Client, error) {
	t.Helper()
	c, err := client.NewClient(b.Addr().Addr().String(), int(b.Addr().Port()), "admin", "password")
	if err != nil {
		t.Fatal(err)
	}
	c.WithTimeout(500 * time.Millisecond).WithRetry(1).WithCipherSuiteID(types.CipherSuiteID17)
	return c, c.Connect(context.Background())
}

// The BMC caps its sessions; a closed session frees its slot.
func TestSessionCap(t *testing.T) {
	b := startBMC(t, bmctest.New("node-0"), Options{MaxSessions: 2})
	var open []*client.Client
	for range 2 {
		c, err := connect(t, b)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	if c, err := connect(t, b); err == nil {
		c.Close(context.Background())
		t.Fatal("third session opened with MaxSessions 2")
	}
	if err := open[0].Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	c, err := connect(t, b)
	if err != nil {
		t.Fatalf("after closing one: %v", err)
	}
	c.Close(context.Background())
	open[1].Close(context.Background())
}

// An idle session is closed by the BMC: its next request is not answered.
// The BMC's clock is the test's: it jumps past the timeout (and the
// library's 3 s tolerance) and fires the eviction sweep, instead of a sleep
// that a loaded machine may outlast.
func TestIdleTimeout(t *testing.T) {
	clk := newFakeClock()
	b := startBMC(t, bmctest.New("node-0"), Options{IdleTimeout: time.Second, Clock: clk})
	c, err := connect(t, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetChassisStatus(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := b.core.Sessions.Count(); n != 1 {
		t.Fatalf("%d sessions after one connect, want 1", n)
	}
	clk.Advance(time.Second + 4*time.Second) // timeout + tolerance, and more
	deadline := time.After(30 * time.Second)
	for b.core.Sessions.Count() != 0 {
		select {
		case <-deadline:
			t.Fatalf("the session was not evicted: %d sessions", b.core.Sessions.Count())
		case <-time.After(10 * time.Millisecond):
			clk.Advance(0) // the sweep may have been busy: tick again
		}
	}
	_, err = c.GetChassisStatus(context.Background())
	if err == nil {
		t.Fatal("idle session still served")
	}
	if errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// A session in use stays open, however long the lab runs.
func TestBusySessionIsNotEvicted(t *testing.T) {
	clk := newFakeClock()
	b := startBMC(t, bmctest.New("node-0"), Options{IdleTimeout: 2 * time.Second, Clock: clk})
	c, err := connect(t, b)
	if err != nil {
		t.Fatal(err)
	}
	for range 8 { // 8 s in all: past timeout + tolerance, were it idle
		clk.Advance(time.Second) // less than the timeout between requests
		if _, err := c.GetChassisStatus(context.Background()); err != nil {
			t.Fatalf("after %v of activity: %v", clk.Since(), err)
		}
	}
	if n := b.core.Sessions.Count(); n != 1 {
		t.Errorf("%d sessions, want the busy one", n)
	}
	c.Close(context.Background())
}
