package redfish

import (
	"crypto/tls"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/redfish"

	"github.com/ironlab/ironlab/simulator"
)

// gofish (the Go Redfish client our driver uses) with session and Basic
// auth: inventory, reset, boot override, virtual media, BIOS, update.
func TestGofishConformance(t *testing.T) {
	srv := firmwareServer(t, map[string]string{"/bmc-4.bin": "ironlab-firmware 4.0.2\n", "/agent.iso": "CD001 iso"})
	for _, basic := range []bool{false, true} {
		name := "session"
		if basic {
			name = "basic"
		}
		t.Run(name, func(t *testing.T) {
			l := newTestLab(t, 2, Options{TLS: true})
			m := l.machines[0]
			pool := x509NewPool(t, l.svc.CACertPEM())
			c, err := gofish.Connect(gofish.ClientConfig{
				Endpoint: l.svc.URL(), Username: "admin", Password: "password", BasicAuth: basic,
				HTTPClient: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Logout()
			systems, err := c.Service.Systems()
			if err != nil || len(systems) != 2 {
				t.Fatalf("systems: %d, %v", len(systems), err)
			}
			sys, err := redfish.GetComputerSystem(c, l.sysPath(0))
			if err != nil {
				t.Fatal(err)
			}
			if sys.PowerState != redfish.OffPowerState || sys.UUID != m.UUID() || sys.ProcessorSummary.Count != 4 || sys.MemorySummary.TotalSystemMemoryGiB != 8 {
				t.Fatalf("system: power %s uuid %s cpus %d mem %v", sys.PowerState, sys.UUID, sys.ProcessorSummary.Count, sys.MemorySummary.TotalSystemMemoryGiB)
			}
			nics, err := sys.EthernetInterfaces()
			if err != nil {
				t.Fatal(err)
			}
			var macs []string
			for _, n := range nics {
				macs = append(macs, n.MACAddress)
			}
			slices.Sort(macs)
			if !slices.Equal(macs, []string{"52:54:00:00:00:01", "52:54:00:00:00:02"}) {
				t.Fatalf("MACs %v", macs)
			}
			if err := sys.Reset(redfish.OnResetType); err != nil {
				t.Fatal(err)
			}
			if p := power(t, m); p != simulator.PowerOn {
				t.Fatalf("after On: %s", p)
			}
			if err := sys.Reset(redfish.ForceOffResetType); err != nil {
				t.Fatal(err)
			}
			if p := power(t, m); p != simulator.PowerOff {
				t.Fatalf("after ForceOff: %s", p)
			}
			if err := sys.SetBoot(redfish.Boot{BootSourceOverrideTarget: redfish.PxeBootSourceOverrideTarget, BootSourceOverrideEnabled: redfish.OnceBootSourceOverrideEnabled, BootSourceOverrideMode: redfish.UEFIBootSourceOverrideMode}); err != nil {
				t.Fatal(err)
			}
			if bc := bootConfig(t, m); bc != (simulator.BootConfig{Device: simulator.BootNetwork, UEFI: true}) {
				t.Fatalf("after SetBoot Pxe Once: %+v", bc)
			}
			sys, _ = redfish.GetComputerSystem(c, l.sysPath(0))
			if sys.Boot.BootSourceOverrideTarget != redfish.PxeBootSourceOverrideTarget || sys.Boot.BootSourceOverrideEnabled != redfish.OnceBootSourceOverrideEnabled {
				t.Fatalf("boot read back %+v", sys.Boot)
			}

			mgrs, err := sys.ManagedBy()
			if err != nil || len(mgrs) != 1 {
				t.Fatalf("managers %v %v", mgrs, err)
			}
			media, err := mgrs[0].VirtualMedia()
			if err != nil || len(media) != 2 {
				t.Fatalf("virtual media %v %v", media, err)
			}
			i := slices.IndexFunc(media, func(v *redfish.VirtualMedia) bool { return v.ID == "Cd" })
			if i < 0 {
				t.Fatalf("no Cd drive in %v", media)
			}
			cd := media[i]
			if err := cd.InsertMedia(srv+"/agent.iso", true, true); err != nil {
				t.Fatal(err)
			}
			if m.Media() != srv+"/agent.iso" {
				t.Fatalf("after InsertMedia the machine has %q", m.Media())
			}
			if err := cd.EjectMedia(); err != nil {
				t.Fatal(err)
			}
			if m.Media() != "" {
				t.Fatalf("after EjectMedia the machine has %q", m.Media())
			}

			bios, err := sys.Bios()
			if err != nil {
				t.Fatal(err)
			}
			if err := bios.UpdateBiosAttributes(redfish.SettingsAttributes{"HyperThreading": "Disabled"}); err != nil {
				t.Fatal(err)
			}
			if err := sys.Reset(redfish.ForceRestartResetType); err != nil {
				t.Fatal(err)
			}
			if v := m.Hardware().BIOSSettings["HyperThreading"]; v != "Disabled" {
				t.Fatalf("HyperThreading on the machine after reset: %q", v)
			}

			us, err := c.Service.UpdateService()
			if err != nil {
				t.Fatal(err)
			}
			if err := us.SimpleUpdate(&redfish.SimpleUpdateParameters{ImageURI: srv + "/bmc-4.bin", Targets: []string{"/redfish/v1/Managers/" + m.UUID()}}); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the BMC firmware version", func() bool {
				mgr, err := redfish.GetManager(c, "/redfish/v1/Managers/"+m.UUID())
				return err == nil && mgr.FirmwareVersion == "4.0.2"
			})
		})
	}
}
