package sshpower

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"

	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/fake"
)

type host struct {
	srv      *Server
	machines []*fake.Machine
	signer   ssh.Signer
}

func newHost(t *testing.T) *host {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	h := &host{signer: signer}
	dir := t.TempDir()
	for i, name := range []string{"vm-0", "vm-1"} {
		m, err := fake.New(fake.Options{Name: name, UUID: []string{"11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"}[i],
			Hardware: simulator.Hardware{CPUs: 1, MemoryMB: 512,
				NICs:  []simulator.NIC{{Name: "eth0", MAC: []string{"52:54:00:aa:bb:01", "52:54:00:aa:bb:02"}[i]}},
				Disks: []simulator.Disk{{Name: "vda", SizeBytes: 1 << 20, Path: filepath.Join(dir, name+".raw")}}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		h.machines = append(h.machines, m)
	}
	srv, err := New(Config{
		Users: []User{{Name: "admin", Password: "secret"}, {Name: "stack", Keys: []ssh.PublicKey{signer.PublicKey()}}},
		Machines: func() []simulator.Machine {
			return []simulator.Machine{h.machines[0], h.machines[1]}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Close() })
	h.srv = srv
	return h
}

func (h *host) dial(t *testing.T, user string, auth ssh.AuthMethod) (*ssh.Client, error) {
	t.Helper()
	return ssh.Dial("tcp", h.srv.Addr().String(), &ssh.ClientConfig{
		User: user, Auth: []ssh.AuthMethod{auth}, Timeout: 5 * time.Second,
		HostKeyCallback: ssh.FixedHostKey(h.srv.HostKey()),
	})
}

// run executes a command over a real SSH session.
func run(t *testing.T, c *ssh.Client, cmd string) (string, string, int) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out, errOut bytes.Buffer
	s.Stdout, s.Stderr = &out, &errOut
	status := 0
	if err := s.Run(cmd); err != nil {
		var ee *ssh.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("%s: %v", cmd, err)
		}
		status = ee.ExitStatus()
	}
	return out.String(), errOut.String(), status
}

const base = "LC_ALL=C /usr/bin/virsh --connect qemu:///system"

// Ironic's virsh command lines, as ssh.py built them.
const (
	getMACs       = base + ` dumpxml vm-1 | awk -F "'" '/mac address/{print $2}'| tr -d ':'`
	setBootDevice = `EDITOR="sed -i '/<boot \(dev\|order\)=*\>/d;/<\/os>/i\<boot dev=\"%s\"/>'" ` + base + ` edit vm-0`
	getBootDevice = base + ` dumpxml vm-0 | awk '/boot dev=/ { gsub( ".*dev=" Q, "" ); gsub( Q ".*", "" ); print; }' Q="'" RS="[<>]" | head -1`
)

func TestVirshCommands(t *testing.T) {
	h := newHost(t)
	c, err := h.dial(t, "admin", ssh.Password("secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	power := func(i int) simulator.PowerState {
		st, _ := h.machines[i].Power(ctx)
		return st
	}
	steps := []struct {
		name, cmd, stdout string
		status            int
		stderr            string
		after             func() string
	}{
		{name: "list all", cmd: base + " list --all --name", stdout: "vm-0\nvm-1\n\n"},
		{name: "list running, none", cmd: base + " list --name", stdout: "\n"},
		{name: "domstate off", cmd: base + " domstate vm-0", stdout: "shut off\n\n"},
		{name: "start", cmd: base + " start vm-0", stdout: "Domain 'vm-0' started\n\n",
			after: func() string { return string(power(0)) + "/" + string(power(1)) }},
		{name: "start again", cmd: base + " start vm-0", status: 1, stderr: "domain is already active"},
		{name: "list running", cmd: base + " list --name", stdout: "vm-0\n\n"},
		{name: "domstate on", cmd: base + " domstate vm-0", stdout: "running\n\n"},
		{name: "reset", cmd: base + " reset vm-0", stdout: "Domain 'vm-0' was reset\n\n",
			after: func() string { return "boots=" + string(rune('0'+h.machines[0].Boots())) }},
		{name: "destroy", cmd: base + " destroy vm-0", stdout: "Domain 'vm-0' destroyed\n\n",
			after: func() string { return string(power(0)) }},
		{name: "destroy off", cmd: base + " destroy vm-0", status: 1, stderr: "domain is not running"},
		{name: "reset off", cmd: base + " reset vm-1", status: 1, stderr: "domain is not running"},
		{name: "macs", cmd: getMACs, stdout: "525400aabb02\n"},
		{name: "set boot network", cmd: strings.Replace(setBootDevice, "%s", "network", 1), stdout: "Domain 'vm-0' XML configuration edited.\n\n"},
		{name: "get boot network", cmd: getBootDevice, stdout: "network\n"},
		{name: "set boot hd", cmd: strings.Replace(setBootDevice, "%s", "hd", 1), stdout: "Domain 'vm-0' XML configuration edited.\n\n",
			after: func() string {
				bc, _ := h.machines[0].BootConfig(ctx)
				return string(bc.Device)
			}},
		{name: "get boot hd", cmd: getBootDevice, stdout: "hd\n"},
		{name: "domname by uuid", cmd: base + " domname 22222222-2222-4222-8222-222222222222", stdout: "vm-1\n\n"},
		{name: "unknown domain", cmd: base + " start nope", status: 1, stderr: "failed to get domain 'nope'"},
		{name: "unknown virsh command", cmd: base + " undefine vm-0", status: 1, stderr: "unknown command: 'undefine'"},
		{name: "not virsh", cmd: "rm -rf /", status: 127, stderr: "rm: not found"},
		{name: "shell tricks", cmd: base + " list; reboot", status: 2, stderr: "not supported"},
		{name: "edit without editor", cmd: base + " edit vm-0", status: 1, stderr: "EDITOR"},
	}
	wantAfter := map[string]string{"start": "on/off", "reset": "boots=2", "destroy": "off", "set boot hd": "disk"}
	for _, s := range steps {
		out, errOut, status := run(t, c, s.cmd)
		if status != s.status || s.stdout != "" && out != s.stdout || s.stderr != "" && !strings.Contains(errOut, s.stderr) {
			t.Errorf("%s: %q -> status %d, stdout %q, stderr %q; want status %d, stdout %q, stderr with %q",
				s.name, s.cmd, status, out, errOut, s.status, s.stdout, s.stderr)
		}
		if s.after != nil {
			if got := s.after(); got != wantAfter[s.name] {
				t.Errorf("%s: machine is %q after it, want %q", s.name, got, wantAfter[s.name])
			}
		}
	}
}

func TestWrongCredentialsAreRefused(t *testing.T) {
	h := newHost(t)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherSigner, _ := ssh.NewSignerFromKey(other)
	cases := map[string]struct {
		user string
		auth ssh.AuthMethod
		ok   bool
	}{
		"password":               {"admin", ssh.Password("secret"), true},
		"wrong password":         {"admin", ssh.Password("Secret"), false},
		"password of other user": {"stack", ssh.Password("secret"), false},
		"key":                    {"stack", ssh.PublicKeys(h.signer), true},
		"unknown key":            {"stack", ssh.PublicKeys(otherSigner), false},
		"key for other user":     {"admin", ssh.PublicKeys(h.signer), false},
	}
	got, want := map[string]bool{}, map[string]bool{}
	for name, c := range cases {
		cl, err := h.dial(t, c.user, c.auth)
		got[name] = err == nil
		want[name] = c.ok
		if err == nil {
			out, _, status := run(t, cl, base+" list --all --name")
			if status != 0 || !strings.Contains(out, "vm-0") {
				t.Errorf("%s: logged in but list failed: %d %q", name, status, out)
			}
			cl.Close()
		} else if !strings.Contains(err.Error(), "unable to authenticate") {
			t.Errorf("%s: %v, want an authentication failure", name, err)
		}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("logins (-want +got):\n%s", d)
	}
}

func TestSplitPipeline(t *testing.T) {
	got, err := splitPipeline(`EDITOR="sed -i 'x\"y'" virsh edit a | awk -F "'" '{print $2}'| tr -d ':'`)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{`EDITOR=sed -i 'x"y'`, "virsh", "edit", "a"}, {"awk", "-F", "'", "{print $2}"}, {"tr", "-d", ":"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
