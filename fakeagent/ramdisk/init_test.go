package ramdisk

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/scenarios/labtest"
)

func TestOptions(t *testing.T) {
	got := options("console=ttyS0 quiet ironlab.fetch=http://10.0.2.2:80/x ironlab.ip=10.0.2.16/24")
	want := map[string]string{"console": "ttyS0", "quiet": "", "ironlab.fetch": "http://10.0.2.2:80/x", "ironlab.ip": "10.0.2.16/24"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("options (-want +got):\n%s", diff)
	}
}

// TestRouteMessage checks the default-route request byte by byte where it
// matters: header length/type/flags, rtmsg, and both attributes.
func TestRouteMessage(t *testing.T) {
	msg := nlMessage(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, 7, rtMsg(0),
		nlAttr(unix.RTA_GATEWAY, net.ParseIP("10.0.2.2").To4()), nlAttr(unix.RTA_OIF, u32(2)))
	if got := binary.NativeEndian.Uint32(msg); int(got) != len(msg) || len(msg) != 16+12+8+8 {
		t.Fatalf("length field %d, message %d bytes", got, len(msg))
	}
	if typ := binary.NativeEndian.Uint16(msg[4:]); typ != unix.RTM_NEWROUTE {
		t.Errorf("type %d", typ)
	}
	flags := binary.NativeEndian.Uint16(msg[6:])
	for _, f := range []uint16{unix.NLM_F_REQUEST, unix.NLM_F_ACK, unix.NLM_F_CREATE, unix.NLM_F_REPLACE} {
		if flags&f == 0 {
			t.Errorf("flag %#x missing from %#x", f, flags)
		}
	}
	rt := msg[16:28]
	if rt[0] != unix.AF_INET || rt[4] != unix.RT_TABLE_MAIN || rt[7] != unix.RTN_UNICAST {
		t.Errorf("rtmsg %v", rt)
	}
	if gw := msg[28+4 : 28+8]; !net.IP(gw).Equal(net.ParseIP("10.0.2.2")) {
		t.Errorf("gateway attr %v", gw)
	}
	if oif := binary.NativeEndian.Uint32(msg[36+4:]); oif != 2 {
		t.Errorf("oif attr %d", oif)
	}
}

// An agent whose loop is overdue by StallGrace gets its goroutines dumped
// on the console once, with the marker; one that keeps time gets nothing.
func TestWatchAgentDumpsAStalledAgent(t *testing.T) {
	a, err := fakeagent.New(fakeagent.Config{APIURL: "http://127.0.0.1:1", AdvertiseURL: "http://127.0.0.1:2",
		Hardware: fakeagent.NewMemHardware(fakeagent.Hardware{}), LookupInterval: 10 * time.Millisecond,
		RequestTimeout: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }() // looks up against a closed port, forever
	defer func() {
		cancel()
		labtest.Recv(t, done, "the agent to stop")
	}()
	watch := func(skew time.Duration) string {
		var buf labtest.SyncBuffer
		wctx, stop := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer stop()
		watchAgent(wctx, a, &buf, func() time.Time { return time.Now().Add(skew) }, 20*time.Millisecond)
		return buf.String()
	}
	if out := watch(0); out != "" {
		t.Errorf("an agent that keeps time was dumped:\n%s", out)
	}
	// As if the loop had made no attempt for 10 minutes.
	out := watch(10 * time.Minute)
	if strings.Count(out, StallMarker+": the agent's lookup/heartbeat loop is") != 1 || !strings.Contains(out, "goroutine ") ||
		!strings.Contains(out, "fakeagent.(*Agent).lookupLoop") {
		t.Errorf("a stalled agent's dump (once, with its goroutines):\n%s", out)
	}
}
