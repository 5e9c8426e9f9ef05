package bmc

import (
	"context"
	"testing"

	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
)

// BenchmarkDecodePacket measures the BMC's framing check of one datagram
// (what every request pays before the IPMI stack sees it), with the
// session counter's look at it.
func BenchmarkDecodePacket(b *testing.B) {
	for name, pkt := range map[string][]byte{
		"asf-ping":      seedPackets[0],
		"v15-auth-caps": seedPackets[1],
		"rmcpplus-ipmi": seedPackets[3],
	} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(pkt)))
			for range b.N {
				h, err := decodePacket(pkt)
				if err != nil {
					b.Fatal(err)
				}
				_ = opensSession(h)
			}
		})
	}
}

// BenchmarkServe measures one BMC over loopback UDP with one client, no
// peer needed (BenchmarkLanplus compares with pyghmi): "session" is a whole
// lanplus session, whose cost is mostly the RAKP exchange's HMACs and key
// derivation (cipher suite 3); "steady" is Get Chassis Status in an open
// session, each way AES-CBC-128 encrypted and HMAC-SHA1-96 signed.
func BenchmarkServe(b *testing.B) {
	ctx := context.Background()
	b.Run("session", func(b *testing.B) {
		addr := startBMC(b, bmctest.New("bench"), Options{}).Addr()
		b.ResetTimer()
		for range b.N {
			c, err := benchClient(ctx, addr)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.GetChassisStatus(ctx); err != nil {
				b.Fatal(err)
			}
			c.Close(ctx)
		}
	})
	b.Run("steady", func(b *testing.B) {
		addr := startBMC(b, bmctest.New("bench"), Options{}).Addr()
		c, err := benchClient(ctx, addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close(ctx)
		b.ResetTimer()
		for range b.N {
			if _, err := c.GetChassisStatus(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
