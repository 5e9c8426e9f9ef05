package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/redfish"

	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator"
)

func redfishSpec(t *testing.T, listen RedfishListen) Spec {
	s := spec(t)
	s.Groups = []GroupSpec{{Name: "rf", Count: 2,
		Hardware: Hardware{BMC: BMCRedfish, RedfishListen: listen, Firmware: "bios", CPUs: 2, MemoryMB: 1024, DiskSize: 1 << 20},
		BMCUser:  "admin", BMCPassword: "secret",
		Enrollment: Enrollment{Deploy: DeployAgent, Driver: "agent_redfish", Dialect: "v1"}}}
	return s
}

// gofishTo connects to a node's Redfish service as a user of nodes.yaml
// would: its address, its credentials, its CA file.
func gofishTo(t *testing.T, n *Node) *gofish.APIClient {
	t.Helper()
	pem, err := os.ReadFile(n.RedfishCA())
	if err != nil {
		t.Fatalf("node %s: the CA file of its Redfish service: %v", n.Name, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("node %s: %s holds no certificate", n.Name, n.RedfishCA())
	}
	c, err := gofish.Connect(gofish.ClientConfig{Endpoint: n.RedfishURL(), Username: "admin", Password: "secret", BasicAuth: true,
		HTTPClient: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}})
	if err != nil {
		t.Fatalf("node %s: gofish.Connect %s: %v", n.Name, n.RedfishURL(), err)
	}
	t.Cleanup(c.Logout)
	return c
}

// Per-node Redfish: every node has its own https listener on its own port
// and CA file, whose service holds that node's system alone; a reset
// through one changes that node's machine and not the other's.
func TestRedfishPerNodeListeners(t *testing.T) {
	l, err := New(redfishSpec(t, RedfishPerNode))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, b := l.Nodes()[0], l.Nodes()[1]
	if a.RedfishURL() == b.RedfishURL() || !strings.HasPrefix(a.RedfishURL(), "https://127.0.0.1:") {
		t.Fatalf("addresses %s and %s: want two https listeners on 127.0.0.1", a.RedfishURL(), b.RedfishURL())
	}
	if a.RedfishCA() == b.RedfishCA() {
		t.Errorf("both nodes' CA file is %s", a.RedfishCA())
	}
	ctx := context.Background()
	for _, n := range []*Node{a, b} {
		c := gofishTo(t, n)
		systems, err := c.Service.Systems()
		if err != nil || len(systems) != 1 || systems[0].UUID != n.UUID || systems[0].ODataID != n.Redfish.Path() {
			t.Fatalf("node %s at %s: systems %v (%v), want its own system %s alone", n.Name, n.RedfishURL(), systems, err, n.Redfish.Path())
		}
	}
	sys, err := redfish.GetComputerSystem(gofishTo(t, b), b.Redfish.Path())
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.Reset(redfish.OnResetType); err != nil {
		t.Fatalf("reset On through %s: %v", b.RedfishURL(), err)
	}
	if p, _ := b.Machine.Power(ctx); p != simulator.PowerOn {
		t.Errorf("node %s after Reset On: power %s", b.Name, p)
	}
	if p, _ := a.Machine.Power(ctx); p != simulator.PowerOff {
		t.Errorf("node %s (another listener) after %s's Reset On: power %s", a.Name, b.Name, p)
	}
	// One node's system is not on the other's listener.
	if _, err := redfish.GetComputerSystem(gofishTo(t, a), b.Redfish.Path()); err == nil {
		t.Errorf("node %s's listener serves node %s's system", a.Name, b.Name)
	}
}

// The default keeps one listener for the group, serving both systems.
func TestRedfishSharedListener(t *testing.T) {
	l, err := New(redfishSpec(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, b := l.Nodes()[0], l.Nodes()[1]
	if a.RedfishURL() != b.RedfishURL() || a.RedfishCA() != b.RedfishCA() {
		t.Fatalf("shared: %s (%s) and %s (%s)", a.RedfishURL(), a.RedfishCA(), b.RedfishURL(), b.RedfishCA())
	}
	if systems, err := gofishTo(t, a).Service.Systems(); err != nil || len(systems) != 2 {
		t.Fatalf("shared listener: %d systems, %v", len(systems), err)
	}
}

func TestRedfishListenIsChecked(t *testing.T) {
	s := redfishSpec(t, "per-rack")
	if _, err := New(s); err == nil || !strings.Contains(err.Error(), `group rf: Redfish listen "per-rack"`) {
		t.Errorf("New: %v, want an error naming the group and the value", err)
	}
	s = spec(t)
	s.Groups[1].RedfishListen = RedfishPerNode
	if _, err := New(s); err == nil || !strings.Contains(err.Error(), "needs BMC redfish") {
		t.Errorf("New with per-node on IPMI nodes: %v", err)
	}
}

// sushyPerNode is what Ironic's redfish driver does with a node whose
// driver_info has no redfish_system_id: sushy's get_system() takes the
// service's one system. It prints the system's UUID and power, resets it
// On when asked, and prints the power again.
const sushyPerNode = `
import json, sys, sushy
url, user, password, ca, reset = sys.argv[1:6]
root = sushy.Sushy(url, username=user, password=password, verify=ca)
s = root.get_system()
out = {"uuid": s.uuid, "power": str(s.power_state.value)}
if reset == "on":
    s.reset_system(sushy.ResetType.ON)
    s.refresh()
    out["after"] = str(s.power_state.value)
print(json.dumps(out))
`

// Sushy (Debian's python3-sushy, Ironic's Redfish library) against two
// per-node listeners, each node reached at its own address with its own
// CA and no system id, as nodes.yaml without redfish_system_id would be.
func TestRedfishPerNodeWithSushy(t *testing.T) {
	py := labtest.Require(t, "/usr/bin/python3")
	labtest.RequireFunc(t, "python3-sushy", "apt-get install python3-sushy", func() error {
		if out, err := exec.Command(py, "-c", "import sushy").CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	l, err := New(redfishSpec(t, RedfishPerNode))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	run := func(n *Node, reset string) map[string]string {
		t.Helper()
		cmd := exec.Command(py, "-c", sushyPerNode, n.RedfishURL(), "admin", "secret", n.RedfishCA(), reset)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()} // no CA bundle variables overriding verify
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("sushy against %s: %v\n%s", n.RedfishURL(), err, stderr)
		}
		var got map[string]string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("sushy printed %q: %v", out, err)
		}
		return got
	}
	a, b := l.Nodes()[0], l.Nodes()[1]
	if got := run(b, "on"); got["uuid"] != b.UUID || got["power"] != "Off" || got["after"] != "On" {
		t.Errorf("node %s through sushy: %v", b.Name, got)
	}
	if p, _ := b.Machine.Power(context.Background()); p != simulator.PowerOn {
		t.Errorf("node %s after sushy's reset On: machine %s", b.Name, p)
	}
	if got := run(a, ""); got["uuid"] != a.UUID || got["power"] != "Off" {
		t.Errorf("node %s through sushy, after %s's reset: %v", a.Name, b.Name, got)
	}
}
