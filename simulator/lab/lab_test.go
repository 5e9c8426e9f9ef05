package lab

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/simulator"
)

func spec(t *testing.T) Spec {
	return Spec{
		Name: "t", Seed: 7, StateDir: t.TempDir(), BMCBasePort: 0,
		Groups: []GroupSpec{
			{Name: "fa", Count: 3, Hardware: Hardware{BMC: BMCNone, Firmware: "bios", CPUs: 2, MemoryMB: 1024, DiskSize: 1 << 20},
				Enrollment: Enrollment{Deploy: DeployAgent, Driver: "fake_agent", Dialect: "v1"}},
			{Name: "ip", Count: 2, Hardware: Hardware{BMC: BMCIPMI, Firmware: "uefi", CPUs: 1, MemoryMB: 512, DiskSize: 1 << 20},
				Enrollment: Enrollment{Deploy: DeployAgent, Driver: "agent_ipmitool", Dialect: "v1"}},
		},
		Images:         []images.Spec{{ID: "img", Size: 4096}},
		LookupInterval: 20 * time.Millisecond,
	}
}

func TestIdentitiesAreStable(t *testing.T) {
	a, b := DeriveUUID(1, "lab", "n-0"), DeriveUUID(1, "lab", "n-0")
	if a != b {
		t.Fatalf("same seed and name gave %s and %s", a, b)
	}
	if a == DeriveUUID(2, "lab", "n-0") || a == DeriveUUID(1, "lab", "n-1") {
		t.Errorf("different seed or name gave the same UUID")
	}
	used := map[string]bool{}
	seen := map[string]bool{}
	for i := 0; i < 5000; i++ {
		m := DeriveMAC(1, "lab", string(rune('a'+i%26))+string(rune(i)), used)
		if seen[m] {
			t.Fatalf("MAC %s handed out twice", m)
		}
		seen[m] = true
	}
}

func TestLabAssembly(t *testing.T) {
	s := spec(t)
	s.BMCBasePort = 16230
	l, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if len(l.Nodes()) != 5 {
		t.Fatalf("%d nodes, want 5", len(l.Nodes()))
	}
	fa, _ := l.Node("fa-0")
	ip, _ := l.Node("ip-1")
	if fa.BMC != nil || fa.SSH != nil {
		t.Errorf("a node of BMC none has a BMC")
	}
	if ip.BMC == nil {
		t.Fatalf("a node of BMC ipmi has no BMC")
	}
	if ap := ip.BMC.Addr(); ap.String() != "127.0.0.1:16234" || ip.BMCCreds.Username != "admin" {
		t.Errorf("ip-1's BMC on %s as %s, want 127.0.0.1:16234 as admin", ap, ip.BMCCreds.Username)
	}
	if hw := ip.Machine.Hardware(); hw.CPUs != 1 || len(hw.NICs) != 1 || hw.NICs[0].MAC != ip.MACs[0] {
		t.Errorf("ip-1's hardware %+v", hw)
	}
	// A second lab from the same spec has the same identities.
	s2 := spec(t)
	s2.BMCBasePort = 17230
	l2, err := New(s2)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	for i, n := range l.Nodes() {
		m := l2.Nodes()[i]
		if n.UUID != m.UUID || n.MACs[0] != m.MACs[0] {
			t.Errorf("node %s: rerun gave %s/%s, first run %s/%s", n.Name, m.UUID, m.MACs[0], n.UUID, n.MACs[0])
		}
	}
}

// Fake-power nodes start powered on and network-booted; their agents keep
// retrying lookup until the driver accepts them.
func TestStartBootsFakePowerNodesIntoTheAgent(t *testing.T) {
	var lookups atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/lookup" {
			lookups.Add(1)
		}
		if r.URL.Path == "/" {
			w.Write([]byte(`{"default_version": {"version": "1.89"}}`))
			return
		}
		http.NotFound(w, r)
	}))
	defer api.Close()
	s := spec(t)
	s.BMCBasePort = 18230
	l, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Start(context.Background(), api.URL); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, n := range l.Nodes() {
		st, _ := n.Machine.Power(ctx)
		want := simulator.PowerOff
		if n.Hardware.BMC == BMCNone {
			want = simulator.PowerOn
		}
		if st != want {
			t.Errorf("%s (BMC %s) power %s, want %s", n.Name, n.Hardware.BMC, st, want)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for lookups.Load() < 6 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if lookups.Load() < 6 {
		t.Errorf("%d lookups, want the 3 agents to retry", lookups.Load())
	}
}

// A fault for until the next reboot, set while the node runs no agent,
// reaches the next agent it boots, and only that one.
func TestPendingAgentFaultsReachTheNextBoot(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			w.Write([]byte(`{"default_version": {"version": "1.89"}}`))
			return
		}
		http.NotFound(w, r)
	}))
	defer api.Close()
	s := spec(t)
	l, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	n, _ := l.Node("fa-0")
	if n.Agent() != nil {
		t.Fatal("an agent runs before Start")
	}
	f := fakeagent.Faults{CrashDuring: "deploy.write_image"}
	if err := n.SetAgentFaults(f, false); err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background(), api.URL); err != nil {
		t.Fatal(err)
	}
	first := waitAgent(t, n, nil)
	if got := first.Faults(); got != f {
		t.Fatalf("the first agent booted with faults %+v, want %+v", got, f)
	}
	if err := n.Machine.SetPower(context.Background(), simulator.ActionReset); err != nil {
		t.Fatal(err)
	}
	second := waitAgent(t, n, first)
	if got := second.Faults(); got != (fakeagent.Faults{}) {
		t.Errorf("the agent after a reboot has faults %+v, want none", got)
	}
}

// waitAgent waits for the node to run an agent other than not.
func waitAgent(t *testing.T, n *Node, not *fakeagent.Agent) *fakeagent.Agent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if a := n.Agent(); a != nil && a != not {
			return a
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("node %s booted no new agent in 10s", n.Name)
	return nil
}

// Extra NICs get MACs of their own; the first NIC's MAC does not change.
func TestGroupNICs(t *testing.T) {
	s := spec(t)
	one, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	s2 := spec(t)
	s2.Groups[1].NICs = 3
	three, err := New(s2)
	if err != nil {
		t.Fatal(err)
	}
	defer three.Close()
	a, _ := one.Node("ip-0")
	b, _ := three.Node("ip-0")
	if len(b.MACs) != 3 || b.MACs[0] != a.MACs[0] || b.MACs[1] == b.MACs[2] {
		t.Fatalf("MACs with 3 NICs %v, with one %v", b.MACs, a.MACs)
	}
	if nics := b.Machine.Hardware().NICs; len(nics) != 3 || nics[2].Name != "eth2" || nics[2].MAC != b.MACs[2] {
		t.Errorf("NICs %+v", nics)
	}
}

// A group whose hardware the lab does not know is an error naming it.
func TestUnknownBMCIsAnError(t *testing.T) {
	s := spec(t)
	s.Groups[0].BMC = "carrier-pigeon"
	if _, err := New(s); err == nil || !strings.Contains(err.Error(), `group fa: BMC "carrier-pigeon"`) {
		t.Fatalf("New: %v, want an error naming the group and its BMC", err)
	}
}
