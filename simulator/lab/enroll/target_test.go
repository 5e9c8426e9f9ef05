package enroll_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/simulator/lab"
	"github.com/ironlab/ironlab/simulator/lab/enroll"
)

// For a real Ironic, nodes enroll with hardware types and interfaces, and
// the deploy_kernel/deploy_ramdisk they name are really served (Ironic
// downloads both before it boots a node); the built-in driver keeps the
// spec's classes.
func TestEnrollmentForIronic(t *testing.T) {
	l := testLab(t, group("fa", 1, lab.BMCNone, ""), group("ip", 1, lab.BMCIPMI, ""))
	if err := l.Images.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ip, _ := l.Node("ip-0")
	e, err := enroll.For(l, ip, enroll.TargetIronic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"power_interface": "ipmitool", "management_interface": "ipmitool", "boot_interface": "pxe", "deploy_interface": "direct",
		"rescue_interface": "agent"}
	if e.Driver != "ipmi" || !cmp.Equal(e.Interfaces, want) {
		t.Errorf("ip-0 enrolls as %s %v, want ipmi %v", e.Driver, e.Interfaces, want)
	}
	if e.DriverInfo["ipmi_port"] != int(ip.BMC.Addr().Port()) || e.Properties["capabilities"] != "boot_mode:uefi" {
		t.Errorf("driver_info %v, properties %v", e.DriverInfo, e.Properties)
	}
	// The agent is the rescue ramdisk too: Ironic's pxe boot wants rescue_kernel/rescue_ramdisk.
	if e.DriverInfo["rescue_kernel"] != e.DriverInfo["deploy_kernel"] || e.DriverInfo["rescue_ramdisk"] != e.DriverInfo["deploy_ramdisk"] {
		t.Errorf("rescue_kernel/rescue_ramdisk %v/%v, want the deploy ramdisk's", e.DriverInfo["rescue_kernel"], e.DriverInfo["rescue_ramdisk"])
	}
	for _, k := range []string{"deploy_kernel", "deploy_ramdisk", "rescue_kernel", "rescue_ramdisk"} {
		url, _ := e.DriverInfo[k].(string)
		resp, err := http.Get(url)
		if err != nil {
			t.Fatalf("%s %q: %v", k, url, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(b) == 0 {
			t.Errorf("GET %s (%s): %d, %d bytes", k, url, resp.StatusCode, len(b))
		}
	}
	body := e.Body()
	if body["boot_interface"] != "pxe" || body["driver"] != "ipmi" || body["uuid"] != ip.UUID {
		t.Errorf("create body %v", body)
	}

	fa, _ := l.Node("fa-0")
	e, err = enroll.For(l, fa, enroll.TargetIronic)
	if err != nil {
		t.Fatal(err)
	}
	if e.Driver != "manual-management" || e.Interfaces["power_interface"] != "fake" || e.Interfaces["management_interface"] != "noop" || e.Interfaces["deploy_interface"] != "direct" || e.DriverInfo["deploy_kernel"] == nil {
		t.Errorf("fa-0 enrolls as %s %v %v, want manual-management with fake power, noop management, direct deploy, a deploy_kernel", e.Driver, e.Interfaces, e.DriverInfo)
	}

	e, err = enroll.For(l, ip, enroll.TargetBuiltin)
	if err != nil || e.Driver != "agent_ipmitool" || len(e.Interfaces) != 0 || e.DriverInfo["deploy_kernel"] != nil {
		t.Errorf("builtin: %s %v %v %v", e.Driver, e.Interfaces, e.DriverInfo, err)
	}
}

// A class a real Ironic has no equivalent for is refused, naming the node.
func TestEnrollmentForIronicRefusesMockPXE(t *testing.T) {
	l := testLab(t, group("ip", 1, lab.BMCIPMI, ""), group("px", 1, "", "pxe_pyghmi"), group("ss", 1, lab.BMCSSH, ""))
	_, err := enroll.All(l, enroll.TargetIronic)
	if err == nil || !strings.Contains(err.Error(), "node px-0") || !strings.Contains(err.Error(), "mock PXE deploy") ||
		!strings.Contains(err.Error(), "node ss-0 (group ss, class agent_ssh): a real Ironic has no equivalent of its ssh BMC") {
		t.Errorf("All(ironic) with pxe_pyghmi and agent_ssh nodes: %v, want an error naming px-0 and the mock PXE deploy, ss-0 and its SSH power", err)
	}
	if _, err := enroll.ParseTarget("openstack"); err == nil {
		t.Error("ParseTarget(openstack) succeeded")
	}
}

// A Redfish group with boot virtual-media enrolls into a real Ironic with
// boot_interface redfish-virtual-media (deploy_kernel and deploy_ramdisk
// still set: Ironic builds its ISO of them); ironlab's driver, which has no
// virtual media boot, refuses it naming the node.
func TestEnrollmentVirtualMedia(t *testing.T) {
	vm := group("vm", 1, lab.BMCRedfish, "")
	vm.Enrollment.Boot = lab.BootVirtualMedia
	l := testLab(t, vm, group("rf", 1, lab.BMCRedfish, ""))
	n, _ := l.Node("vm-0")
	e, err := enroll.For(l, n, enroll.TargetIronic)
	if err != nil {
		t.Fatal(err)
	}
	// Rescue too: redfish-virtual-media builds the rescue ISO of rescue_kernel/rescue_ramdisk.
	want := map[string]string{"power_interface": "redfish", "management_interface": "redfish", "boot_interface": "redfish-virtual-media", "deploy_interface": "direct",
		"rescue_interface": "agent"}
	if e.Driver != "redfish" || !cmp.Equal(e.Interfaces, want) || e.DriverInfo["deploy_kernel"] == nil || e.DriverInfo["redfish_system_id"] != n.Redfish.Path() {
		t.Errorf("vm-0 enrolls as %s %v %v, want redfish %v with deploy_kernel and redfish_system_id", e.Driver, e.Interfaces, e.DriverInfo, want)
	}
	rf, _ := l.Node("rf-0")
	if e, err := enroll.For(l, rf, enroll.TargetIronic); err != nil || e.Interfaces["boot_interface"] != "pxe" {
		t.Errorf("rf-0 (no boot named) enrolls with boot %q (%v), want pxe", e.Interfaces["boot_interface"], err)
	}
	if _, err := enroll.For(l, n, enroll.TargetBuiltin); err == nil || !strings.Contains(err.Error(), "node vm-0") || !strings.Contains(err.Error(), "virtual-media") {
		t.Errorf("vm-0 into the built-in driver: %v, want an error naming the node and virtual-media", err)
	}
	bad := group("ip", 1, lab.BMCIPMI, "")
	bad.Enrollment.Boot = lab.BootVirtualMedia
	if err := enroll.Complete(&bad); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.New(lab.Spec{Name: "t", StateDir: t.TempDir(), Groups: []lab.GroupSpec{bad}}); err == nil || !strings.Contains(err.Error(), "needs a Redfish BMC") {
		t.Errorf("an IPMI group with boot virtual-media: %v, want an error saying it needs a Redfish BMC", err)
	}
}

func TestTargetOfDriverList(t *testing.T) {
	for _, c := range []struct {
		drivers []string
		want    enroll.Target
	}{
		{[]string{"agent_ipmitool", "agent_pyghmi", "fake_agent"}, enroll.TargetBuiltin},
		{[]string{"fake_agent"}, enroll.TargetBuiltin},
		{[]string{"ipmi", "redfish", "fake-hardware", "manual-management"}, enroll.TargetIronic},
		{nil, enroll.TargetIronic},
	} {
		if got := enroll.TargetOf(c.drivers); got != c.want {
			t.Errorf("enroll.TargetOf(%v) = %s, want %s", c.drivers, got, c.want)
		}
	}
}
