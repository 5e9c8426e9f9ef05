package redfish

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bmc"
	"github.com/ironlab/ironlab/simulator/fake"
)

func TestServiceRootIsPublicAndResourcesNeedCredentials(t *testing.T) {
	l := newTestLab(t, 1, Options{})
	l.user = ""
	root := l.must(t, 200, "GET", "/redfish/v1/", nil)
	if root.body["@odata.id"] != "/redfish/v1/" || root.body["Systems"].(map[string]any)["@odata.id"] != "/redfish/v1/Systems" {
		t.Fatalf("service root %v", root.body)
	}
	a := l.must(t, 401, "GET", "/redfish/v1/Systems", nil)
	if a.messageID() != "Base.1.8.NoValidSession" || !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("no credentials: %s %v", a.messageID(), a.header)
	}
	l.user, l.pass = "admin", "wrong"
	if a := l.must(t, 401, "GET", "/redfish/v1/Systems", nil); a.messageID() != "Base.1.8.ResourceAtUriUnauthorized" {
		t.Fatalf("wrong password: %s", a.messageID())
	}
	l.pass = "password"
	sys := l.must(t, 200, "GET", "/redfish/v1/Systems", nil)
	if sys.body["Members@odata.count"] != float64(1) {
		t.Fatalf("systems %v", sys.body)
	}
	// Trailing slashes name the same resource.
	l.must(t, 200, "GET", "/redfish/v1/Systems/", nil)
	l.must(t, 404, "GET", "/redfish/v1/Systems/nope", nil)
	if a := l.must(t, 405, "DELETE", l.sysPath(0), nil); a.messageID() != "Base.1.8.OperationNotAllowed" {
		t.Fatalf("DELETE system: %s", a.messageID())
	}
}

func TestSessionLoginTokenAndLogout(t *testing.T) {
	l := newTestLab(t, 1, Options{})
	l.user = ""
	l.must(t, 401, "POST", sessionsPath, map[string]any{"UserName": "admin", "Password": "nope"})
	a := l.must(t, 201, "POST", sessionsPath, map[string]any{"UserName": "admin", "Password": "password"})
	tok, loc := a.header.Get("X-Auth-Token"), a.header.Get("Location")
	if tok == "" || !strings.HasPrefix(loc, sessionsPath+"/") {
		t.Fatalf("login: token %q location %q", tok, loc)
	}
	l.must(t, 200, "GET", l.sysPath(0), nil, "X-Auth-Token", tok)
	l.must(t, 204, "DELETE", loc, nil, "X-Auth-Token", tok)
	l.must(t, 401, "GET", l.sysPath(0), nil, "X-Auth-Token", tok)
}

func TestSystemShowsTheMachine(t *testing.T) {
	l := newTestLab(t, 2, Options{})
	a := l.must(t, 200, "GET", l.sysPath(1), nil)
	if a.header.Get("ETag") == "" {
		t.Fatal("GET system: no ETag")
	}
	got := map[string]any{
		"PowerState": a.body["PowerState"], "UUID": a.body["UUID"], "BiosVersion": a.body["BiosVersion"],
		"Proc": a.body["ProcessorSummary"].(map[string]any)["Count"],
		"Mem":  a.body["MemorySummary"].(map[string]any)["TotalSystemMemoryGiB"],
	}
	want := map[string]any{"PowerState": "Off", "UUID": l.machines[1].UUID(), "BiosVersion": "1.0.0", "Proc": float64(4), "Mem": float64(8)}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("system (-want +got):\n%s", d)
	}
	var macs []string
	nics := l.must(t, 200, "GET", l.sysPath(1)+"/EthernetInterfaces", nil)
	for _, m := range nics.body["Members"].([]any) {
		nic := l.must(t, 200, "GET", m.(map[string]any)["@odata.id"].(string), nil)
		macs = append(macs, nic.body["MACAddress"].(string))
	}
	if d := cmp.Diff([]string{"52:54:00:00:01:01", "52:54:00:00:01:02"}, macs); d != "" {
		t.Fatalf("MACs (-want +got):\n%s", d)
	}
	ss := l.must(t, 200, "GET", l.sysPath(1)+"/SimpleStorage/1", nil)
	devs := ss.body["Devices"].([]any)
	if len(devs) != 2 || devs[1].(map[string]any)["CapacityBytes"] != float64(2<<20) {
		t.Fatalf("simple storage %v", devs)
	}
	d := l.must(t, 200, "GET", l.sysPath(1)+"/Storage/1/Drives/1", nil)
	if d.body["MediaType"] != "HDD" || d.body["CapacityBytes"] != float64(2<<20) {
		t.Fatalf("drive %v", d.body)
	}
	p := l.must(t, 200, "GET", l.sysPath(1)+"/Processors/CPU0", nil)
	if p.body["TotalThreads"] != float64(4) || p.body["ProcessorArchitecture"] != "x86" {
		t.Fatalf("processor %v", p.body)
	}
}

func TestResetTypesActOnTheMachine(t *testing.T) {
	l := newTestLab(t, 1, Options{})
	m := l.machines[0]
	reset := func(rt string) {
		l.must(t, 204, "POST", l.sysPath(0)+"/Actions/ComputerSystem.Reset", map[string]any{"ResetType": rt})
	}
	steps := []struct {
		reset string
		power simulator.PowerState
		boots int
	}{
		{"On", simulator.PowerOn, 1},
		{"On", simulator.PowerOn, 1}, // already on: nothing
		{"ForceRestart", simulator.PowerOn, 2},
		{"GracefulRestart", simulator.PowerOn, 3},
		{"PowerCycle", simulator.PowerOn, 4},
		{"Nmi", simulator.PowerOn, 4},
		{"GracefulShutdown", simulator.PowerOff, 4},
		{"PushPowerButton", simulator.PowerOn, 5},
		{"PushPowerButton", simulator.PowerOff, 5},
		{"ForceOn", simulator.PowerOn, 6},
		{"ForceOff", simulator.PowerOff, 6},
		{"ForceRestart", simulator.PowerOn, 7}, // off: restart powers on
	}
	for _, s := range steps {
		reset(s.reset)
		if p := power(t, m); p != s.power || m.Boots() != s.boots {
			t.Fatalf("after %s: power %s boots %d, want %s %d", s.reset, p, m.Boots(), s.power, s.boots)
		}
		if got := l.must(t, 200, "GET", l.sysPath(0), nil).body["PowerState"]; got != powerName(s.power) {
			t.Fatalf("after %s: PowerState %v", s.reset, got)
		}
	}
	if log, _ := m.ConsoleLog(); !strings.Contains(log, "NMI received") {
		t.Fatalf("console has no NMI: %q", log)
	}
}

func TestBootOverrideOnceRevertsAfterBoot(t *testing.T) {
	l := newTestLab(t, 1, Options{})
	m := l.machines[0]
	boot := func() map[string]any { return l.must(t, 200, "GET", l.sysPath(0), nil).body["Boot"].(map[string]any) }
	b := boot()
	if b["BootSourceOverrideEnabled"] != "Disabled" || b["BootSourceOverrideTarget"] != "None" {
		t.Fatalf("initial boot %v", b)
	}
	l.must(t, 204, "PATCH", l.sysPath(0), map[string]any{"Boot": map[string]any{
		"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "UEFI"}})
	if bc := bootConfig(t, m); bc != (simulator.BootConfig{Device: simulator.BootNetwork, Persistent: false, UEFI: true}) {
		t.Fatalf("machine boot config %+v", bc)
	}
	if b := boot(); b["BootSourceOverrideTarget"] != "Pxe" || b["BootSourceOverrideEnabled"] != "Once" || b["BootSourceOverrideMode"] != "UEFI" {
		t.Fatalf("boot after PATCH %v", b)
	}
	l.must(t, 204, "POST", l.sysPath(0)+"/Actions/ComputerSystem.Reset", map[string]any{"ResetType": "On"})
	eventually(t, "the network boot to run", func() bool { return l.agent.boots.Load() == 1 })
	if b := boot(); b["BootSourceOverrideEnabled"] != "Disabled" {
		t.Fatalf("Once did not revert after the boot: %v", b)
	}
	if bc := bootConfig(t, m); bc.Device != simulator.BootDisk || !bc.Persistent {
		t.Fatalf("machine after the one-time boot %+v", bc)
	}
	// Continuous stays.
	l.must(t, 204, "PATCH", l.sysPath(0), map[string]any{"Boot": map[string]any{
		"BootSourceOverrideTarget": "BiosSetup", "BootSourceOverrideEnabled": "Continuous"}})
	l.must(t, 204, "POST", l.sysPath(0)+"/Actions/ComputerSystem.Reset", map[string]any{"ResetType": "ForceRestart"})
	if b := boot(); b["BootSourceOverrideTarget"] != "BiosSetup" || b["BootSourceOverrideEnabled"] != "Continuous" {
		t.Fatalf("Continuous after a boot %v", b)
	}
	if log, _ := m.ConsoleLog(); !strings.Contains(log, "firmware setup") {
		t.Fatalf("console %q", log)
	}
}

// Bad input gets a 4xx in the Redfish error shape and changes nothing.
func TestBadInputChangesNothing(t *testing.T) {
	l := newTestLab(t, 1, Options{})
	sys := l.sysPath(0)
	cases := []struct {
		name, method, path string
		body               any
		hdr                []string
		status             int
		msg                string
	}{
		{"malformed json", "PATCH", sys, `{"Boot": {`, nil, 400, "MalformedJSON"},
		{"not an object", "PATCH", sys, `[1,2]`, nil, 400, "MalformedJSON"},
		{"null body", "PATCH", sys, `null`, nil, 400, "MalformedJSON"},
		{"two objects", "PATCH", sys, `{} {}`, nil, 400, "MalformedJSON"},
		{"empty patch body", "PATCH", sys, ``, nil, 400, "MalformedJSON"},
		{"unknown property", "PATCH", sys, map[string]any{"AssetTag": "x"}, nil, 400, "PropertyUnknown"},
		{"unknown boot property", "PATCH", sys, map[string]any{"Boot": map[string]any{"Foo": 1}}, nil, 400, "PropertyUnknown"},
		{"boot not an object", "PATCH", sys, map[string]any{"Boot": "Pxe"}, nil, 400, "PropertyValueTypeError"},
		{"target wrong type", "PATCH", sys, map[string]any{"Boot": map[string]any{"BootSourceOverrideTarget": 3}}, nil, 400, "PropertyValueTypeError"},
		{"target not allowed", "PATCH", sys, map[string]any{"Boot": map[string]any{"BootSourceOverrideTarget": "Floppy"}}, nil, 400, "PropertyValueNotInList"},
		{"valid then invalid", "PATCH", sys, map[string]any{"Boot": map[string]any{"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideMode": "Bogus"}}, nil, 400, "PropertyValueNotInList"},
		{"uefihttp legacy", "PATCH", sys, map[string]any{"Boot": map[string]any{"BootSourceOverrideTarget": "UefiHttp", "BootSourceOverrideMode": "Legacy"}}, nil, 400, "PropertyValueConflict"},
		{"wrong etag", "PATCH", sys, map[string]any{"Boot": map[string]any{"BootSourceOverrideTarget": "Pxe"}}, []string{"If-Match", `"0000"`}, 412, "PreconditionFailed"},
		{"reset type missing", "POST", sys + "/Actions/ComputerSystem.Reset", map[string]any{}, nil, 400, "ActionParameterMissing"},
		{"reset type unknown", "POST", sys + "/Actions/ComputerSystem.Reset", map[string]any{"ResetType": "Explode"}, nil, 400, "ActionParameterValueNotInList"},
		{"reset type wrong type", "POST", sys + "/Actions/ComputerSystem.Reset", map[string]any{"ResetType": true}, nil, 400, "ActionParameterValueFormatError"},
		{"reset type not allowed", "POST", sys + "/Actions/ComputerSystem.Reset", map[string]any{"ResetType": "Suspend"}, nil, 400, "ActionParameterValueNotInList"},
		{"reset type null", "POST", sys + "/Actions/ComputerSystem.Reset", map[string]any{"ResetType": nil}, nil, 400, "ActionParameterValueNotInList"},
		{"reset malformed json", "POST", sys + "/Actions/ComputerSystem.Reset", `{"ResetType": "On"`, nil, 400, "MalformedJSON"},
		{"reset extra parameter", "POST", sys + "/Actions/ComputerSystem.Reset", map[string]any{"ResetType": "On", "Force": true}, nil, 400, "ActionParameterNotSupported"},
		{"nmi while off", "POST", sys + "/Actions/ComputerSystem.Reset", map[string]any{"ResetType": "Nmi"}, nil, 409, "ActionNotSupported"},
		{"bios unknown attribute", "PATCH", sys + "/Bios/Settings", map[string]any{"Attributes": map[string]any{"NoSuch": "x"}}, nil, 400, "PropertyUnknown"},
		{"bios wrong type", "PATCH", sys + "/Bios/Settings", map[string]any{"Attributes": map[string]any{"PxeRetry": "yes"}}, nil, 400, "PropertyValueTypeError"},
		{"secure boot wrong type", "PATCH", sys + "/SecureBoot", map[string]any{"SecureBootEnable": "yes"}, nil, 400, "PropertyValueTypeError"},
		{"insert no image", "POST", "/redfish/v1/Managers/" + l.machines[0].UUID() + "/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia", map[string]any{}, nil, 400, "ActionParameterMissing"},
		{"insert ftp image", "POST", "/redfish/v1/Managers/" + l.machines[0].UUID() + "/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia", map[string]any{"Image": "ftp://127.0.0.1/x.iso"}, nil, 400, "ActionParameterValueFormatError"},
		{"insert remote image", "POST", "/redfish/v1/Managers/" + l.machines[0].UUID() + "/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia", map[string]any{"Image": "http://192.0.2.1/x.iso"}, nil, 400, "ActionParameterValueFormatError"},
		{"insert image wrong type", "POST", "/redfish/v1/Managers/" + l.machines[0].UUID() + "/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia", map[string]any{"Image": 3}, nil, 400, "ActionParameterValueFormatError"},
		{"insert unknown parameter", "POST", "/redfish/v1/Managers/" + l.machines[0].UUID() + "/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia", map[string]any{"Image": "http://127.0.0.1/x.iso", "Bogus": 1}, nil, 400, "ActionParameterNotSupported"},
		{"media patch wrong type", "PATCH", "/redfish/v1/Managers/" + l.machines[0].UUID() + "/VirtualMedia/Cd", map[string]any{"Image": 3}, nil, 400, "PropertyValueTypeError"},
		{"media patch unknown property", "PATCH", "/redfish/v1/Managers/" + l.machines[0].UUID() + "/VirtualMedia/Cd", map[string]any{"Foo": 3}, nil, 400, "PropertyUnknown"},
		{"media patch wrong etag", "PATCH", "/redfish/v1/Managers/" + l.machines[0].UUID() + "/VirtualMedia/Cd", map[string]any{"Image": "http://127.0.0.1/x.iso"}, []string{"If-Match", `"0000"`}, 412, "PreconditionFailed"},
		{"bios wrong etag", "PATCH", sys + "/Bios/Settings", map[string]any{"Attributes": map[string]any{"PxeRetry": 3}}, []string{"If-Match", `"0000"`}, 412, "PreconditionFailed"},
		{"secure boot wrong etag", "PATCH", sys + "/SecureBoot", map[string]any{"SecureBootEnable": true}, []string{"If-Match", `"0000"`}, 412, "PreconditionFailed"},
		{"login wrong type", "POST", sessionsPath, map[string]any{"UserName": 1, "Password": "p"}, nil, 400, "PropertyValueTypeError"},
		{"delete a system", "DELETE", sys, nil, nil, 405, "OperationNotAllowed"},
		{"no such drive", "GET", "/redfish/v1/Managers/" + l.machines[0].UUID() + "/VirtualMedia/Usb", nil, nil, 404, "ResourceMissingAtURI"},
		{"update no uri", "POST", "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate", map[string]any{}, nil, 400, "ActionParameterMissing"},
		{"update bad target", "POST", "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate", map[string]any{"ImageURI": "http://127.0.0.1/fw", "Targets": []string{"/redfish/v1/Systems/x"}}, nil, 400, "ActionParameterValueNotInList"},
		{"update from a host off loopback", "POST", "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate", map[string]any{"ImageURI": "http://192.0.2.10/fw.bin", "Targets": []string{"/redfish/v1/Managers/" + l.machines[0].UUID()}}, nil, 400, "ActionParameterValueError"},
		{"huge body", "PATCH", sys, `{"Boot": "` + strings.Repeat("x", maxBody) + `"}`, nil, 413, "GeneralError"},
	}
	snapshot := func() string {
		var parts []string
		for _, p := range []string{sys, sys + "/Bios", sys + "/Bios/Settings", sys + "/SecureBoot", "/redfish/v1/Managers/" + l.machines[0].UUID() + "/VirtualMedia/Cd"} {
			b, _ := json.Marshal(l.must(t, 200, "GET", p, nil).body)
			parts = append(parts, string(b))
		}
		bc := bootConfig(t, l.machines[0])
		b, _ := json.Marshal(bc)
		return strings.Join(append(parts, string(b), string(power(t, l.machines[0])), l.machines[0].Media()), "\n")
	}
	before := snapshot()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := l.do(t, c.method, c.path, c.body, c.hdr...)
			if a.status != c.status || a.messageID() != baseRegistry+c.msg {
				t.Fatalf("status %d message %q, want %d %s; body %v", a.status, a.messageID(), c.status, c.msg, a.body)
			}
			if after := snapshot(); after != before {
				t.Fatalf("state changed:\n%s\n---\n%s", before, after)
			}
		})
	}
}

func TestETagGuardsPatch(t *testing.T) {
	l := newTestLab(t, 1, Options{})
	etag := l.must(t, 200, "GET", l.sysPath(0), nil).header.Get("ETag")
	patch := map[string]any{"Boot": map[string]any{"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Continuous"}}
	l.must(t, 204, "PATCH", l.sysPath(0), patch, "If-Match", etag)
	// The state changed, so the old tag no longer matches.
	l.must(t, 412, "PATCH", l.sysPath(0), patch, "If-Match", etag)
	// The strong form of the current tag matches too (sushy retries with it).
	cur := l.must(t, 200, "GET", l.sysPath(0), nil).header.Get("ETag")
	l.must(t, 204, "PATCH", l.sysPath(0), patch, "If-Match", strings.TrimPrefix(cur, "W/"))
}

func TestBiosSettingsApplyOnReset(t *testing.T) {
	l := newTestLab(t, 1, Options{})
	m := l.machines[0]
	l.must(t, 204, "PATCH", l.sysPath(0)+"/Bios/Settings", map[string]any{"Attributes": map[string]any{"vt": "off", "PxeRetry": false}})
	if p := l.must(t, 200, "GET", l.sysPath(0)+"/Bios/Settings", nil).body["Attributes"]; !cmp.Equal(p, map[string]any{"vt": "off", "PxeRetry": false}) {
		t.Fatalf("pending %v", p)
	}
	if cur := l.must(t, 200, "GET", l.sysPath(0)+"/Bios", nil).body["Attributes"].(map[string]any); cur["vt"] != "on" {
		t.Fatalf("applied before the reset: %v", cur)
	}
	l.must(t, 204, "POST", l.sysPath(0)+"/Actions/ComputerSystem.Reset", map[string]any{"ResetType": "On"})
	cur := l.must(t, 200, "GET", l.sysPath(0)+"/Bios", nil).body["Attributes"].(map[string]any)
	if cur["vt"] != "off" || cur["PxeRetry"] != false {
		t.Fatalf("after reset %v", cur)
	}
	if hw := m.Hardware(); hw.BIOSSettings["vt"] != "off" || hw.BIOSSettings["PxeRetry"] != "false" {
		t.Fatalf("machine BIOS settings %v", hw.BIOSSettings)
	}
	l.must(t, 204, "POST", l.sysPath(0)+"/Bios/Actions/Bios.ResetBios", nil)
	l.must(t, 204, "POST", l.sysPath(0)+"/Actions/ComputerSystem.Reset", map[string]any{"ResetType": "ForceRestart"})
	if hw := m.Hardware(); hw.BIOSSettings["vt"] != "on" {
		t.Fatalf("after ResetBios and a reset: %v", hw.BIOSSettings)
	}
}

func TestVirtualMediaBoot(t *testing.T) {
	img := firmwareServer(t, map[string]string{"/agent.iso": "CD001 pretend ISO"})
	l := newTestLab(t, 1, Options{})
	m := l.machines[0]
	cd := "/redfish/v1/Managers/" + m.UUID() + "/VirtualMedia/Cd"
	l.must(t, 204, "POST", cd+"/Actions/VirtualMedia.InsertMedia", map[string]any{"Image": img + "/agent.iso", "Inserted": true, "WriteProtected": true})
	v := l.must(t, 200, "GET", cd, nil).body
	if v["Inserted"] != true || v["Image"] != img+"/agent.iso" || v["ImageName"] != "agent.iso" || m.Media() != img+"/agent.iso" {
		t.Fatalf("after insert: %v, machine has %q", v, m.Media())
	}
	// The system tree shows the same drive.
	if v := l.must(t, 200, "GET", l.sysPath(0)+"/VirtualMedia/Cd", nil).body; v["Image"] != img+"/agent.iso" {
		t.Fatalf("system's view %v", v)
	}
	l.must(t, 204, "PATCH", l.sysPath(0), map[string]any{"Boot": map[string]any{"BootSourceOverrideTarget": "Cd", "BootSourceOverrideEnabled": "Once"}})
	l.must(t, 204, "POST", l.sysPath(0)+"/Actions/ComputerSystem.Reset", map[string]any{"ResetType": "On"})
	eventually(t, "the CD's system to run", func() bool { return l.agent.boots.Load() == 1 })
	if log, _ := m.ConsoleLog(); !strings.Contains(log, "virtual CD: booting "+img+"/agent.iso (17 bytes") {
		t.Fatalf("console %q", log)
	}

	// A CD whose URL is gone fails the boot, on the console.
	l.must(t, 204, "PATCH", cd, map[string]any{"Image": img + "/gone.iso", "Inserted": true})
	l.must(t, 204, "PATCH", l.sysPath(0), map[string]any{"Boot": map[string]any{"BootSourceOverrideTarget": "Cd", "BootSourceOverrideEnabled": "Once"}})
	l.must(t, 204, "POST", l.sysPath(0)+"/Actions/ComputerSystem.Reset", map[string]any{"ResetType": "ForceRestart"})
	eventually(t, "the failed CD boot on the console", func() bool {
		log, _ := m.ConsoleLog()
		return strings.Contains(log, "boot failed: virtual CD "+img+"/gone.iso: fetch: HTTP 404")
	})
	if n := l.agent.boots.Load(); n != 1 {
		t.Fatalf("a failed CD boot ran the agent: %d boots", n)
	}
	l.must(t, 204, "POST", cd+"/Actions/VirtualMedia.EjectMedia", nil)
	if v := l.must(t, 200, "GET", cd, nil).body; v["Inserted"] != false || v["Image"] != nil || m.Media() != "" {
		t.Fatalf("after eject %v, machine has %q", v, m.Media())
	}
}

func TestSimpleUpdateChangesFirmwareVersion(t *testing.T) {
	fw := firmwareServer(t, map[string]string{"/bios-2.1.bin": "ironlab-firmware 2.1.0\nbinary...", "/junk.bin": "MZ\x90\x00"})
	l := newTestLab(t, 2, Options{})
	m := l.machines[1]
	update := func(image, target string) map[string]any {
		a := l.must(t, 202, "POST", "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
			map[string]any{"ImageURI": fw + image, "TransferProtocol": "HTTP", "Targets": []string{target}})
		mon := a.header.Get("Location")
		var task map[string]any
		eventually(t, "the update task to end", func() bool {
			r := l.do(t, "GET", mon, nil)
			task = r.body
			return r.status == 200
		})
		return task
	}
	if task := update("/bios-2.1.bin", l.sysPath(1)); task["TaskState"] != "Completed" {
		t.Fatalf("task %v", task)
	}
	if v := l.must(t, 200, "GET", l.sysPath(1), nil).body["BiosVersion"]; v != "2.1.0" || m.Hardware().BIOSVersion != "2.1.0" {
		t.Fatalf("BiosVersion %v, machine %q", v, m.Hardware().BIOSVersion)
	}
	if v := l.must(t, 200, "GET", "/redfish/v1/UpdateService/FirmwareInventory/BIOS-"+m.UUID(), nil).body["Version"]; v != "2.1.0" {
		t.Fatalf("inventory version %v", v)
	}
	if v := l.must(t, 200, "GET", l.sysPath(0), nil).body["BiosVersion"]; v != "1.0.0" {
		t.Fatalf("the other system changed: %v", v)
	}
	if task := update("/bios-2.1.bin", "/redfish/v1/Managers/"+m.UUID()); task["TaskState"] != "Completed" {
		t.Fatalf("BMC task %v", task)
	}
	if v := l.must(t, 200, "GET", "/redfish/v1/Managers/"+m.UUID(), nil).body["FirmwareVersion"]; v != "2.1.0" {
		t.Fatalf("BMC FirmwareVersion %v", v)
	}
	for _, bad := range []string{"/junk.bin", "/missing.bin"} {
		if task := update(bad, l.sysPath(0)); task["TaskState"] != "Exception" {
			t.Fatalf("update with %s: %v", bad, task)
		}
	}
	if v := l.machines[0].Hardware().BIOSVersion; v != "1.0.0" {
		t.Fatalf("failed updates changed the version to %q", v)
	}
	// More than one system and no Targets: the service cannot guess.
	l.must(t, 400, "POST", "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate", map[string]any{"ImageURI": fw + "/bios-2.1.bin"})
}

func TestFaults(t *testing.T) {
	fw := firmwareServer(t, map[string]string{"/fw.bin": "ironlab-firmware 9.9\n", "/a.iso": "iso"})
	l := newTestLab(t, 2, Options{})
	sys0, _ := l.svc.System(l.machines[0].UUID()), 0
	t.Run("server error count", func(t *testing.T) {
		if err := sys0.SetFaults(Faults{ServerError: 503, ServerErrorCount: 2}); err != nil {
			t.Fatal(err)
		}
		defer sys0.SetFaults(Faults{})
		for range 2 {
			if a := l.must(t, 503, "POST", l.sysPath(0)+"/Actions/ComputerSystem.Reset", map[string]any{"ResetType": "On"}); a.messageID() != "Base.1.8.InternalError" {
				t.Fatalf("5xx body %v", a.body)
			}
		}
		if p := power(t, l.machines[0]); p != simulator.PowerOff {
			t.Fatalf("a failed reset changed the power: %s", p)
		}
		l.must(t, 200, "GET", l.sysPath(1), nil) // other systems are fine
		l.must(t, 200, "GET", l.sysPath(0), nil) // and the count ran out
	})
	t.Run("refuse credentials", func(t *testing.T) {
		sys0.SetFaults(Faults{RefuseCredentials: true})
		defer sys0.SetFaults(Faults{})
		l.must(t, 401, "GET", l.sysPath(0), nil)
		l.must(t, 200, "GET", l.sysPath(1), nil)
		l.svc.SetFaults(Faults{RefuseCredentials: true})
		defer l.svc.SetFaults(Faults{})
		l.user = ""
		defer func() { l.user = "admin" }()
		l.must(t, 401, "POST", sessionsPath, map[string]any{"UserName": "admin", "Password": "password"})
	})
	t.Run("power late", func(t *testing.T) {
		sys0.SetFaults(Faults{PowerLate: bmc.Duration(300 * time.Millisecond)})
		defer sys0.SetFaults(Faults{})
		l.must(t, 204, "POST", l.sysPath(0)+"/Actions/ComputerSystem.Reset", map[string]any{"ResetType": "On"})
		if p := power(t, l.machines[0]); p != simulator.PowerOff {
			t.Fatalf("late power change applied at once: %s", p)
		}
		eventually(t, "the late power on", func() bool { return power(t, l.machines[0]) == simulator.PowerOn })
	})
	t.Run("insert media fail", func(t *testing.T) {
		sys0.SetFaults(Faults{InsertMediaFail: true})
		defer sys0.SetFaults(Faults{})
		cd := "/redfish/v1/Managers/" + l.machines[0].UUID() + "/VirtualMedia/Cd"
		l.must(t, 500, "POST", cd+"/Actions/VirtualMedia.InsertMedia", map[string]any{"Image": fw + "/a.iso"})
		l.must(t, 500, "PATCH", cd, map[string]any{"Image": fw + "/a.iso", "Inserted": true})
		if v := l.must(t, 200, "GET", cd, nil).body; v["Inserted"] != false || l.machines[0].Media() != "" {
			t.Fatalf("failed insert left %v / %q", v, l.machines[0].Media())
		}
	})
	t.Run("failing task", func(t *testing.T) {
		sys0.SetFaults(Faults{FailTasks: true})
		defer sys0.SetFaults(Faults{})
		a := l.must(t, 202, "POST", "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
			map[string]any{"ImageURI": fw + "/fw.bin", "Targets": []string{l.sysPath(0)}})
		var task map[string]any
		eventually(t, "the task to end", func() bool {
			r := l.do(t, "GET", a.header.Get("Location"), nil)
			task = r.body
			return r.status == 200
		})
		if task["TaskState"] != "Exception" || l.machines[0].Hardware().BIOSVersion != "1.0.0" {
			t.Fatalf("task %v, version %q", task, l.machines[0].Hardware().BIOSVersion)
		}
	})
	t.Run("delay", func(t *testing.T) {
		const d = 150 * time.Millisecond
		sys0.SetFaults(Faults{Delay: bmc.Duration(d)})
		defer sys0.SetFaults(Faults{})
		for _, p := range []string{l.sysPath(0), "/redfish/v1/Managers/" + l.machines[0].UUID() + "/VirtualMedia/Cd"} {
			t0 := time.Now()
			l.must(t, 200, "GET", p, nil) // late, and still right
			if took := time.Since(t0); took < d {
				t.Errorf("GET %s with a %v delay answered in %v", p, d, took)
			}
		}
		t0 := time.Now()
		l.must(t, 204, "POST", l.sysPath(0)+"/Actions/ComputerSystem.Reset", map[string]any{"ResetType": "On"})
		if took := time.Since(t0); took < d {
			t.Errorf("a reset with a %v delay answered in %v", d, took)
		}
		if p := power(t, l.machines[0]); p != simulator.PowerOn {
			t.Errorf("a delayed reset did not power on: %s", p)
		}
		l.must(t, 204, "POST", l.sysPath(0)+"/Actions/ComputerSystem.Reset", map[string]any{"ResetType": "ForceOff"})
		// The service's own delay holds every answer, the public root too.
		sys0.SetFaults(Faults{})
		l.svc.SetFaults(Faults{Delay: bmc.Duration(d)})
		defer l.svc.SetFaults(Faults{})
		for _, p := range []string{"/redfish/v1/", l.sysPath(1)} {
			t0 := time.Now()
			l.must(t, 200, "GET", p, nil)
			if took := time.Since(t0); took < d {
				t.Errorf("GET %s with the service's %v delay answered in %v", p, d, took)
			}
		}
	})
	t.Run("bad fault", func(t *testing.T) {
		if err := sys0.SetFaults(Faults{ServerError: 404}); err == nil {
			t.Fatal("a 404 server error fault was accepted")
		}
	})
}

func TestHTTPSWithSelfSignedCertificate(t *testing.T) {
	l := newTestLab(t, 1, Options{TLS: true})
	if !strings.HasPrefix(l.svc.URL(), "https://127.0.0.1:") {
		t.Fatalf("URL %s", l.svc.URL())
	}
	pool := x509NewPool(t, l.svc.CACertPEM())
	l.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig(pool)}}
	l.must(t, 200, "GET", l.sysPath(0), nil)
	// Without the CA, verification fails.
	req, _ := http.NewRequest("GET", l.svc.URL()+"/redfish/v1/", nil)
	if _, err := (&http.Client{Timeout: 10 * time.Second}).Do(req); err == nil {
		t.Fatal("an unverified client reached the https service")
	}
}

func TestListenRefusesNonLoopback(t *testing.T) {
	svc, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if err := svc.Start("0.0.0.0:0"); err == nil {
		t.Fatal("listened on 0.0.0.0")
	}
}

// noSetupMachine boots neither firmware setup nor a CD, as a foreign
// libvirt domain (simulator.BootDeviceSupport).
type noSetupMachine struct{ *fake.Machine }

func (noSetupMachine) SupportsBootDevice(d simulator.BootDevice) bool {
	return d == simulator.BootNetwork || d == simulator.BootDisk
}

// A machine that cannot boot a target is not offered it: the allowable
// values leave it out and a PATCH of it is a 400 that changes nothing,
// never the 500 of a machine refusing what its BMC allowed.
func TestBootTargetsFollowTheMachine(t *testing.T) {
	svc, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	fm, err := fake.New(fake.Options{Name: "vm-0", UUID: "8d4c2b1a-0000-4000-8000-0000000000aa", Hardware: testHardware(t.TempDir(), 0)})
	if err != nil {
		t.Fatal(err)
	}
	defer fm.Close()
	sys, err := svc.Add(noSetupMachine{fm})
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, body string) (int, map[string]any) {
		r := httptest.NewRequest(method, sys.Path(), strings.NewReader(body))
		r.SetBasicAuth("admin", "password")
		w := httptest.NewRecorder()
		svc.ServeHTTP(w, r)
		var out map[string]any
		json.Unmarshal(w.Body.Bytes(), &out)
		return w.Code, out
	}
	code, view := do("GET", "")
	allowed, _ := view["Boot"].(map[string]any)["BootSourceOverrideTarget@Redfish.AllowableValues"].([]any)
	if code != 200 || slices.Contains(allowed, any("BiosSetup")) || slices.Contains(allowed, any("Cd")) || !slices.Contains(allowed, any("Pxe")) {
		t.Fatalf("GET: %d, allowable targets %v", code, allowed)
	}
	before := bootConfig(t, fm)
	for _, target := range []string{"BiosSetup", "Cd"} {
		code, out := do("PATCH", `{"Boot": {"BootSourceOverrideTarget": "`+target+`"}}`)
		if code != 400 || (answer{body: out}).messageID() != baseRegistry+"PropertyValueNotInList" {
			t.Errorf("PATCH %s: %d %v", target, code, out)
		}
	}
	if after := bootConfig(t, fm); after != before {
		t.Errorf("boot config changed from %+v to %+v", before, after)
	}
}
