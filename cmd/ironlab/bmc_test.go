package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/scenarios/labtest"
)

// vmTier skips when the VM tier's tools are missing, but fails under CI.
func vmTier(t *testing.T) {
	t.Helper()
	labtest.Require(t, "virsh")
	labtest.Require(t, "ipmitool")
	labtest.RequireFunc(t, "libvirtd", "scripts/vm-deps.sh as root (libvirt-daemon-system; starts libvirtd)", func() error {
		if _, err := os.Stat("/run/libvirt/libvirt-sock"); err != nil {
			if _, err := os.Stat("/run/libvirt/virtqemud-sock"); err != nil {
				return errors.New("no socket in /run/libvirt")
			}
		}
		return nil
	})
}

// TestBMCFrontsExistingDomain defines a plain libvirt domain with virsh (not
// through ironlab), serves `ironlab bmc` for it and drives it with the real
// ipmitool: boot device one-time and persistent, power on/off, and the disk
// boot's marker on the domain's serial log.
func TestBMCFrontsExistingDomain(t *testing.T) {
	vmTier(t)
	dir := t.TempDir()
	for _, p := range []string{filepath.Dir(dir), dir} {
		os.Chmod(p, 0o755) // libvirt's qemu user must reach the disk
	}
	name := fmt.Sprintf("bmctest-%d", os.Getpid())
	disk := filepath.Join(dir, "disk.raw")
	info, err := images.BuildFile(disk, images.Spec{ID: "bmc-test", Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	console := filepath.Join(dir, "console.log")
	xml := fmt.Sprintf(`<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='%s'/><target dev='vda' bus='virtio'/></disk>
    <serial type='file'><source path='%s' append='on'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>`, name, disk, console)
	xmlFile := filepath.Join(dir, "domain.xml")
	os.WriteFile(xmlFile, []byte(xml), 0o644)
	virsh(t, "define", xmlFile)
	t.Cleanup(func() {
		exec.Command("virsh", "-c", "qemu:///system", "destroy", name).Run()
		exec.Command("virsh", "-c", "qemu:///system", "undefine", name).Run()
	})

	port := freeUDPPort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	readyCh := make(chan string, 1)
	go func() {
		done <- serveBMCs(ctx, bmcFile{BMCs: []bmcDomain{{Domain: name, Port: port, Username: "admin", Password: "s3cret"}}},
			func(_ bmcDomain, at string) { readyCh <- at })
	}()
	t.Cleanup(func() {
		cancel()
		if err := labtest.Recv(t, done, "end of serveBMCs"); err != nil {
			t.Errorf("serveBMCs: %v", err)
		}
	})
	select {
	case <-readyCh:
	case err := <-done:
		t.Fatalf("serveBMCs: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("BMC not ready after 20s")
	}
	ipmi := func(args ...string) string {
		t.Helper()
		full := append([]string{"-I", "lanplus", "-H", "127.0.0.1", "-p", fmt.Sprint(port), "-U", "admin", "-P", "s3cret", "-R", "2", "-N", "2"}, args...)
		out, err := exec.Command("ipmitool", full...).CombinedOutput()
		if err != nil {
			t.Fatalf("ipmitool %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	bootDev := func() string {
		t.Helper()
		m := regexp.MustCompile(`<boot dev='(\w+)'/>`).FindStringSubmatch(virsh(t, "dumpxml", "--inactive", name))
		if m == nil {
			return ""
		}
		return m[1]
	}

	if got := ipmi("power", "status"); got != "Chassis Power is off" {
		t.Fatalf("power status = %q", got)
	}
	ipmi("chassis", "bootdev", "pxe")
	if got := bootDev(); got != "network" {
		t.Fatalf("after bootdev pxe the domain boots %q, want network", got)
	}
	ipmi("power", "on")
	waitFor(t, func() bool { return ipmi("power", "status") == "Chassis Power is on" }, "power on")
	// One-time: the definition goes back to the disk for the next start. A
	// BMC answers Chassis Control before the start is done (as real ones
	// do), so this settles a moment after "power on" returns.
	waitFor(t, func() bool { return bootDev() == "hd" }, "the definition back on hd after the one-time pxe boot")
	ipmi("power", "off")
	waitFor(t, func() bool { return ipmi("power", "status") == "Chassis Power is off" }, "power off")

	ipmi("chassis", "bootdev", "disk", "options=persistent")
	if got := bootDev(); got != "hd" {
		t.Fatalf("after bootdev disk the domain boots %q, want hd", got)
	}
	ipmi("power", "on")
	waitFor(t, func() bool {
		b, _ := os.ReadFile(console)
		return strings.Contains(string(b), info.Marker())
	}, "the disk's marker on the serial log")
	ipmi("power", "off")
	waitFor(t, func() bool { return ipmi("power", "status") == "Chassis Power is off" }, "power off")
}

// TestBMCConfigFileErrors checks the command's input errors (no libvirt needed).
func TestBMCConfigFileErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bmcs.yaml")
	os.WriteFile(bad, []byte("bmcs:\n  - {domain: x, prot: 1}\n"), 0o644)
	for name, args := range map[string][]string{
		"no domain":     {},
		"unknown field": {"--config", bad},
		"missing file":  {"--config", bad + ".nope"},
	} {
		t.Run(name, func(t *testing.T) {
			if code := runBMC(args); code != 2 {
				t.Fatalf("runBMC(%v) = %d, want 2", args, code)
			}
		})
	}
}

func virsh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("virsh", append([]string{"-c", "qemu:///system"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("virsh %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
