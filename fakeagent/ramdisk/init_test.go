package ramdisk

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
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
