package fakeagent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver"
	"github.com/ironlab/ironlab/fakeagent"
)

// tlsLab is our driver with [agent]require_tls on, one fake_agent node and
// its agent behind a Mux (auto-TLS), the way the lab runs them.
type tlsLab struct {
	api, uuid, disk string
	agent           *fakeagent.Agent
}

func startTLSLab(t *testing.T, faults fakeagent.Faults, disableTLS bool) *tlsLab {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	quiet := slog.New(slog.DiscardHandler)
	cfg := driver.DefaultConfig()
	cfg.DBPath = filepath.Join(t.TempDir(), "ironlab.db")
	cfg.Host = "conductor-1"
	cfg.HeartbeatTimeout = 2 * time.Second
	cfg.CheckInterval = time.Hour
	cfg.AgentPollInterval = 20 * time.Millisecond
	cfg.LockRetryInterval = 10 * time.Millisecond
	cfg.RequireTLS = true
	cfg.Logger = quiet
	d, err := driver.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx, ln) }()
	l := &tlsLab{api: "http://" + ln.Addr().String()}

	const mac = "52:54:00:10:20:31"
	l.disk = filepath.Join(t.TempDir(), "vda.img")
	if err := os.WriteFile(l.disk, bytes.Repeat([]byte{0xA5}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	hw := fakeagent.Hardware{CPUs: 1, CPUArch: "x86_64", MemoryMB: 1024, BIOSVersion: "1.0",
		NICs:  []fakeagent.NIC{{Name: "eth0", MAC: mac}},
		Disks: []fakeagent.BlockDevice{{Name: "vda", SizeBytes: 1 << 20, Path: l.disk}}}
	var node struct {
		UUID string `json:"uuid"`
	}
	call(t, l.api, "POST", "/v1/nodes", map[string]any{"name": "node-tls", "driver": "fake_agent"}, &node)
	call(t, l.api, "POST", "/v1/ports", map[string]any{"node_uuid": node.UUID, "address": mac}, nil)
	l.uuid = node.UUID

	mux, err := fakeagent.ListenMux(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.agent, err = fakeagent.New(fakeagent.Config{
		APIURL: l.api, Driver: "fake_agent", Mux: mux, Hardware: fakeagent.NewMemHardware(hw),
		DisableAutoTLS: disableTLS, Faults: faults,
		LookupInterval: 20 * time.Millisecond, HeartbeatErrorBackoff: 20 * time.Millisecond,
		ForcedHeartbeatGap: 20 * time.Millisecond, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- l.agent.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-agentDone
		<-served
		d.Close()
	})
	return l
}

type nodeView struct {
	ProvisionState     string         `json:"provision_state"`
	LastError          *string        `json:"last_error"`
	DriverInternalInfo map[string]any `json:"driver_internal_info"`
}

func getNode(t *testing.T, l *tlsLab) nodeView {
	t.Helper()
	var n nodeView
	call(t, l.api, "GET", "/v1/nodes/"+l.uuid, nil, &n)
	return n
}

// TestDriverVerifiesHTTPSAgent: with require_tls the agent's https API is
// used and verified against the certificate it sent; cleaning really runs.
func TestDriverVerifiesHTTPSAgent(t *testing.T) {
	l := startTLSLab(t, fakeagent.Faults{}, false)
	provision(t, l.api, l.uuid, "manage", "manageable")
	provision(t, l.api, l.uuid, "provide", "available") // automated cleaning over https
	disk, _ := os.ReadFile(l.disk)
	if i := bytes.IndexFunc(disk, func(r rune) bool { return r != 0 }); i >= 0 {
		t.Fatalf("after cleaning over https, disk byte %d is not zero", i)
	}
	n := getNode(t, l)
	if u, _ := n.DriverInternalInfo["agent_url"].(string); u != "" && !strings.HasPrefix(u, "https://127.0.0.1:") {
		t.Errorf("agent_url = %q, want https", u)
	}
	var ran []string
	for _, c := range l.agent.Commands() {
		ran = append(ran, c.CommandName+"="+c.CommandStatus)
	}
	if !strings.Contains(strings.Join(ran, " "), "execute_clean_step=SUCCEEDED") {
		t.Errorf("agent commands %v: no clean step succeeded", ran)
	}
}

// TestDriverRefusesAgentWithWrongCA: an agent whose agent_verify_ca is not
// the certificate it serves is never sent a command: cleaning fails with a
// certificate error.
func TestDriverRefusesAgentWithWrongCA(t *testing.T) {
	l := startTLSLab(t, fakeagent.Faults{WrongVerifyCA: true}, false)
	provision(t, l.api, l.uuid, "manage", "manageable")
	call(t, l.api, "PUT", "/v1/nodes/"+l.uuid+"/states/provision", map[string]any{"target": "provide"}, nil)
	deadline := time.Now().Add(60 * time.Second)
	for {
		n := getNode(t, l)
		if n.ProvisionState == "clean failed" {
			if n.LastError == nil || !strings.Contains(*n.LastError, "certificate") {
				t.Errorf("last_error = %v, want a certificate verification error", n.LastError)
			}
			break
		}
		if n.ProvisionState == "available" || time.Now().After(deadline) {
			t.Fatalf("node is %q; want clean failed: the driver talked to an agent it cannot verify", n.ProvisionState)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range l.agent.Commands() {
		t.Errorf("agent ran %s although its certificate did not verify", c.CommandName)
	}
}

// TestRequireTLSRefusesHTTPAgent: an agent with auto-TLS off is refused at
// every heartbeat, so the node never gets an agent_url.
func TestRequireTLSRefusesHTTPAgent(t *testing.T) {
	l := startTLSLab(t, fakeagent.Faults{}, true)
	provision(t, l.api, l.uuid, "manage", "manageable")
	call(t, l.api, "PUT", "/v1/nodes/"+l.uuid+"/states/provision", map[string]any{"target": "provide"}, nil)
	deadline := time.Now().Add(20 * time.Second)
	for l.agent.State().HeartbeatErrors < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("agent state %+v: its http heartbeats were not refused", l.agent.State())
		}
		time.Sleep(20 * time.Millisecond)
	}
	n := getNode(t, l)
	if u, ok := n.DriverInternalInfo["agent_url"]; ok {
		t.Errorf("agent_url = %v recorded although require_tls refuses http", u)
	}
	if n.ProvisionState != "clean wait" {
		t.Errorf("provision_state = %q, want clean wait (until the call-back timeout)", n.ProvisionState)
	}
}

func call(t *testing.T, base, method, path string, body, out any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, base+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-OpenStack-Ironic-API-Version", "latest")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// provision asks for target and waits for the node to reach want.
func provision(t *testing.T, base, uuid, target, want string) {
	t.Helper()
	call(t, base, "PUT", "/v1/nodes/"+uuid+"/states/provision", map[string]any{"target": target}, nil)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var n nodeView
		call(t, base, "GET", "/v1/nodes/"+uuid, nil, &n)
		if n.ProvisionState == want {
			return
		}
		if strings.Contains(n.ProvisionState, "failed") || time.Now().After(deadline) {
			le := ""
			if n.LastError != nil {
				le = *n.LastError
			}
			t.Fatalf("%s: node is %q (last_error %q), want %q", target, n.ProvisionState, le, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
