package fakeagent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const (
	nodeA = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
	nodeB = "2be26c0b-03f2-4d2e-ae87-c02d7f33c456"
	macA  = "52:54:00:12:34:56"
	macB  = "52:54:00:ab:cd:ef"
)

// waitFor polls cond until it holds; the deadline only stops a broken test
// from hanging, it asserts nothing about speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testHardware(t *testing.T, mac string, diskSizes ...int64) Hardware {
	t.Helper()
	hw := Hardware{
		CPUs: 2, CPUArch: "x86_64", CPUModel: "ironlab vCPU", MemoryMB: 2048,
		NICs:   []NIC{{Name: "eth0", MAC: mac}},
		Vendor: "ironlab", Product: "virtual-node", SerialNumber: "SN-1", BIOSVersion: "1.0.0",
	}
	if len(diskSizes) == 0 {
		diskSizes = []int64{8 << 20}
	}
	for i, size := range diskSizes {
		p := filepath.Join(t.TempDir(), fmt.Sprintf("disk%d.img", i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		hw.Disks = append(hw.Disks, BlockDevice{Name: fmt.Sprintf("vd%c", 'a'+i), SizeBytes: size, Path: p})
	}
	return hw
}

type testAgent struct {
	*Agent
	hw     *MemHardware
	srv    *httptest.Server // standalone API server, when no Mux
	cancel context.CancelFunc
	done   chan error
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startAgent runs an agent against api until the test ends. mod adjusts the
// config before New.
func startAgent(t *testing.T, api *scriptedIronic, hw Hardware, mod func(*Config)) *testAgent {
	t.Helper()
	return startAgentHooked(t, api, hw, mod, nil)
}

// startAgentHooked is startAgent with hook run on the agent before Run (to
// set its test hooks).
func startAgentHooked(t *testing.T, api *scriptedIronic, hw Hardware, mod func(*Config), hook func(*Agent)) *testAgent {
	t.Helper()
	ta := &testAgent{hw: NewMemHardware(hw), done: make(chan error, 1)}
	var h http.Handler
	proxy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) })
	ta.srv = httptest.NewServer(proxy)
	t.Cleanup(ta.srv.Close)
	cfg := Config{
		APIURL:                api.srv.URL,
		AdvertiseURL:          ta.srv.URL,
		Hardware:              ta.hw,
		LookupInterval:        10 * time.Millisecond,
		HeartbeatErrorBackoff: 10 * time.Millisecond,
		ForcedHeartbeatGap:    10 * time.Millisecond,
		Logger:                quietLogger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ta.Agent = a
	if hook != nil {
		hook(a)
	}
	h = a
	ctx, cancel := context.WithCancel(context.Background())
	ta.cancel = cancel
	go func() { ta.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ta.done:
		case <-time.After(10 * time.Second):
			t.Errorf("agent did not stop")
		}
	})
	return ta
}

// post sends a command to the agent's API and decodes the answer.
func (ta *testAgent) post(t *testing.T, name string, params any, wait bool, token string) (int, map[string]any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": name, "params": params})
	u := fmt.Sprintf("%s/v1/commands/?wait=%t&agent_token=%s", ta.srv.URL, wait, token)
	return doJSON(t, http.MethodPost, u, body)
}

func doJSON(t *testing.T, method, url string, body []byte) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: answer %q is not JSON: %v", method, url, raw, err)
		}
	}
	return resp.StatusCode, out
}

// runCommand posts a command with the node's token and waits for its end.
func (ta *testAgent) runCommand(t *testing.T, api *scriptedIronic, name string, params any) map[string]any {
	t.Helper()
	status, res := ta.post(t, name, params, false, api.token(ta.State().NodeUUID))
	if status != 200 {
		t.Fatalf("POST %s: status %d: %v", name, status, res)
	}
	id := res["id"].(string)
	status, res = doJSON(t, http.MethodGet, ta.srv.URL+"/v1/commands/"+id+"?wait=true", nil)
	if status != 200 {
		t.Fatalf("GET command %s: status %d", id, status)
	}
	return res
}

func (ta *testAgent) waitLookedUp(t *testing.T) {
	t.Helper()
	waitFor(t, "lookup", func() bool { return ta.State().LookedUp })
}

// roundTrip turns v into what decoding its JSON gives, for cmp with answers.
func roundTrip(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
