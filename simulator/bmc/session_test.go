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
func TestIdleTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the BMC's eviction sweep")
	}
	b := startBMC(t, bmctest.New("node-0"), Options{IdleTimeout: time.Second})
	c, err := connect(t, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetChassisStatus(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Timeout + the library's 3 s tolerance + one 3 s sweep.
	time.Sleep(7500 * time.Millisecond)
	_, err = c.GetChassisStatus(context.Background())
	if err == nil {
		t.Fatal("idle session still served")
	}
	if errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}
