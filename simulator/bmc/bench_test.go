package bmc

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
	"github.com/ironlab/ironlab/simulator/bmc/ipmiload"
	"github.com/ironlab/ironlab/simulator/bmc/pyghmipeer"
)

// startPyghmiBMC runs pyghmipeer's BMC on a free loopback port.
func startPyghmiBMC(b *testing.B) netip.AddrPort {
	b.Helper()
	py := needPyghmi(b)
	l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	addr := l.LocalAddr().(*net.UDPAddr).AddrPort()
	l.Close()
	stop, err := pyghmipeer.Start(context.Background(), py, b.TempDir(), int(addr.Port()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(stop)
	return addr
}

func benchClient(ctx context.Context, addr netip.AddrPort) (*client.Client, error) {
	c, err := client.NewClient(addr.Addr().String(), int(addr.Port()), "admin", "password")
	if err != nil {
		return nil, err
	}
	// Suite 3: the one pyghmi's BMC speaks.
	c.WithTimeout(2 * time.Second).WithRetry(2).WithCipherSuiteID(types.CipherSuiteID3)
	return c, c.Connect(ctx)
}

// BenchmarkLanplus measures what one BMC process serves over lanplus, ours
// and pyghmi's in the same run, with the same lean client (ipmiload: suite 3,
// 8 sessions in flight, each from its own client port, which pyghmi's BMC
// needs): whole sessions (Open Session, RAKP 1-4, Close Session) and
// steady-state Get Chassis Status in open sessions; and the ratio.
func BenchmarkLanplus(b *testing.B) {
	for _, mode := range []string{"session", "steady"} {
		b.Run(mode, func(b *testing.B) {
			ours := startBMC(b, bmctest.New("bench"), Options{}).Addr()
			theirs := startPyghmiBMC(b)
			run, unit := ipmiload.RunSessions, "sessions/s"
			if mode == "steady" {
				run, unit = ipmiload.RunRequests, "req/s"
			}
			o := ipmiload.LoadOptions{Options: ipmiload.Options{Username: "admin", Password: "password"},
				InFlight: 8, SocketPerSession: true, Window: time.Minute, Ops: b.N}
			measure := func(addr netip.AddrPort) float64 {
				r, err := run(context.Background(), addr, o)
				if err != nil || r.Errors > 0 {
					b.Fatalf("%s: %+v: %v", addr, r, err)
				}
				return r.PerS
			}
			b.ResetTimer()
			r1 := measure(ours)
			r2 := measure(theirs)
			b.StopTimer()
			b.ReportMetric(r1, "ironlab-"+unit)
			b.ReportMetric(r2, "pyghmi-"+unit)
			b.ReportMetric(r1/r2, "ratio")
			b.ReportMetric(0, "ns/op")
		})
	}
}
