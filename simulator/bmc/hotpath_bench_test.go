package bmc

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
	"github.com/ironlab/ironlab/simulator/bmc/ipmiload"
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

// BenchmarkServe measures one BMC over loopback UDP under the lean load
// client (ipmiload: cipher suite 3, 8 sessions in flight over 2 sockets, one
// goroutine per socket), so that the figure is the BMC's, not the client's:
// "session" is Open Session, RAKP 1-4 and Close Session (ns/op per session);
// "steady" is Get Chassis Status in open sessions, each way AES-CBC-128
// encrypted and HMAC-SHA1-96 signed (ns/op per request). BenchmarkServeGoIPMI
// is the same with go-ipmi's client, one request at a time.
func BenchmarkServe(b *testing.B) {
	ctx := context.Background()
	o := ipmiload.LoadOptions{Options: ipmiload.Options{Username: "admin", Password: "password"}, Window: time.Minute}
	// "-own-socket": every session from its own client port, as separate
	// ipmitool runs (and pyghmi's BMC needs); ironlab bench runs this way.
	for _, mode := range []string{"session", "steady", "session-own-socket", "steady-own-socket"} {
		b.Run(mode, func(b *testing.B) {
			bmc := startBMC(b, bmctest.New("bench"), Options{})
			run := ipmiload.RunSessions
			unit := "sessions/s"
			if strings.HasPrefix(mode, "steady") {
				run, unit = ipmiload.RunRequests, "req/s"
			}
			o := o
			o.Ops = b.N
			o.SocketPerSession = strings.HasSuffix(mode, "own-socket")
			b.ResetTimer()
			r, err := run(ctx, bmc.Addr(), o)
			b.StopTimer()
			if err != nil || r.Errors > 0 {
				b.Fatalf("%+v: %v", r, err)
			}
			b.ReportMetric(r.PerS, unit)
		})
	}
}

// BenchmarkServeGoIPMI is BenchmarkServe with github.com/bougou/go-ipmi's
// client, one request at a time: a second, independent client (it spends
// most of the CPU itself).
func BenchmarkServeGoIPMI(b *testing.B) {
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
