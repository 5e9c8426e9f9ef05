package bmc

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
)

// The counters are what `ironlab bench` reports as IPMI requests and
// sessions per second: each whole session a client opens counts once, each
// datagram the BMC answers once, and a malformed one only as dropped.
func TestCountersCountSessionsAndRequests(t *testing.T) {
	b := startBMC(t, bmctest.New("counted"), Options{})
	if c := b.Counters(); c != (Counters{}) {
		t.Fatalf("a new BMC's counters = %+v, want zero", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for range 2 {
		c, err := benchClient(ctx, b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetChassisStatus(ctx); err != nil {
			t.Fatal(err)
		}
		c.Close(ctx)
	}
	got := b.Counters()
	if got.Sessions != 2 {
		t.Errorf("sessions = %d after two lanplus sessions, want 2", got.Sessions)
	}
	// Each session: auth capabilities, open session, RAKP 1 and 3, set
	// privilege, chassis status, close session: at least 7 requests.
	if got.Requests < 14 {
		t.Errorf("requests = %d after two whole sessions, want >= 14", got.Requests)
	}
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte{0x06, 0x00, 0xff, 0x42, 0x00}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for b.Counters().Dropped == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	after := b.Counters()
	if after.Dropped != 1 || after.Requests != got.Requests || after.Sessions != got.Sessions {
		t.Errorf("after a malformed packet: %+v, want dropped 1 and the rest as %+v", after, got)
	}
}

// OpenSessions is what the bench waits on before power_off: a session the
// client keeps open counts until it is closed, one closed counts no more.
func TestOpenSessionsCountsKeptSessions(t *testing.T) {
	b := startBMC(t, bmctest.New("kept"), Options{})
	if n := b.OpenSessions(); n != 0 {
		t.Fatalf("a new BMC holds %d sessions, want 0", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := benchClient(ctx, b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	second, err := benchClient(ctx, b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if n := b.OpenSessions(); n != 2 {
		t.Errorf("two clients in sessions: the BMC holds %d, want 2", n)
	}
	first.Close(ctx)
	if n := b.OpenSessions(); n != 1 {
		t.Errorf("one session closed, one open: the BMC holds %d, want 1", n)
	}
	second.Close(ctx)
	if n := b.OpenSessions(); n != 0 {
		t.Errorf("both sessions closed: the BMC holds %d, want 0", n)
	}
}
