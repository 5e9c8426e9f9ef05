package libvirtvm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/ironlab/ironlab/images"
)

// ProbeMarker is what the agent ramdisk's /init prints when booted with
// ironlab.probe=1, before it powers off.
const ProbeMarker = "IRONLAB-PROBE-OK"

// resolveAccel settles auto/kvm/tcg. auto uses KVM only when libvirt offers
// it and a short probe boot under it reaches its marker: on nested PVM hosts
// /dev/kvm exists but Linux guests hit emulation failures and get paused.
func resolveAccel(ctx context.Context, f *Fleet) (Accel, string, error) {
	switch f.cfg.Accel {
	case AccelTCG:
		return AccelTCG, "requested", nil
	case AccelKVM, AccelAuto:
	default:
		return "", "", fmt.Errorf("accel %q: want auto, kvm or tcg", f.cfg.Accel)
	}
	has, err := offersKVM(ctx, f.c)
	if err != nil {
		return "", "", err
	}
	if f.cfg.Accel == AccelKVM {
		if !has {
			return "", "", fmt.Errorf("accel kvm: libvirt offers no kvm domain type here (no usable /dev/kvm)")
		}
		return AccelKVM, "requested", nil
	}
	if !has {
		return AccelTCG, "libvirt offers no kvm domain type (no usable /dev/kvm)", nil
	}
	if err := probeKVM(ctx, f); err != nil {
		return AccelTCG, "KVM probe boot failed: " + err.Error(), nil
	}
	return AccelKVM, "KVM probe boot succeeded", nil
}

func offersKVM(ctx context.Context, c *Conn) (bool, error) {
	raw, err := callT(ctx, c, "read libvirt capabilities", c.lv.ConnectGetCapabilities)
	if err != nil {
		return false, err
	}
	var caps libvirtxml.Caps
	if err := caps.Unmarshal(raw); err != nil {
		return false, fmt.Errorf("parse libvirt capabilities: %w", err)
	}
	for _, g := range caps.Guests {
		if g.Arch.Name != "x86_64" {
			continue
		}
		for _, d := range g.Arch.Domains {
			if d.Type == "kvm" {
				return true, nil
			}
		}
	}
	return false, nil
}

// probeKVM boots a transient KVM domain: the agent ramdisk with
// ironlab.probe=1 when the fleet has it (what really runs), else a test disk
// image whose boot sector prints its marker.
func probeKVM(ctx context.Context, f *Fleet) error {
	dir := f.cfg.StateDir
	console := filepath.Join(dir, ".kvm-probe.console.log")
	disk := filepath.Join(dir, ".kvm-probe.raw")
	defer os.Remove(console)
	defer os.Remove(disk)
	defer os.Remove(disk + ".sums")
	info, err := images.BuildFile(disk, images.Spec{ID: "kvm-probe", Size: 1 << 20})
	if err != nil {
		return err
	}
	want := info.Marker()
	name := DomainPrefix + f.cfg.Lab + "-kvm-probe"
	d := newDomain(domainSpec{
		Name: name, Meta: nodeMeta{Lab: f.cfg.Lab, Node: "kvm-probe", PID: os.Getpid()},
		Accel: AccelKVM, MemoryMiB: 128, Disk: disk, Console: console, MAC: "52:54:00:00:00:01", HostPort: 0,
	})
	sel := bootSelection{device: "hd", managed: true}
	if f.cfg.ProbeKernel != "" {
		sel.kernel, sel.initrd = f.cfg.ProbeKernel, f.cfg.ProbeInitrd
		sel.cmdline = "console=ttyS0 quiet panic=-1 ironlab.probe=1"
		want = ProbeMarker
	}
	applyBoot(d, sel)
	x, err := d.Marshal()
	if err != nil {
		return err
	}
	dom, err := callT(ctx, f.c, "start KVM probe domain", func() (libvirt.Domain, error) { return f.c.lv.DomainCreateXML(x, 0) })
	if err != nil {
		return err
	}
	defer call(context.Background(), f.c, "destroy KVM probe domain", func() error { return f.c.lv.DomainDestroy(dom) })
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(console); strings.Contains(string(b), want) {
			return nil
		}
		st, err := callT(ctx, f.c, "probe state", func() (int32, error) {
			s, _, err := f.c.lv.DomainGetState(dom, 0)
			return s, err
		})
		if err != nil && !isNotFound(err) {
			return err
		}
		if libvirt.DomainState(st) == libvirt.DomainPaused {
			return fmt.Errorf("guest paused (KVM emulation failure)")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("no %q on the probe's console within 30s", want)
}
