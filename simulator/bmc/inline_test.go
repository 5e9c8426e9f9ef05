package bmc

import (
	"bytes"
	"testing"

	"github.com/bougou/go-ipmi/pkg/protocol"
)

// The read loop's response framing is byte for byte the library's.
func TestAppendIPMIResponse(t *testing.T) {
	for _, data := range [][]byte{nil, {0x01, 0x10, 0x40}, bytes.Repeat([]byte{0xab}, 20)} {
		want := protocol.BuildIPMIResponse(0x00, 0x01, 0x2a, 0xc1, data)
		if got := appendIPMIResponse([]byte{0xff}, 0x00, 0x01, 0x2a, 0xc1, data)[1:]; !bytes.Equal(got, want) {
			t.Errorf("data % x: got % x, want % x", data, got, want)
		}
	}
}
