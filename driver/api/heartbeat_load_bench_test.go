package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver"
)

// BenchmarkHeartbeatLoad is `ironlab bench`'s closed heartbeat loop in one
// process: 100 nodes in enroll (fast track: lookup hands out tokens, the
// heartbeat is recorded only), 16 workers each heartbeating its own nodes
// over real HTTP on loopback, one heartbeat per node at a time. It reports
// heartbeats/s (each 202 is written before it is sent), the p99 latency
// and the CPU per heartbeat;
// the goal on this machine is 20,000/s with p99 under 20 ms.
func BenchmarkHeartbeatLoad(b *testing.B) {
	const nodes, workers = 100, 16
	s := newServer(b, func(c *driver.Config) { c.FastTrack = true })
	bodies := make([][]byte, nodes)
	ids := make([]string, nodes)
	for i := range nodes {
		r := s.do(b, "POST", "/v1/nodes", "", fmt.Sprintf(`{"name": "n%d", "driver": "fake_agent"}`, i))
		ids[i] = r.json["uuid"].(string)
		r = s.do(b, "GET", "/v1/lookup?node_uuid="+ids[i], "1.62", "")
		token := r.json["config"].(map[string]any)["agent_token"].(string)
		bodies[i] = fmt.Appendf(nil, `{"callback_url": "http://127.0.0.1:9/n%d", "agent_token": "%s", "agent_version": "9.4.0"}`, i, token)
	}
	hc := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: workers * 2}}
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var failed atomic.Value
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for k := w; next.Add(1) <= int64(b.N); k += workers {
				i := k % nodes
				req, _ := http.NewRequest("POST", s.url+"/v1/heartbeat/"+ids[i], bytes.NewReader(bodies[i]))
				req.Header.Set("X-OpenStack-Ironic-API-Version", "1.68")
				t0 := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					failed.Store(err.Error())
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mine = append(mine, time.Since(t0))
				if resp.StatusCode != http.StatusAccepted {
					failed.Store(fmt.Sprintf("heartbeat: HTTP %d", resp.StatusCode))
					return
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if f := failed.Load(); f != nil {
		b.Fatal(f)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(len(lat))/el.Seconds(), "heartbeats/s")
	b.ReportMetric(float64(lat[(len(lat)-1)*99/100])/float64(time.Millisecond), "p99-ms")
	// The CPU (user and system, driver and client together) per heartbeat:
	// on a shared machine it moves less than the rate with the others' load.
	b.ReportMetric(float64(cpu)/float64(time.Microsecond)/float64(len(lat)), "cpu-us/heartbeat")
}

// cpuTime is the process's CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
