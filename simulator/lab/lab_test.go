package lab

import (
	"os"
	"path/filepath"

	"context"
	"gopkg.in/yaml.v3"
	"net/http"
	"net/http/httptest"
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
			{Name: "fa", Count: 3, Driver: "fake_agent", Dialect: "v1", CPUs: 2, MemoryMB: 1024, DiskSize: 1 << 20, BootMode: "bios"},
			{Name: "ip", Count: 2, Driver: "agent_ipmitool", Dialect: "v1", CPUs: 1, MemoryMB: 512, DiskSize: 1 << 20, BootMode: "uefi"},
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
	if fa.BMC != nil {
		t.Errorf("fake_agent node has a BMC")
	}
	if ip.BMC == nil {
		t.Fatalf("agent_ipmitool node has no BMC")
	}
	di := ip.DriverInfo()
	if di["ipmi_address"] != "127.0.0.1" || di["ipmi_port"] != 16234 || di["ipmi_username"] != "admin" {
		t.Errorf("driver_info %v", di)
	}
	if p := ip.Properties(); p["capabilities"] != "boot_mode:uefi" || p["cpus"] != 1 {
		t.Errorf("properties %v", p)
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
		if n.Driver == "fake_agent" {
			want = simulator.PowerOn
		}
		if st != want {
			t.Errorf("%s (%s) power %s, want %s", n.Name, n.Driver, st, want)
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

func TestWriteNodesYAML(t *testing.T) {
	s := spec(t)
	s.BMCBasePort = 19230
	// Strings a careless encoder writes plain, which then read back as a
	// number or (PyYAML, the consumer) a boolean.
	s.Groups[1].BMCUser, s.Groups[1].BMCPassword = "on", "1e3"
	l, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := filepath.Join(t.TempDir(), "nodes.yaml")
	if err := l.WriteNodesYAML(p, TargetBuiltin, ""); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	var got struct {
		Nodes []struct {
			Name       string         `yaml:"name"`
			Driver     string         `yaml:"driver"`
			DriverInfo map[string]any `yaml:"driver_info"`
			Properties map[string]any `yaml:"properties"`
			Ports      []struct {
				Address string `yaml:"address"`
			} `yaml:"ports"`
		} `yaml:"nodes"`
	}
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Nodes) != 5 {
		t.Fatalf("%d nodes in nodes.yaml", len(got.Nodes))
	}
	ip := got.Nodes[4]
	n, _ := l.Node("ip-1")
	if ip.Name != "ip-1" || ip.Driver != "agent_ipmitool" || ip.DriverInfo["ipmi_port"] != 19234 ||
		ip.DriverInfo["ipmi_password"] != "1e3" || ip.DriverInfo["ipmi_username"] != "on" || ip.Ports[0].Address != n.MACs[0] || ip.Properties["cpu_arch"] != "x86_64" {
		t.Errorf("node entry %+v", ip)
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
