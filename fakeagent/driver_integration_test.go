package fakeagent_test

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
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver"
	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/simulator"
)

// TestWithRealDriver runs the agent against the real driver over loopback
// HTTP: automated cleaning really zeroes the disk, and a deploy writes the
// image, in both dialects.
func TestWithRealDriver(t *testing.T) {
	for _, dialect := range []fakeagent.Dialect{fakeagent.DialectV1, fakeagent.DialectLegacy} {
		t.Run(string(dialect), func(t *testing.T) {
			testWithRealDriver(t, dialect)
		})
	}
}

func testWithRealDriver(t *testing.T, dialect fakeagent.Dialect) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)

	cfg := driver.DefaultConfig()
	cfg.DBPath = filepath.Join(t.TempDir(), "ironlab.db")
	cfg.Host = "conductor-1"
	cfg.HeartbeatTimeout = 2 * time.Second
	cfg.CheckInterval = time.Hour // no watchdog in this test
	cfg.AgentPollInterval = 20 * time.Millisecond
	cfg.LockRetryInterval = 10 * time.Millisecond
	cfg.Logger = quiet
	d, err := driver.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()
	apiURL := "http://" + ln.Addr().String()

	image := bytes.Repeat([]byte("ironlab image "), 100_000)
	imgSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/disk.raw" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(image)))
		w.Write(image)
	}))
	defer imgSrv.Close()

	// The machine: one NIC, one 4 MiB disk full of 0xA5 so erasing shows.
	const mac = "52:54:00:10:20:30"
	diskPath := filepath.Join(t.TempDir(), "vda.img")
	if err := os.WriteFile(diskPath, bytes.Repeat([]byte{0xA5}, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	hw := simulator.Hardware{
		CPUs: 1, CPUArch: "x86_64", MemoryMB: 1024, BIOSVersion: "1.0",
		NICs:  []simulator.NIC{{Name: "eth0", MAC: mac}},
		Disks: []simulator.Disk{{Name: "vda", SizeBytes: 4 << 20, Path: diskPath}},
	}

	// Enroll a fake_agent node, as a scenario would.
	var node struct {
		UUID string `json:"uuid"`
	}
	call(t, apiURL, "POST", "/v1/nodes", map[string]any{"name": "node-0", "driver": "fake_agent"}, &node)
	call(t, apiURL, "POST", "/v1/ports", map[string]any{"node_uuid": node.UUID, "address": mac}, nil)

	// The agent runs from the start (fake_agent: FakePower, the spec's
	// long-running model) and keeps retrying lookup until the node takes it.
	mux, err := fakeagent.ListenMux(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	agent, err := fakeagent.New(fakeagent.Config{
		APIURL: apiURL, Dialect: dialect, Driver: "fake_agent", Mux: mux,
		Hardware:       fakeagent.NewMemHardware(hw),
		LookupInterval: 20 * time.Millisecond, HeartbeatErrorBackoff: 20 * time.Millisecond,
		ForcedHeartbeatGap: 20 * time.Millisecond, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Run(ctx) }()
	defer func() { cancel(); <-agentDone }()

	provision(t, apiURL, node.UUID, "manage", "manageable")
	provision(t, apiURL, node.UUID, "provide", "available") // automated cleaning
	disk, _ := os.ReadFile(diskPath)
	if i := bytes.IndexFunc(disk, func(r rune) bool { return r != 0 }); i >= 0 {
		t.Fatalf("after cleaning, disk byte %d is not zero", i)
	}

	sum := sha256.Sum256(image)
	patch := []map[string]any{
		{"op": "add", "path": "/instance_info/image_source", "value": imgSrv.URL + "/disk.raw"},
		{"op": "add", "path": "/instance_info/image_os_hash_algo", "value": "sha256"},
		{"op": "add", "path": "/instance_info/image_os_hash_value", "value": fmt.Sprintf("%x", sum)},
	}
	call(t, apiURL, "PATCH", "/v1/nodes/"+node.UUID, patch, nil)
	provision(t, apiURL, node.UUID, "active", "active")
	disk, _ = os.ReadFile(diskPath)
	if !bytes.Equal(disk[:len(image)], image) {
		t.Fatalf("after deploy, the disk does not hold the image")
	}
	var cmds []string
	for _, c := range agent.Commands() {
		cmds = append(cmds, c.CommandName+"="+c.CommandStatus)
	}
	t.Logf("agent commands: %s", strings.Join(cmds, " "))
}

func call(t *testing.T, base, method, path string, body, out any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, base+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-OpenStack-Ironic-API-Version", "latest")
	resp, err := http.DefaultClient.Do(req)
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
		var n struct {
			ProvisionState string  `json:"provision_state"`
			LastError      *string `json:"last_error"`
		}
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
