package scenarios

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/redfish"

	"github.com/ironlab/ironlab/images/ramdisk"
	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator/lab"
)

// TestVMRedfishVirtualMediaBootsAgent: a Redfish node on the libvirt
// backend boots the agent from virtual media as Ironic's
// redfish-virtual-media drives it. The lab builds the node's agent ISO
// (ISOLINUX + the agent ramdisk); gofish inserts it into the BMC's Cd
// drive, sets a one-time boot override Cd and resets the system; the VM
// boots the ISO under TCG (SeaBIOS's CD boot and ISOLINUX on the serial
// console, then the agent) and the agent looks up at the driver API with
// the node's MAC.
func TestVMRedfishVirtualMediaBootsAgent(t *testing.T) {
	vmTier(t)
	if why := ramdisk.ISOTools(); why != "" {
		labtest.Missing(t, "genisoimage and isolinux", why)
	}
	lookups := make(chan []string, 4)
	api := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/drivers/agent_redfish/vendor_passthru/lookup" {
			http.NotFound(w, r)
			return
		}
		var body struct {
			Inventory struct {
				Interfaces []struct {
					MACAddress string `json:"mac_address"`
				} `json:"interfaces"`
			} `json:"inventory"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		var macs []string
		for _, i := range body.Inventory.Interfaces {
			macs = append(macs, i.MACAddress)
		}
		select {
		case lookups <- macs:
		default:
		}
		http.NotFound(w, r) // unknown node: the agent keeps looking up
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api.Listener = ln
	api.Start()
	defer api.Close()

	ctx := context.Background()
	l, err := lab.New(lab.Spec{Name: "vm-vmedia", Seed: 12, StateDir: vmState(t), Backend: "libvirt",
		Libvirt: lab.LibvirtSpec{Accel: "tcg"},
		Groups: []lab.GroupSpec{{Name: "rf", Count: 1,
			Hardware: lab.Hardware{BMC: lab.BMCRedfish, RedfishListen: lab.RedfishPerNode, Firmware: "bios", CPUs: 1, MemoryMB: 256, DiskSize: 64 << 20},
			BMCUser:  "admin", BMCPassword: "password",
			Enrollment: lab.Enrollment{Deploy: lab.DeployAgent, Driver: "agent_redfish", Dialect: "legacy"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Start(ctx, api.URL); err != nil {
		t.Fatal(err)
	}
	n := l.Nodes()[0]
	isoURL, err := l.AgentISOURL(ctx, n)
	if err != nil {
		t.Fatal(err)
	}

	pem, err := os.ReadFile(n.RedfishCA())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c, err := gofish.Connect(gofish.ClientConfig{Endpoint: n.RedfishURL(), Username: "admin", Password: "password",
		HTTPClient: &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout()
	sys, err := redfish.GetComputerSystem(c, n.Redfish.Path())
	if err != nil {
		t.Fatal(err)
	}
	mgrs, err := sys.ManagedBy()
	if err != nil || len(mgrs) != 1 {
		t.Fatalf("managers %v, %v", mgrs, err)
	}
	media, err := mgrs[0].VirtualMedia()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(media, func(v *redfish.VirtualMedia) bool { return v.ID == "Cd" })
	if i < 0 {
		t.Fatalf("no Cd drive in %v", media)
	}
	if err := media[i].InsertMedia(isoURL, true, true); err != nil {
		t.Fatalf("InsertMedia %s: %v", isoURL, err)
	}
	if err := sys.SetBoot(redfish.Boot{BootSourceOverrideTarget: redfish.CdBootSourceOverrideTarget,
		BootSourceOverrideEnabled: redfish.OnceBootSourceOverrideEnabled}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := sys.Reset(redfish.ForceRestartResetType); err != nil {
		t.Fatal(err)
	}
	select {
	case macs := <-lookups:
		t.Logf("from the reset to the agent's lookup: %v", time.Since(t0).Round(100*time.Millisecond))
		if !slices.Contains(macs, n.MACs[0]) {
			t.Errorf("lookup with MACs %v, want the node's %s", macs, n.MACs[0])
		}
	case <-time.After(3 * time.Minute):
		log, _ := n.Machine.ConsoleLog()
		t.Fatalf("no lookup within 3 min of the reset; console:\n%s", log[max(0, len(log)-3000):])
	}
	log, err := n.Machine.ConsoleLog()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Booting from DVD/CD", "ISOLINUX", "ironlab init: agent running"} {
		if !strings.Contains(log, want) {
			t.Errorf("console lacks %q: did the VM boot the agent from the CD?\n%s", want, log[max(0, len(log)-3000):])
		}
	}
	// The override was Once: the system shows it used, the CD stays in.
	sys, err = redfish.GetComputerSystem(c, n.Redfish.Path())
	if err != nil || sys.Boot.BootSourceOverrideEnabled != redfish.DisabledBootSourceOverrideEnabled {
		t.Errorf("boot override after the CD boot: %+v (%v)", sys.Boot, err)
	}
	media, _ = mgrs[0].VirtualMedia()
	if i := slices.IndexFunc(media, func(v *redfish.VirtualMedia) bool { return v.ID == "Cd" }); i < 0 || !media[i].Inserted || media[i].Image != isoURL {
		t.Errorf("Cd drive after the boot: %+v", media)
	}
}

const agentISOScenario = `name: %s
lab:
  backend: %s
  heartbeat_timeout: 30s
  groups: [{name: rf, count: 1, driver: agent_redfish, redfish_listen: per-node, disk_size: 64MiB}]
steps:
  - enroll: {}
  - virtual_media: {agent_iso: true}
  - expect: {console: ISOLINUX}
`

// The scenario step: virtual_media {agent_iso: true} boots a VM from the
// agent ISO the lab builds, over the node's own Redfish listener, and
// waits for the agent on the console.
func TestVMScenarioVirtualMediaAgentISO(t *testing.T) {
	vmTier(t)
	if why := ramdisk.ISOTools(); why != "" {
		labtest.Missing(t, "genisoimage and isolinux", why)
	}
	s, err := Parse("vm-agent-iso.yaml", []byte(fmt.Sprintf(agentISOScenario, "vm-agent-iso", "libvirt")))
	if err != nil {
		t.Fatal(err)
	}
	res, _, state, out := runVM(t, s, "")
	if !res.Passed {
		t.Fatalf("vm-agent-iso failed:\n%s", out)
	}
	if !strings.Contains(out, "ironlab init: agent running") {
		t.Errorf("the step's output does not show the agent's console line:\n%s", out)
	}
	assertTornDown(t, s.Name, state)
}

// On the fake backend there is no agent ISO: the step fails saying so.
func TestVirtualMediaAgentISONeedsVMs(t *testing.T) {
	s, err := Parse("agent-iso.yaml", []byte(fmt.Sprintf(agentISOScenario, "agent-iso", "fake")))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	res, err := Run(context.Background(), s, Options{ResultsDir: t.TempDir(), StateDir: t.TempDir(), StartDriver: builtinDriver,
		FailOnMissingTools: labtest.CI(), DriverBinary: labtest.Binary(t), Out: &out})
	if err == nil && res.Passed {
		t.Fatalf("agent_iso on the fake backend passed:\n%s", out.String())
	}
	if err == nil || !strings.Contains(err.Error(), "node rf-0: the fake backend builds no agent ISO") {
		t.Fatalf("error %v, want one naming the node and saying the fake backend has no agent ISO", err)
	}
}
