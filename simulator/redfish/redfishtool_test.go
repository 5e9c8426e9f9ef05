package redfish

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator"
)

// DMTF's redfishtool (Debian package) with Basic and Session auth, over
// http and https: it reads systems, resets them, sets the boot override and
// drives virtual media with raw requests.
func TestRedfishtoolConformance(t *testing.T) {
	tool := labtest.Require(t, "redfishtool")
	img := firmwareServer(t, map[string]string{"/agent.iso": "CD001 iso"})
	for _, c := range []struct{ name, secure, auth string }{
		{"http-basic", "Never", "Basic"},
		{"http-session", "Never", "Session"},
		{"https-basic", "Always", "Basic"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newTestLab(t, 2, Options{TLS: c.secure == "Always"})
			m := l.machines[1]
			host := strings.TrimPrefix(strings.TrimPrefix(l.svc.URL(), "http://"), "https://")
			run := func(args ...string) string {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				full := append([]string{"-r", host, "-u", "admin", "-p", "password", "-S", c.secure, "-A", c.auth, "-T", "20"}, args...)
				cmd := exec.CommandContext(ctx, tool, full...)
				cmd.Env = pythonEnv()
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("redfishtool %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				return string(out)
			}
			getSystem := func() map[string]any {
				t.Helper()
				out := run("Systems", "-I", m.UUID())
				var v map[string]any
				if err := json.Unmarshal([]byte(out), &v); err != nil {
					t.Fatalf("Systems -I: %q: %v", out, err)
				}
				return v
			}
			if out := run("Systems", "list"); !strings.Contains(out, m.UUID()) || !strings.Contains(out, l.machines[0].UUID()) {
				t.Fatalf("Systems list: %s", out)
			}
			if v := getSystem(); v["PowerState"] != "Off" || v["UUID"] != m.UUID() {
				t.Fatalf("system %v", v)
			}
			run("Systems", "-I", m.UUID(), "reset", "On")
			if p := power(t, m); p != simulator.PowerOn {
				t.Fatalf("after reset On the machine is %s", p)
			}
			if v := getSystem(); v["PowerState"] != "On" {
				t.Fatalf("PowerState after On: %v", v["PowerState"])
			}
			run("Systems", "-I", m.UUID(), "reset", "ForceOff")
			if p := power(t, m); p != simulator.PowerOff {
				t.Fatalf("after ForceOff the machine is %s", p)
			}
			run("Systems", "-I", m.UUID(), "setBootOverride", "Continuous", "Pxe")
			if bc := bootConfig(t, m); bc.Device != simulator.BootNetwork || !bc.Persistent {
				t.Fatalf("after setBootOverride Continuous Pxe: %+v", bc)
			}
			if out := run("Systems", "-I", m.UUID(), "EthernetInterfaces", "-a"); !strings.Contains(out, "52:54:00:00:01:02") {
				t.Fatalf("EthernetInterfaces: %s", out)
			}
			cd := "/redfish/v1/Managers/" + m.UUID() + "/VirtualMedia/Cd"
			run("raw", "POST", cd+"/Actions/VirtualMedia.InsertMedia", "-d", `{"Image": "`+img+`/agent.iso"}`)
			if m.Media() != img+"/agent.iso" {
				t.Fatalf("after InsertMedia the machine has %q", m.Media())
			}
			if out := run("raw", "GET", cd); !strings.Contains(out, `"Inserted": true`) {
				t.Fatalf("virtual CD: %s", out)
			}
			run("raw", "POST", cd+"/Actions/VirtualMedia.EjectMedia", "-d", `{}`)
			if m.Media() != "" {
				t.Fatalf("after EjectMedia the machine has %q", m.Media())
			}
		})
	}
}
