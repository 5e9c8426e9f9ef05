package redfish

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/fake"
)

// agentBoot stands for what the lab boots from the network or a CD: it
// counts boots and runs until the machine stops.
type agentBoot struct{ boots atomic.Int32 }

func (a *agentBoot) NetBoot(ctx context.Context, m simulator.Machine) error {
	a.boots.Add(1)
	<-ctx.Done()
	return nil
}

func testHardware(dir string, i int) simulator.Hardware {
	return simulator.Hardware{
		CPUs: 4, CPUArch: "x86_64", CPUModel: "ironlab vCPU", MemoryMB: 8192,
		NICs: []simulator.NIC{
			{Name: "eth0", MAC: fmt.Sprintf("52:54:00:00:%02x:01", i)},
			{Name: "eth1", MAC: fmt.Sprintf("52:54:00:00:%02x:02", i)},
		},
		Disks: []simulator.Disk{
			{Name: "sda", SizeBytes: 1 << 20, Path: filepath.Join(dir, fmt.Sprintf("n%d-sda", i))},
			{Name: "sdb", SizeBytes: 2 << 20, Rotational: true, Path: filepath.Join(dir, fmt.Sprintf("n%d-sdb", i))},
		},
		Vendor: "ironlab", Product: "fake-1", SerialNumber: fmt.Sprintf("SN%04d", i),
		BIOSVersion:  "1.0.0",
		BIOSSettings: map[string]string{"vt": "on"},
	}
}

type testLab struct {
	svc      *Service
	machines []*fake.Machine
	agent    *agentBoot
	client   *http.Client
	user     string
	pass     string
}

// newTestLab serves n fake machines from one started http service.
func newTestLab(t testing.TB, n int, opts Options) *testLab {
	t.Helper()
	svc, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	l := &testLab{svc: svc, agent: &agentBoot{}, client: &http.Client{Timeout: 30 * time.Second}, user: "admin", pass: "password"}
	dir := t.TempDir()
	for i := range n {
		m, err := fake.New(fake.Options{
			Name: fmt.Sprintf("node-%d", i), UUID: fmt.Sprintf("8d4c2b1a-0000-4000-8000-%012d", i),
			Hardware: testHardware(dir, i), NetBoot: l.agent,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		if _, err := svc.Add(m); err != nil {
			t.Fatal(err)
		}
		l.machines = append(l.machines, m)
	}
	if err := svc.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := svc.Close(); err != nil {
			t.Errorf("close service: %v", err)
		}
	})
	return l
}

func (l *testLab) sysPath(i int) string { return "/redfish/v1/Systems/" + l.machines[i].UUID() }

type answer struct {
	status int
	body   map[string]any
	header http.Header
}

// messageID is the first ExtendedInfo MessageId of an error answer.
func (a answer) messageID() string {
	e, _ := a.body["error"].(map[string]any)
	infos, _ := e["@Message.ExtendedInfo"].([]any)
	if len(infos) == 0 {
		return ""
	}
	info, _ := infos[0].(map[string]any)
	id, _ := info["MessageId"].(string)
	return id
}

func (l *testLab) do(t testing.TB, method, path string, body any, hdr ...string) answer {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, l.svc.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if l.user != "" {
		req.SetBasicAuth(l.user, l.pass)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := l.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header}
	if len(raw) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &a.body); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, path, raw, err)
		}
	}
	return a
}

func (l *testLab) must(t testing.TB, want int, method, path string, body any, hdr ...string) answer {
	t.Helper()
	a := l.do(t, method, path, body, hdr...)
	if a.status != want {
		t.Fatalf("%s %s: status %d, want %d; body %v", method, path, a.status, want, a.body)
	}
	return a
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func power(t testing.TB, m simulator.Machine) simulator.PowerState {
	t.Helper()
	p, err := m.Power(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func bootConfig(t testing.TB, m simulator.Machine) simulator.BootConfig {
	t.Helper()
	b, err := m.BootConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// firmwareServer serves lab firmware images and a 404 for anything else.
func firmwareServer(t testing.TB, files map[string]string) string {
	t.Helper()
	mux := http.NewServeMux()
	for p, body := range files {
		mux.HandleFunc("GET "+p, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
	}
	srv := &http.Server{Handler: mux}
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

func x509NewPool(t testing.TB, pemBytes []byte) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("CA PEM %q does not parse", pemBytes)
	}
	return p
}

func tlsConfig(pool *x509.CertPool) *tls.Config { return &tls.Config{RootCAs: pool} }
