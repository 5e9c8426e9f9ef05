package driver_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bmc"
	"github.com/ironlab/ironlab/simulator/fake"
)

// The crash-recovery test runs the real binary, `ironlab driver`, as a
// child process and kills it with SIGKILL: nothing is flushed and no lock
// released, as when a real conductor dies. Everything around it is real
// too: one fake machine per node behind a virtual IPMI BMC (driver class
// agent_pyghmi), and the fake IPA that the machine network-boots, talking
// HTTP to the driver over loopback.

var (
	binDir   string
	binOnce  sync.Once
	binPath  string
	binError error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ironlab-recovery-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ironlabBinary builds ./cmd/ironlab once, on first use.
func ironlabBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			goTool = "go"
		}
		binPath = filepath.Join(binDir, "ironlab")
		cmd := exec.Command(goTool, "build", "-o", binPath, "github.com/ironlab/ironlab/cmd/ironlab")
		if out, err := cmd.CombinedOutput(); err != nil {
			binError = fmt.Errorf("go build ./cmd/ironlab: %v\n%s", err, out)
		}
	})
	if binError != nil {
		t.Fatal(binError)
	}
	return binPath
}

// driverProc is one `ironlab driver` child process; restarts reuse the
// address and the database.
type driverProc struct {
	t      *testing.T
	bin    string
	addr   string
	db     string
	log    string
	extra  []string // more flags
	cmd    *exec.Cmd
	exited chan struct{}
}

func startDriver(t *testing.T, extra ...string) *driverProc {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	p := &driverProc{t: t, bin: ironlabBinary(t), addr: addr, db: filepath.Join(dir, "ironlab.db"), log: filepath.Join(dir, "driver.log"), extra: extra}
	p.start()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("driver log:\n%s", lastLines(string(b), 60))
		}
	})
	return p
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (p *driverProc) url() string { return "http://" + p.addr }

func (p *driverProc) start() {
	t := p.t
	t.Helper()
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logf, "---- start\n")
	p.cmd = exec.Command(p.bin, "driver", "-v",
		"--listen", p.addr, "--db", p.db,
		// Agents heartbeat every 0.6-1.2 s; the periodic tasks stay out of
		// the way (this test is about the restart, not the watchdog).
		"--heartbeat-timeout", "2s", "--check-interval", "1h", "--watchdog-action=",
		"--ipmi-min-interval", "0s")
	p.cmd.Args = append(p.cmd.Args, p.extra...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	exited := make(chan struct{})
	p.exited = exited
	cmd := p.cmd
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			b, _ := os.ReadFile(p.log)
			t.Fatalf("ironlab driver exited at start:\n%s", b)
		default:
		}
		resp, err := http.Get(p.url() + "/v1")
		if err == nil {
			resp.Body.Close()
			return
		}
	}
	t.Fatal("ironlab driver did not answer within 30s")
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *driverProc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill() // SIGKILL
	<-p.exited
}

// api calls the driver's API and decodes the answer into out (if not nil).
func (p *driverProc) api(method, path string, body any, out any) int {
	t := p.t
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, p.url()+path, rd)
	req.Header.Set("X-OpenStack-Ironic-API-Version", "latest")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

type apiNode struct {
	UUID           string         `json:"uuid"`
	ProvisionState string         `json:"provision_state"`
	PowerState     string         `json:"power_state"`
	Reservation    *string        `json:"reservation"`
	LastError      *string        `json:"last_error"`
	CleanStep      map[string]any `json:"clean_step"`
	DeployStep     map[string]any `json:"deploy_step"`
}

func (n apiNode) lastError() string {
	if n.LastError == nil {
		return ""
	}
	return *n.LastError
}

func (p *driverProc) node(id string) apiNode {
	p.t.Helper()
	var n apiNode
	p.api("GET", "/v1/nodes/"+id, nil, &n)
	return n
}

func (p *driverProc) provision(id, target string) {
	p.t.Helper()
	p.api("PUT", "/v1/nodes/"+id+"/states/provision", map[string]any{"target": target}, nil)
}

// waitFor polls the node until ok holds; states named in stop end the wait
// with a failure (the node will not get there).
func (p *driverProc) waitFor(id, what string, ok func(apiNode) bool) apiNode {
	p.t.Helper()
	var n apiNode
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		n = p.node(id)
		if ok(n) {
			return n
		}
		if strings.HasSuffix(n.ProvisionState, "failed") || n.ProvisionState == states.Error {
			break
		}
	}
	p.t.Fatalf("node %s: waiting for %s, it is in %q (last_error %q)", id, what, n.ProvisionState, n.lastError())
	return n
}

func (p *driverProc) waitState(id, state string) apiNode {
	p.t.Helper()
	return p.waitFor(id, strconv.Quote(state), func(n apiNode) bool { return n.ProvisionState == state })
}

// rig is one node's hardware: a fake machine, its BMC, and the agent it
// boots from the network.
type rig struct {
	t       *testing.T
	machine *fake.Machine
	bmc     *bmc.BMC
	disk    string
	mu      sync.Mutex
	faults  fakeagent.Faults // what the next agent boots with
	agent   *fakeagent.Agent
	apiURL  string
	mux     *fakeagent.Mux
}

const rigMAC = "52:54:00:aa:00:01"

func newRig(t *testing.T, ctx context.Context, apiURL string, mux *fakeagent.Mux) *rig {
	t.Helper()
	r := &rig{t: t, apiURL: apiURL, mux: mux, disk: filepath.Join(t.TempDir(), "vda.img")}
	m, err := fake.New(fake.Options{
		Name: "node-0", UUID: "3f6c9b1e-0d3a-4a55-8a8e-5f0e2b7c9d01",
		Hardware: simulator.Hardware{CPUs: 1, CPUArch: "x86_64", MemoryMB: 1024, BIOSVersion: "1.0",
			NICs:  []simulator.NIC{{Name: "eth0", MAC: rigMAC}},
			Disks: []simulator.Disk{{Name: "vda", SizeBytes: 4 << 20, Path: r.disk}}},
		NetBoot: r,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	r.machine = m
	quiet := slog.New(slog.DiscardHandler)
	b, err := bmc.New(m, "127.0.0.1:0", bmc.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	b.Start(ctx)
	t.Cleanup(func() { b.Close() })
	r.bmc = b
	return r
}

// NetBoot runs a fresh agent, as the machine's network boot would.
func (r *rig) NetBoot(ctx context.Context, m simulator.Machine) error {
	r.mu.Lock()
	faults := r.faults
	r.mu.Unlock()
	a, err := fakeagent.New(fakeagent.Config{
		APIURL: r.apiURL, Dialect: fakeagent.DialectV1, Driver: "agent_pyghmi", Mux: r.mux,
		Hardware: r.machine, BootMode: "bios", Hostname: "node-0",
		LookupInterval: 50 * time.Millisecond, HeartbeatErrorBackoff: 50 * time.Millisecond,
		ForcedHeartbeatGap: 50 * time.Millisecond, RequestTimeout: 5 * time.Second,
		Faults: faults, Logger: slog.New(slog.DiscardHandler),
		PowerOff: func(context.Context) error { return m.SetPower(context.Background(), simulator.ActionOff) },
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.agent = a
	r.mu.Unlock()
	return a.Run(ctx)
}

// setAgentFaults sets the faults of the running agent and of the next one.
func (r *rig) setAgentFaults(f fakeagent.Faults) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = f
	if r.agent != nil {
		if err := r.agent.SetFaults(f); err != nil {
			r.t.Fatal(err)
		}
	}
}

// bmcDown makes the BMC drop every packet (or answer again).
func (r *rig) bmcDown(down bool) { r.bmc.SetFaults(bmc.Faults{NoAnswer: down}) }

// enroll creates the node and its port through the API.
func (r *rig) enroll(p *driverProc, imageURL, checksum string) string {
	ap := r.bmc.Addr()
	var n apiNode
	p.api("POST", "/v1/nodes", map[string]any{
		"name": "node-0", "driver": "agent_pyghmi",
		"driver_info": map[string]any{"ipmi_address": ap.Addr().String(), "ipmi_port": int(ap.Port()),
			"ipmi_username": bmc.DefaultCredentials.Username, "ipmi_password": bmc.DefaultCredentials.Password},
		"properties":    map[string]any{"capabilities": "boot_mode:bios", "cpu_arch": "x86_64", "local_gb": 1},
		"instance_info": map[string]any{"image_source": imageURL, "image_os_hash_algo": "sha256", "image_os_hash_value": checksum},
	}, &n)
	p.api("POST", "/v1/ports", map[string]any{"node_uuid": n.UUID, "address": rigMAC}, nil)
	return n.UUID
}

type apiEvent struct {
	ID        int64  `json:"id"`
	Kind      string `json:"kind"`
	FromState string `json:"from_state"`
	ToState   string `json:"to_state"`
	Event     string `json:"event"`
	Message   string `json:"message"`
}

// checkHistory: ids increase, and every provision state transition starts
// where the previous one ended.
func checkHistory(t *testing.T, p *driverProc, id string) {
	t.Helper()
	var out struct {
		Events []apiEvent `json:"events"`
	}
	p.api("GET", "/v1/nodes/"+id+"/events", nil, &out)
	var last int64
	prev := ""
	var path []string
	for i, e := range out.Events {
		if e.ID <= last {
			t.Errorf("event %d: id %d after %d", i, e.ID, last)
		}
		last = e.ID
		if e.Kind != "provision" || e.FromState == e.ToState {
			continue
		}
		if e.FromState != prev {
			t.Errorf("history gap before event %d (%s): from %q, but the previous transition ended in %q; path so far %v",
				e.ID, e.Event, e.FromState, prev, path)
		}
		prev = e.ToState
		path = append(path, e.ToState)
	}
	t.Logf("state history: %s", strings.Join(path, " -> "))
}

// restarted is the text Recover puts in last_error.
const restarted = "when the conductor restarted"

func TestRecoveryAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the ironlab binary")
	}
	image := bytes.Repeat([]byte("ironlab recovery image "), 40_000)
	sum := fmt.Sprintf("%x", sha256.Sum256(image))
	imgSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(image)))
		w.Write(image)
	}))
	defer imgSrv.Close()
	imageURL := imgSrv.URL + "/images/recovery.raw"

	tests := []struct {
		state string
		// hold brings the node into state and keeps it there.
		hold func(p *driverProc, r *rig, id string) apiNode
		// after checks the node after the restart and finishes the flow.
		after func(p *driverProc, r *rig, id string)
	}{
		{states.Verifying,
			func(p *driverProc, r *rig, id string) apiNode {
				r.bmcDown(true)
				p.provision(id, "manage")
				return p.waitState(id, states.Verifying)
			},
			func(p *driverProc, r *rig, id string) {
				wantFailed(p.t, p.node(id), states.Enroll, states.Verifying)
				r.bmcDown(false)
				p.provision(id, "manage")
				p.waitState(id, states.Manageable)
			}},
		{states.Cleaning,
			func(p *driverProc, r *rig, id string) apiNode {
				p.provision(id, "manage")
				p.waitState(id, states.Manageable)
				r.bmcDown(true)
				p.provision(id, "provide")
				return p.waitState(id, states.Cleaning)
			},
			func(p *driverProc, r *rig, id string) {
				wantFailed(p.t, p.node(id), states.CleanFailed, states.Cleaning)
				r.bmcDown(false)
				p.provision(id, "manage")
				p.waitState(id, states.Manageable)
			}},
		{states.CleanWait,
			func(p *driverProc, r *rig, id string) apiNode {
				r.setAgentFaults(fakeagent.Faults{HangCommand: "erase_devices_metadata"})
				p.provision(id, "manage")
				p.waitState(id, states.Manageable)
				p.provision(id, "provide")
				return p.waitFor(id, "clean wait in erase_devices_metadata", func(n apiNode) bool {
					return n.ProvisionState == states.CleanWait && n.CleanStep["step"] == "erase_devices_metadata"
				})
			},
			func(p *driverProc, r *rig, id string) {
				n := p.node(id)
				if n.ProvisionState != states.CleanWait || n.lastError() != "" {
					p.t.Errorf("after restart: %q, last_error %q; want clean wait, no error", n.ProvisionState, n.lastError())
				}
				r.setAgentFaults(fakeagent.Faults{}) // the step finishes; the agent heartbeats
				n = p.waitState(id, states.Available)
				if n.PowerState != "power off" {
					p.t.Errorf("power after cleaning = %q", n.PowerState)
				}
				if b, _ := os.ReadFile(r.disk); bytes.IndexFunc(b, func(c rune) bool { return c != 0 }) >= 0 {
					p.t.Error("disk not zeroed by the cleaning that went on after the restart")
				}
			}},
		{states.Deploying,
			func(p *driverProc, r *rig, id string) apiNode {
				toAvailable(p, id)
				r.bmcDown(true)
				p.provision(id, "active")
				return p.waitState(id, states.Deploying)
			},
			func(p *driverProc, r *rig, id string) {
				wantFailed(p.t, p.node(id), states.DeployFailed, states.Deploying)
				r.bmcDown(false)
				p.provision(id, "active") // deploy failed -> deploy
				p.waitState(id, states.Active)
			}},
		{states.DeployWait,
			func(p *driverProc, r *rig, id string) apiNode {
				toAvailable(p, id)
				r.setAgentFaults(fakeagent.Faults{HangCommand: "write_image"})
				p.provision(id, "active")
				return p.waitFor(id, "wait call-back in write_image", func(n apiNode) bool {
					return n.ProvisionState == states.DeployWait && n.DeployStep["step"] == "write_image"
				})
			},
			func(p *driverProc, r *rig, id string) {
				n := p.node(id)
				if n.ProvisionState != states.DeployWait || n.lastError() != "" {
					p.t.Errorf("after restart: %q, last_error %q; want wait call-back, no error", n.ProvisionState, n.lastError())
				}
				r.setAgentFaults(fakeagent.Faults{})
				p.waitState(id, states.Active)
				if b, _ := os.ReadFile(r.disk); !bytes.HasPrefix(b, image) {
					p.t.Error("the disk does not hold the image after the deploy went on")
				}
			}},
		{states.Deleting,
			func(p *driverProc, r *rig, id string) apiNode {
				toAvailable(p, id)
				p.provision(id, "active")
				p.waitState(id, states.Active)
				r.bmcDown(true)
				p.provision(id, "deleted")
				return p.waitState(id, states.Deleting)
			},
			func(p *driverProc, r *rig, id string) {
				wantFailed(p.t, p.node(id), states.Error, states.Deleting)
				r.bmcDown(false)
				p.provision(id, "deleted") // error -> deleting -> cleaning -> available
				p.waitState(id, states.Available)
			}},
	}
	for _, tc := range tests {
		t.Run(strings.ReplaceAll(tc.state, " ", "_"), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			mux, err := fakeagent.ListenMux(ctx, "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			p := startDriver(t)
			r := newRig(t, ctx, p.url(), mux)
			id := r.enroll(p, imageURL, sum)

			n := tc.hold(p, r, id)
			if strings.HasSuffix(tc.state, "ing") && (n.Reservation == nil || *n.Reservation == "") {
				t.Errorf("node in %q is not reserved before the kill", tc.state)
			}
			p.kill()
			p.start()
			n = p.node(id)
			if n.Reservation != nil && *n.Reservation != "" && tc.state != states.CleanWait && tc.state != states.DeployWait {
				t.Errorf("after restart node is still reserved by %q", *n.Reservation)
			}
			tc.after(p, r, id)
			checkHistory(t, p, id)
		})
	}
}

// wantFailed: the restarted conductor moved the node from the interrupted
// state to the failed one and said why.
func wantFailed(t *testing.T, n apiNode, want, from string) {
	t.Helper()
	if n.ProvisionState != want {
		t.Errorf("after restart: %q, want %q", n.ProvisionState, want)
	}
	if !strings.Contains(n.lastError(), restarted) || !strings.Contains(n.lastError(), strconv.Quote(from)) {
		t.Errorf("last_error = %q, want it to name %q and say the conductor restarted", n.lastError(), from)
	}
}

// toAvailable: manage, provide (automated cleaning with the agent).
func toAvailable(p *driverProc, id string) {
	p.t.Helper()
	p.provision(id, "manage")
	p.waitState(id, states.Manageable)
	p.provision(id, "provide")
	p.waitState(id, states.Available)
}
