package bmc

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
)

// BenchmarkRSSPerIdleBMC starts 10,000 BMCs in this process, each on its
// own loopback UDP port in front of its own machine, checks a sample of
// them answers a whole lanplus session, and reports the RSS and Go heap
// growth per BMC (the BMC's share of issue 13's goal of under 64 KiB per
// idle node, disks aside).
func BenchmarkRSSPerIdleBMC(b *testing.B) {
	const n = 10000
	for range b.N {
		runtime.GC()
		before, heap0 := procRSS(b), heapInUse()
		ctx, cancel := context.WithCancel(context.Background())
		bmcs := make([]*BMC, 0, n)
		for i := range n {
			bm, err := New(bmctest.New(fmt.Sprintf("node-%d", i)), "127.0.0.1:0", Options{})
			if err != nil {
				b.Fatalf("BMC %d: %v", i, err)
			}
			bm.Start(ctx)
			bmcs = append(bmcs, bm)
		}
		for i := 0; i < n; i += n / 10 {
			c, err := benchClient(ctx, bmcs[i].Addr())
			if err != nil {
				b.Fatalf("BMC %d of %d: %v", i, n, err)
			}
			if _, err := c.GetChassisStatus(ctx); err != nil {
				b.Fatalf("BMC %d of %d: %v", i, n, err)
			}
			c.Close(ctx)
		}
		runtime.GC()
		after, heap1 := procRSS(b), heapInUse()
		b.ReportMetric(float64(after-before)/n/1024, "RSS-KiB/BMC")
		b.ReportMetric(float64(heap1-heap0)/n/1024, "heap-KiB/BMC")
		b.ReportMetric(0, "ns/op")
		cancel()
		for _, bm := range bmcs {
			bm.Close()
		}
	}
}

// heapInUse is the Go heap's bytes in use plus goroutine stacks.
func heapInUse() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}

// procRSS is the process's resident set size in bytes (/proc/self/statm).
func procRSS(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Skipf("no /proc/self/statm: %v", err)
	}
	f := strings.Fields(string(raw))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
