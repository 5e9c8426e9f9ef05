package redfish

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator"
)

// needSushy checks /usr/bin/python3 can import Debian's sushy.
func needSushy(t testing.TB) string {
	t.Helper()
	py := labtest.Require(t, "/usr/bin/python3")
	labtest.RequireFunc(t, "python3-sushy", "apt-get install python3-sushy", func() error {
		out, err := exec.Command(py, "-c", "import sushy").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	return py
}

// sushyClient is testdata/sushy_client.py, one command per line.
type sushyClient struct {
	in  io.WriteCloser
	out *bufio.Reader
	cmd *exec.Cmd
}

func startSushy(t *testing.T, py string, l *testLab, sysIdx int, verify string) *sushyClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, py, "testdata/sushy_client.py", l.svc.URL(), "admin", "password", l.sysPath(sysIdx), verify)
	cmd.Env = pythonEnv()
	cmd.Stderr = &prefixWriter{t: t}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cancel()
			<-done
		}
		cancel()
	})
	return &sushyClient{in: in, out: bufio.NewReader(out), cmd: cmd}
}

// pythonEnv is the environment without the CA bundle variables: requests
// lets REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE override the CA file sushy
// was given, and the test verifies with the service's own certificate.
func pythonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// prefixWriter sends the script's stderr (sushy's warnings) to the test log.
type prefixWriter struct{ t *testing.T }

func (w *prefixWriter) Write(b []byte) (int, error) {
	w.t.Logf("sushy: %s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func (c *sushyClient) run(t *testing.T, line string) map[string]any {
	t.Helper()
	if _, err := fmt.Fprintln(c.in, line); err != nil {
		t.Fatalf("sushy %s: %v", line, err)
	}
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := c.out.ReadString('\n')
		ch <- res{s, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("sushy %s: %v", line, r.err)
		}
		var out map[string]any
		if err := json.Unmarshal([]byte(r.s), &out); err != nil {
			t.Fatalf("sushy %s printed %q: %v", line, r.s, err)
		}
		if e, ok := out["error"]; ok {
			t.Fatalf("sushy %s: %v", line, e)
		}
		return out
	case <-time.After(90 * time.Second):
		t.Fatalf("sushy %s: no answer in 90 s", line)
	}
	return nil
}

// Sushy (Ironic's Redfish library) drives power, boot options, virtual
// media, BIOS and a firmware update; each change is checked on the machine.
func TestSushyConformance(t *testing.T) {
	py := needSushy(t)
	files := map[string]string{"/bios-3.2.bin": "ironlab-firmware 3.2.1\n", "/agent.iso": "CD001 an agent ISO"}
	srv := firmwareServer(t, files)
	for _, mode := range []string{"http", "https"} {
		t.Run(mode, func(t *testing.T) {
			l := newTestLab(t, 3, Options{TLS: mode == "https"})
			verify := "false"
			if mode == "https" {
				verify = filepath.Join(t.TempDir(), "ca.pem")
				if err := os.WriteFile(verify, l.svc.CACertPEM(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			m := l.machines[2]
			c := startSushy(t, py, l, 2, verify)

			inv := c.run(t, "inventory")
			wantInv := map[string]any{
				"cpus": float64(4), "arch": "x86", "memory_gib": float64(8),
				"macs":            []any{"52:54:00:00:02:01", "52:54:00:00:02:02"},
				"disks":           []any{float64(1 << 20), float64(2 << 20)},
				"bios_version":    "1.0.0",
				"allowed_targets": []any{"BiosSetup", "Cd", "Hdd", "None", "Pxe", "UefiHttp"},
				"allowed_resets":  []any{"ForceOff", "ForceOn", "ForceRestart", "GracefulRestart", "GracefulShutdown", "Nmi", "On", "PowerCycle", "PushPowerButton"},
			}
			if d := cmp.Diff(wantInv, inv); d != "" {
				t.Fatalf("inventory through sushy (-want +got):\n%s", d)
			}

			// Power.
			if s := c.run(t, "reset On"); s["power"] != "On" || power(t, m) != simulator.PowerOn {
				t.Fatalf("after On: sushy %v, machine %s", s, power(t, m))
			}
			if s := c.run(t, "reset ForceOff"); s["power"] != "Off" || power(t, m) != simulator.PowerOff {
				t.Fatalf("after ForceOff: sushy %v, machine %s", s, power(t, m))
			}

			// Boot options: what Ironic's set_boot_device sends.
			s := c.run(t, "boot Pxe Once UEFI")
			if d := cmp.Diff(map[string]any{"power": "Off", "target": "Pxe", "enabled": "Once", "mode": "UEFI"}, s); d != "" {
				t.Fatalf("boot Pxe Once (-want +got):\n%s", d)
			}
			if bc := bootConfig(t, m); bc != (simulator.BootConfig{Device: simulator.BootNetwork, UEFI: true}) {
				t.Fatalf("machine boot config %+v", bc)
			}
			c.run(t, "reset On")
			eventually(t, "the network boot", func() bool { return l.agent.boots.Load() == 1 })
			if s := c.run(t, "state"); s["enabled"] != "Disabled" {
				t.Fatalf("Once after the boot: %v", s)
			}
			c.run(t, "reset ForceOff")
			s = c.run(t, "boot Hdd Continuous Legacy")
			if bc := bootConfig(t, m); bc != (simulator.BootConfig{Device: simulator.BootDisk, Persistent: true}) || s["enabled"] != "Continuous" || s["mode"] != "Legacy" {
				t.Fatalf("boot Hdd Continuous Legacy: sushy %v, machine %+v", s, bc)
			}

			// Virtual media, then a CD boot of it.
			vm := c.run(t, "insert "+srv+"/agent.iso")
			if vm["inserted"] != true || vm["image"] != srv+"/agent.iso" || m.Media() != srv+"/agent.iso" {
				t.Fatalf("insert: sushy %v, machine %q", vm, m.Media())
			}
			c.run(t, "boot Cd Once UEFI")
			c.run(t, "reset On")
			eventually(t, "the CD boot", func() bool { return l.agent.boots.Load() == 2 })
			if log, _ := m.ConsoleLog(); !strings.Contains(log, "virtual CD: booting "+srv+"/agent.iso") {
				t.Fatalf("console %q", log)
			}
			if vm := c.run(t, "eject"); vm["inserted"] != false || m.Media() != "" {
				t.Fatalf("eject: sushy %v, machine %q", vm, m.Media())
			}

			// BIOS: staged, then applied by a reset.
			b := c.run(t, "bios_set ProcVirtualization Disabled")
			if d := cmp.Diff(map[string]any{"pending": map[string]any{"ProcVirtualization": "Disabled"}, "current": "Enabled"}, b); d != "" {
				t.Fatalf("bios_set (-want +got):\n%s", d)
			}
			c.run(t, "reset ForceRestart")
			if b := c.run(t, "bios_get ProcVirtualization"); b["current"] != "Disabled" || m.Hardware().BIOSSettings["ProcVirtualization"] != "Disabled" {
				t.Fatalf("after reset: sushy %v, machine %v", b, m.Hardware().BIOSSettings)
			}
			if sb := c.run(t, "secure_boot true"); sb["enabled"] != true {
				t.Fatalf("secure boot %v", sb)
			}

			// Firmware update through UpdateService and a task monitor.
			u := c.run(t, "update "+srv+"/bios-3.2.bin")
			if u["task_state"] != "Completed" || u["bios_version"] != "3.2.1" || m.Hardware().BIOSVersion != "3.2.1" {
				t.Fatalf("update: sushy %v, machine %q", u, m.Hardware().BIOSVersion)
			}
			if v := l.machines[0].Hardware().BIOSVersion; v != "1.0.0" {
				t.Fatalf("another system's firmware changed to %s", v)
			}
			u = c.run(t, "update "+srv+"/missing.bin")
			if u["task_state"] != "Exception" || m.Hardware().BIOSVersion != "3.2.1" {
				t.Fatalf("failed update: sushy %v, machine %q", u, m.Hardware().BIOSVersion)
			}
		})
	}
}
