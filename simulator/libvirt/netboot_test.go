package libvirtvm

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ironlab/ironlab/images/ramdisk"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bootfiles"
)

var (
	ramdiskOnce sync.Once
	ramdiskRes  ramdisk.Ramdisk
	ramdiskErr  error
)

// testRamdisk builds (or reuses from the cache) the agent ramdisk. The /init
// binary is $IRONLAB_AGENT_BINARY, else built from this module.
func testRamdisk(t testing.TB) ramdisk.Ramdisk {
	t.Helper()
	ramdiskOnce.Do(func() {
		// A bound for a cold build cache on a loaded 2-core machine (the
		// static binary, the kernel package, the cpio), not a target.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		o := ramdisk.Options{Binary: os.Getenv("IRONLAB_AGENT_BINARY"), Progress: testWriter{t}}
		if o.Binary == "" {
			gomod, err := exec.Command("go", "env", "GOMOD").Output()
			if err != nil {
				ramdiskErr = err
				return
			}
			o.SourceDir = filepath.Dir(strings.TrimSpace(string(gomod)))
			// A per-run binary: the cache keys on its hash anyway.
			o.Binary = ""
		}
		ramdiskRes, ramdiskErr = ramdisk.Build(ctx, o)
	})
	if ramdiskErr != nil {
		t.Fatalf("build the agent ramdisk: %v", ramdiskErr)
	}
	return ramdiskRes
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// hostServer is an HTTP server on 127.0.0.1 that guests reach at 10.0.2.2
// through QEMU's user-mode stack. It records each request's path.
type hostServer struct {
	URL  string // as the guest sees it: http://10.0.2.2:<port>
	got  chan string
	srv  *http.Server
	port int
}

func newHostServer(t testing.TB) *hostServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostServer{got: make(chan string, 16), port: l.Addr().(*net.TCPAddr).Port}
	h.URL = fmt.Sprintf("http://10.0.2.2:%d", h.port)
	h.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case h.got <- r.URL.Path:
		default:
		}
		fmt.Fprintf(w, "hello %s", strings.TrimPrefix(r.URL.Path, "/"))
	}), ReadHeaderTimeout: 10 * time.Second}
	go h.srv.Serve(l)
	t.Cleanup(func() { h.srv.Close() })
	return h
}

func (h *hostServer) wait(t testing.TB, path string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case p := <-h.got:
			if p == path {
				return
			}
		case <-deadline:
			t.Fatalf("no request for %s reached the host server within %v", path, timeout)
		}
	}
}

// fetchEntry writes a boot entry whose /init GETs url and powers off.
func fetchEntry(t testing.TB, f *Fleet, m *Machine, url string) {
	t.Helper()
	r := testRamdisk(t)
	k, i, err := r.Install(f.Config().BootDir, "agent")
	if err != nil {
		t.Fatal(err)
	}
	if err := bootfiles.Write(f.Config().BootDir, m.Hardware().NICs[0].MAC, bootfiles.Entry{
		Kernel: k, Initrd: i, Cmdline: "console=ttyS0 quiet panic=-1 ironlab.fetch=" + url,
	}); err != nil {
		t.Fatal(err)
	}
}

func waitPower(t testing.TB, m *Machine, want simulator.PowerState, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p, err := m.Power(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if p == want {
			return
		}
		if time.Now().After(deadline) {
			log, _ := m.ConsoleLog()
			t.Fatalf("%s still %s after %v, want %s; console:\n%s", m.DomainName(), p, timeout, want, tail(log, 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBootDeviceOneTimeNetworkThenPersistentDisk: with disk as the
// persistent device and network as a one-time one, the machine network-boots
// the ramdisk (direct kernel boot) which reaches the host at 10.0.2.2, powers
// itself off, and at the next power on boots its disk again.
func TestBootDeviceOneTimeNetworkThenPersistentDisk(t *testing.T) {
	c := connect(t)
	f := newFleet(t, c, PXEDirect)
	ctx := context.Background()
	host := newHostServer(t)
	m, err := f.Add(ctx, NodeSpec{Name: "node-0", UUID: "8f7c1b4e-0000-4000-8000-000000000002", MAC: "52:54:00:10:00:02",
		Boot: simulator.BootConfig{Device: simulator.BootDisk, Persistent: true}})
	if err != nil {
		t.Fatal(err)
	}
	info := writeImage(t, m, "switch-test")
	fetchEntry(t, f, m, host.URL+"/node-0")

	if err := m.SetBootConfig(ctx, simulator.BootConfig{Device: simulator.BootNetwork}); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.BootConfig(ctx); got.Device != simulator.BootNetwork || got.Persistent {
		t.Fatalf("BootConfig after one-time network = %+v", got)
	}
	if err := m.SetPower(ctx, simulator.ActionOn); err != nil {
		t.Fatal(err)
	}
	host.wait(t, "/node-0", 90*time.Second)
	waitConsole(t, m, "IRONLAB-FETCH 200 hello node-0", 10*time.Second)
	// The one-time selection was used up: the next boot is the disk.
	if got, _ := m.BootConfig(ctx); got.Device != simulator.BootDisk || !got.Persistent {
		t.Fatalf("BootConfig after the one-time boot = %+v, want persistent disk", got)
	}
	waitPower(t, m, simulator.PowerOff, 30*time.Second)
	if strings.Contains(mustConsole(t, m), info.Marker()) {
		t.Fatalf("disk marker already on the console before the disk boot")
	}
	if err := m.SetPower(ctx, simulator.ActionOn); err != nil {
		t.Fatal(err)
	}
	waitConsole(t, m, info.Marker(), 60*time.Second)
}

func mustConsole(t testing.TB, m *Machine) string {
	t.Helper()
	s, err := m.ConsoleLog()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestIPXEBootReachesHost network-boots through QEMU's iPXE ROM: DHCP and
// TFTP from QEMU's user-mode stack rooted in the boot folder, the per-MAC
// script, then the same kernel and initramfs up to a request to the host.
func TestIPXEBootReachesHost(t *testing.T) {
	c := connect(t)
	f := newFleet(t, c, PXEIPXE)
	ctx := context.Background()
	host := newHostServer(t)
	m, err := f.Add(ctx, NodeSpec{Name: "node-0", UUID: "8f7c1b4e-0000-4000-8000-000000000003", MAC: "52:54:00:10:00:03"})
	if err != nil {
		t.Fatal(err)
	}
	fetchEntry(t, f, m, host.URL+"/ipxe-node")
	if err := m.SetPower(ctx, simulator.ActionOn); err != nil {
		t.Fatal(err)
	}
	host.wait(t, "/ipxe-node", 120*time.Second)
	if log := mustConsole(t, m); !strings.Contains(log, "iPXE") {
		t.Errorf("no iPXE banner on the serial console; was this a direct kernel boot?\n%s", tail(log, 2000))
	}
}

// TestAgentRamdiskHeartbeatsAndAnswers boots the agent ramdisk in agent mode
// against a minimal legacy driver API on the host: the agent looks up and
// heartbeats through 10.0.2.2, advertising http://127.0.0.1:<forwarded port>,
// and the host reaches its command API there.
func TestAgentRamdiskHeartbeatsAndAnswers(t *testing.T) {
	c := connect(t)
	f := newFleet(t, c, PXEDirect)
	ctx := context.Background()
	const nodeUUID = "8f7c1b4e-0000-4000-8000-000000000004"
	heartbeats := make(chan string, 4)
	api := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/drivers/agent_ipmitool/vendor_passthru/lookup":
			fmt.Fprintf(w, `{"node": {"uuid": %q}, "heartbeat_timeout": 300}`, nodeUUID)
		case r.Method == http.MethodPost && r.URL.Path == "/v1/nodes/"+nodeUUID+"/vendor_passthru/heartbeat":
			var body struct {
				AgentURL string `json:"agent_url"`
			}
			json.NewDecoder(r.Body).Decode(&body)
			select {
			case heartbeats <- body.AgentURL:
			default:
			}
			w.WriteHeader(http.StatusAccepted)
		default:
			http.NotFound(w, r)
		}
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api.Listener = l
	api.Start()
	defer api.Close()

	m, err := f.Add(ctx, NodeSpec{Name: "node-0", UUID: nodeUUID, MAC: "52:54:00:10:00:04"})
	if err != nil {
		t.Fatal(err)
	}
	r := testRamdisk(t)
	k, i, err := r.Install(f.Config().BootDir, "agent")
	if err != nil {
		t.Fatal(err)
	}
	cmdline := m.AgentCmdline(api.URL, "ironlab.dialect=legacy")
	if !strings.Contains(cmdline, "ipa-api-url=http://10.0.2.2:") {
		t.Fatalf("cmdline %q does not point the guest at 10.0.2.2", cmdline)
	}
	if err := bootfiles.Write(f.Config().BootDir, m.Hardware().NICs[0].MAC, bootfiles.Entry{Kernel: k, Initrd: i, Cmdline: cmdline}); err != nil {
		t.Fatal(err)
	}
	if err := m.SetPower(ctx, simulator.ActionOn); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-heartbeats:
		if got != m.AgentURL() {
			t.Fatalf("agent advertised %q, want %q", got, m.AgentURL())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("no heartbeat within 90s; console:\n%s", tail(mustConsole(t, m), 3000))
	}
	resp, err := http.Get(m.AgentURL() + "/v1/commands")
	if err != nil {
		t.Fatalf("reach the agent at its advertised URL: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/v1/commands = %s", m.AgentURL(), resp.Status)
	}
	if err := m.SetPower(ctx, simulator.ActionOff); err != nil {
		t.Fatal(err)
	}
	waitPower(t, m, simulator.PowerOff, 10*time.Second)
}

// BenchmarkBootToFirstRequest measures a network boot (direct kernel boot of
// the agent ramdisk, TCG) from power on to the guest's first HTTP request to
// the host.
func BenchmarkBootToFirstRequest(b *testing.B) {
	c := connect(b)
	f := newFleet(b, c, PXEDirect)
	ctx := context.Background()
	host := newHostServer(b)
	m, err := f.Add(ctx, NodeSpec{Name: "bench-0", UUID: "8f7c1b4e-0000-4000-8000-0000000000b0", MAC: "52:54:00:10:00:b0"})
	if err != nil {
		b.Fatal(err)
	}
	fetchEntry(b, f, m, host.URL+"/bench")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := m.SetPower(ctx, simulator.ActionOn); err != nil {
			b.Fatal(err)
		}
		host.wait(b, "/bench", 90*time.Second)
		b.StopTimer()
		if err := m.SetPower(ctx, simulator.ActionOff); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	// Where the time went, from the guest's side (kernel uptime when /init
	// had modules and network up).
	for _, line := range strings.Split(mustConsole(b, m), "\n") {
		if strings.Contains(line, "ironlab init: up") {
			b.Log(strings.TrimSpace(line))
		}
	}
}
