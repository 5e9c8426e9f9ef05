package driver_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/fakeagent"
)

// TestFastTrackAndManualCleanWithRealAgent runs `ironlab driver --fast-track`
// against a fake machine behind a virtual IPMI BMC and the fake IPA it
// boots: cleaning leaves the agent running, manual clean steps change the
// machine's firmware and BIOS settings with the arguments given, a failed
// step reports the agent's error, and the deploy boots no ramdisk.
func TestFastTrackAndManualCleanWithRealAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the ironlab binary")
	}
	image := bytes.Repeat([]byte("ironlab fast-track image "), 40_000)
	sum := fmt.Sprintf("%x", sha256.Sum256(image))
	imgSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(image)))
		w.Write(image)
	}))
	defer imgSrv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mux, err := fakeagent.ListenMux(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := startDriver(t, "--fast-track")
	r := newRig(t, ctx, p.url(), mux)
	id := r.enroll(p, imgSrv.URL+"/images/ft.raw", sum)

	toAvailable(p, id)
	n := p.node(id)
	if n.PowerState != "power on" {
		t.Fatalf("after cleaning with fast track: power %q, want power on", n.PowerState)
	}
	boots := r.machine.Boots()

	// A manual clean with arguments, on the running agent.
	p.provision(id, "manage")
	p.waitState(id, states.Manageable)
	p.api("PUT", "/v1/nodes/"+id+"/states/provision", map[string]any{"target": "clean", "clean_steps": []any{
		map[string]any{"interface": "deploy", "step": "update_firmware", "args": map[string]any{"version": "2.1.0"}},
		map[string]any{"interface": "bios", "step": "apply_bios_settings", "args": map[string]any{"settings": []any{map[string]any{"name": "vt", "value": "off"}}}},
	}}, nil)
	p.waitFor(id, "manageable after the manual clean", func(n apiNode) bool {
		return n.ProvisionState == states.Manageable && r.machine.Hardware().BIOSVersion == "2.1.0"
	})
	if hw := r.machine.Hardware(); hw.BIOSSettings["vt"] != "off" {
		t.Errorf("BIOS settings after apply_bios_settings: %v, want vt=off", hw.BIOSSettings)
	}

	// A step the agent fails: clean failed with the agent's error.
	r.setAgentFaults(fakeagent.Faults{FailCommand: &fakeagent.CommandFailure{Command: "update_firmware", Error: "flash failed: image rejected"}})
	p.api("PUT", "/v1/nodes/"+id+"/states/provision", map[string]any{"target": "clean", "clean_steps": []any{
		map[string]any{"interface": "deploy", "step": "update_firmware", "args": map[string]any{"version": "3.0.0"}},
	}}, nil)
	n = p.waitFor(id, "clean failed", func(n apiNode) bool { return n.ProvisionState == states.CleanFailed })
	if !strings.Contains(n.lastError(), "flash failed: image rejected") {
		t.Errorf("last_error = %q, want the agent's error", n.lastError())
	}
	r.setAgentFaults(fakeagent.Faults{})
	p.api("DELETE", "/v1/nodes/"+id+"/maintenance", nil, nil)
	p.provision(id, "manage")
	p.waitState(id, states.Manageable)
	p.provision(id, "provide")
	p.waitState(id, states.Available)
	if got := r.machine.Boots(); got != boots {
		t.Errorf("the machine booted %d more times during fast-track cleaning", got-boots)
	}

	// The deploy: no boot into the ramdisk, only the final boot from disk.
	p.provision(id, "active")
	p.waitState(id, states.Active)
	if got := r.machine.Boots(); got != boots+1 {
		t.Errorf("a fast-track deploy booted the machine %d times, want once (from disk)", got-boots)
	}
	if b, _ := os.ReadFile(r.disk); !bytes.HasPrefix(b, image) {
		t.Error("the disk does not hold the image")
	}
	var out struct {
		Events []apiEvent `json:"events"`
	}
	p.api("GET", "/v1/nodes/"+id+"/events", nil, &out)
	fast := 0
	for _, e := range out.Events {
		if e.Event == "fast track" {
			fast++
		}
	}
	// Two manual cleans, the automated one on provide, and the deploy.
	if fast != 4 {
		t.Errorf("%d \"fast track\" events, want 4", fast)
	}
	checkHistory(t, p, id)
}
