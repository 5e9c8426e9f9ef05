package bmc

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
	"github.com/ironlab/ironlab/simulator/bmc/pyghmipeer"
)

// benchClients is how many sessions hit one BMC at once.
const benchClients = 4

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

// rate runs n operations spread over benchClients goroutines and returns
// operations per second.
func rate(b *testing.B, n int, op func(ctx context.Context, worker int) error) float64 {
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, benchClients)
	start := time.Now()
	for w := range benchClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += benchClients {
				if err := op(ctx, w); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return float64(n) / el.Seconds()
}

// BenchmarkLanplus measures what one BMC process serves over lanplus: whole
// sessions (Get Channel Auth Capabilities, Open Session, RAKP 1-4, Set
// Session Privilege, Get Chassis Status, Close Session) and steady-state Get
// Chassis Status in open sessions; the same against pyghmi's BMC in the same
// run; and the ratio.
func BenchmarkLanplus(b *testing.B) {
	session := func(addr netip.AddrPort) func(context.Context, int) error {
		return func(ctx context.Context, _ int) error {
			c, err := benchClient(ctx, addr)
			if err != nil {
				return fmt.Errorf("session to %s: %w", addr, err)
			}
			defer c.Close(ctx)
			_, err = c.GetChassisStatus(ctx)
			return err
		}
	}
	steady := func(b *testing.B, addr netip.AddrPort) func(context.Context, int) error {
		var cs []*client.Client
		for range benchClients {
			c, err := benchClient(context.Background(), addr)
			if err != nil {
				b.Fatalf("session to %s: %v", addr, err)
			}
			b.Cleanup(func() { c.Close(context.Background()) })
			cs = append(cs, c)
		}
		return func(ctx context.Context, w int) error {
			_, err := cs[w].GetChassisStatus(ctx)
			return err
		}
	}
	for _, mode := range []string{"session", "steady"} {
		b.Run(mode, func(b *testing.B) {
			ours := startBMC(b, bmctest.New("bench"), Options{}).Addr()
			theirs := startPyghmiBMC(b)
			opOurs, opTheirs := session(ours), session(theirs)
			unit := "sessions/s"
			if mode == "steady" {
				opOurs, opTheirs = steady(b, ours), steady(b, theirs)
				unit = "req/s"
			}
			b.ResetTimer()
			r1 := rate(b, b.N, opOurs)
			r2 := rate(b, b.N, opTheirs)
			b.StopTimer()
			b.ReportMetric(r1, "ironlab-"+unit)
			b.ReportMetric(r2, "pyghmi-"+unit)
			b.ReportMetric(r1/r2, "ratio")
			b.ReportMetric(0, "ns/op")
		})
	}
}
