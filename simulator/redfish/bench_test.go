package redfish

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
)

// benchSystems is how many systems one service holds in the benchmarks.
const benchSystems = 2000

// benchMachine is bmctest's in-memory machine with a UUID of its own, so
// that the numbers are the Redfish service's, not a backend's.
type benchMachine struct {
	*bmctest.Machine
	uuid string
	hw   simulator.Hardware
}

func (m *benchMachine) UUID() string                 { return m.uuid }
func (m *benchMachine) Hardware() simulator.Hardware { return m.hw }

func newBenchMachine(i int) *benchMachine {
	return &benchMachine{
		Machine: bmctest.New(fmt.Sprintf("node-%d", i)),
		uuid:    fmt.Sprintf("b0000000-0000-4000-8000-%012d", i),
		hw: simulator.Hardware{CPUs: 2, CPUArch: "x86_64", MemoryMB: 2048,
			NICs:  []simulator.NIC{{Name: "eth0", MAC: fmt.Sprintf("52:54:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff)}},
			Disks: []simulator.Disk{{Name: "sda", SizeBytes: 10 << 30}}},
	}
}

func benchService(b *testing.B, n int) *Service {
	b.Helper()
	svc, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		if _, err := svc.Add(newBenchMachine(i)); err != nil {
			b.Fatal(err)
		}
	}
	if err := svc.Start("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { svc.Close() })
	return svc
}

func benchClient(conns int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns}}
}

// run sends b.N requests from 4 goroutines per CPU, spread over the
// systems, and reports requests per second.
func runRequests(b *testing.B, svc *Service, n int, req func(i int) (*http.Request, int)) {
	c := benchClient(4 * runtime.GOMAXPROCS(0))
	var next atomic.Int64
	b.SetParallelism(4)
	cpu0 := cpuTime(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1)) % n
			r, want := req(i)
			r.SetBasicAuth("admin", "password")
			resp, err := c.Do(r)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				b.Errorf("%s %s: %d, want %d", r.Method, r.URL.Path, resp.StatusCode, want)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	// On a shared machine wall-clock rates say more about the neighbours:
	// requests per CPU-second of this process (client and server both)
	// is the rate two idle cores would reach, halved.
	b.ReportMetric(float64(b.N)/(cpuTime(b)-cpu0).Seconds(), "req/CPU-s")
}

// cpuTime is the user+system CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkGetSystem: GET /redfish/v1/Systems/{id} over loopback HTTP,
// keep-alive, Basic auth, 2000 systems in one service.
func BenchmarkGetSystem(b *testing.B) {
	svc := benchService(b, benchSystems)
	base := svc.URL() + "/redfish/v1/Systems/"
	ids := svc.systemIDs()
	runRequests(b, svc, len(ids), func(i int) (*http.Request, int) {
		r, _ := http.NewRequest("GET", base+ids[i], nil)
		return r, http.StatusOK
	})
}

// BenchmarkReset: POST ComputerSystem.Reset (ForceOn, ForceOff in turn,
// each a real power change of the machine).
func BenchmarkReset(b *testing.B) {
	svc := benchService(b, benchSystems)
	ids := svc.systemIDs()
	var turn atomic.Int64
	runRequests(b, svc, len(ids), func(i int) (*http.Request, int) {
		rt := "ForceOn"
		if turn.Add(1)/int64(len(ids))%2 == 1 {
			rt = "ForceOff"
		}
		body := `{"ResetType": "` + rt + `"}`
		r, _ := http.NewRequest("POST", svc.URL()+"/redfish/v1/Systems/"+ids[i]+"/Actions/ComputerSystem.Reset", bytes.NewReader([]byte(body)))
		r.Header.Set("Content-Type", "application/json")
		return r, http.StatusNoContent
	})
}

// BenchmarkRSSPerSystem reports the resident memory one more served system
// costs (the service's state, not the machine's backend), measured over
// 10000 systems after a GET of each.
func BenchmarkRSSPerSystem(b *testing.B) {
	const n = 10000
	for range b.N {
		machines := make([]*benchMachine, n)
		for i := range machines {
			machines[i] = newBenchMachine(i)
		}
		runtime.GC()
		before, heap0 := rss(b), heapAlloc()
		svc, err := New(Options{})
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range machines {
			if _, err := svc.Add(m); err != nil {
				b.Fatal(err)
			}
		}
		if err := svc.Start("127.0.0.1:0"); err != nil {
			b.Fatal(err)
		}
		c := benchClient(1)
		for _, m := range machines {
			r, _ := http.NewRequest("GET", svc.URL()+"/redfish/v1/Systems/"+m.uuid, nil)
			r.SetBasicAuth("admin", "password")
			resp, err := c.Do(r)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		runtime.GC()
		after, heap1 := rss(b), heapAlloc()
		b.ReportMetric(float64(after-before)/n, "RSS-bytes/system")
		b.ReportMetric(float64(heap1-heap0)/n, "heap-bytes/system")
		svc.Close()
		runtime.KeepAlive(machines)
	}
}

func heapAlloc() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// rss is the process's resident set size in bytes (/proc/self/statm).
func rss(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Skipf("no /proc/self/statm: %v", err)
	}
	f := strings.Fields(string(raw))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// BenchmarkHandler is the service's own cost without sockets or an HTTP
// client: ServeHTTP on recorded requests, GET and Reset in turn.
func BenchmarkHandler(b *testing.B) {
	svc, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	for i := range benchSystems {
		if _, err := svc.Add(newBenchMachine(i)); err != nil {
			b.Fatal(err)
		}
	}
	ids := svc.systemIDs()
	for _, c := range []struct {
		name   string
		method string
		suffix string
		body   string
		want   int
	}{
		{"GetSystem", "GET", "", "", http.StatusOK},
		{"Reset", "POST", "/Actions/ComputerSystem.Reset", `{"ResetType": "ForceOn"}`, http.StatusNoContent},
	} {
		b.Run(c.name, func(b *testing.B) {
			var next atomic.Int64
			cpu0 := cpuTime(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := ids[int(next.Add(1))%len(ids)]
					r := httptest.NewRequest(c.method, "/redfish/v1/Systems/"+id+c.suffix, strings.NewReader(c.body))
					r.SetBasicAuth("admin", "password")
					w := httptest.NewRecorder()
					svc.ServeHTTP(w, r)
					if w.Code != c.want {
						b.Errorf("%s: %d", c.name, w.Code)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
			b.ReportMetric(float64(b.N)/(cpuTime(b)-cpu0).Seconds(), "req/CPU-s")
		})
	}
}

// BenchmarkRSSPerNodeService is the memory of the per-node layout (the
// lab's redfish_listen: per-node): one https Service with its own
// self-signed certificate, listener and one system per node, measured over
// 500 nodes after a GET of each over TLS (client connections closed, so
// what stays is the services').
func BenchmarkRSSPerNodeService(b *testing.B) {
	const n = 500
	for range b.N {
		machines := make([]*benchMachine, n)
		for i := range machines {
			machines[i] = newBenchMachine(i)
		}
		runtime.GC()
		before, heap0 := rss(b), heapAlloc()
		svcs := make([]*Service, n)
		for i, m := range machines {
			svc, err := New(Options{TLS: true})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := svc.Add(m); err != nil {
				b.Fatal(err)
			}
			if err := svc.Start("127.0.0.1:0"); err != nil {
				b.Fatal(err)
			}
			svcs[i] = svc
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(svc.CACertPEM())
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
			r, _ := http.NewRequest("GET", svc.URL()+"/redfish/v1/Systems/"+m.uuid, nil)
			r.SetBasicAuth("admin", "password")
			resp, err := (&http.Client{Timeout: 30 * time.Second, Transport: tr}).Do(r)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			tr.CloseIdleConnections()
		}
		runtime.GC()
		after, heap1 := rss(b), heapAlloc()
		b.ReportMetric(float64(after-before)/n, "RSS-bytes/node")
		b.ReportMetric(float64(heap1-heap0)/n, "heap-bytes/node")
		for _, svc := range svcs {
			svc.Close()
		}
		runtime.KeepAlive(machines)
	}
}
