package ramdisk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The agent ISO is what a Redfish BMC's virtual CD boots: the ramdisk's
// kernel and initramfs behind ISOLINUX (El Torito, no emulation), laid out
// as Ironic's redfish-virtual-media builds it (isolinux/isolinux.bin,
// isolinux/isolinux.cfg with one "append" line carrying the kernel command
// line). Debian's genisoimage writes it, isolinux and syslinux-common
// supply the boot loader.

// ISOLINUX files from Debian's isolinux and syslinux-common packages.
const (
	IsolinuxBin = "/usr/lib/ISOLINUX/isolinux.bin"
	LdlinuxC32  = "/usr/lib/syslinux/modules/bios/ldlinux.c32"
)

// ISOTools says what building an agent ISO lacks on this machine ("" when
// nothing), with the Debian packages that supply it.
func ISOTools() string {
	var missing []string
	if _, err := exec.LookPath("genisoimage"); err != nil {
		missing = append(missing, "genisoimage")
	}
	if _, err := os.Stat(IsolinuxBin); err != nil {
		missing = append(missing, "isolinux")
	}
	if _, err := os.Stat(LdlinuxC32); err != nil {
		missing = append(missing, "syslinux-common")
	}
	if len(missing) == 0 {
		return ""
	}
	return "apt-get install " + strings.Join(missing, " ")
}

// ISOCmdlineFile is where the agent ISO's boot loader configuration is.
const ISOCmdlineFile = "isolinux/isolinux.cfg"

// BuildISO writes a BIOS-bootable ISO 9660 image to out that boots kernel
// (a bzImage) with initrd and cmdline.
func BuildISO(ctx context.Context, kernel, initrd, cmdline, out string) error {
	if why := ISOTools(); why != "" {
		return fmt.Errorf("agent ISO %s: the ISO tools are missing (%s)", out, why)
	}
	if strings.ContainsAny(cmdline, "\n\r") {
		return fmt.Errorf("agent ISO %s: the kernel command line has a line break", out)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".agent-iso-*")
	if err != nil {
		return fmt.Errorf("agent ISO %s: %w", out, err)
	}
	defer os.RemoveAll(tmp)
	boot := filepath.Join(tmp, "isolinux")
	if err := os.Mkdir(boot, 0o755); err != nil {
		return err
	}
	// genisoimage's -boot-info-table patches isolinux.bin where it lies:
	// a copy, never Debian's file.
	for _, f := range []string{IsolinuxBin, LdlinuxC32} {
		if err := copyFile(f, filepath.Join(boot, filepath.Base(f))); err != nil {
			return fmt.Errorf("agent ISO %s: %w", out, err)
		}
	}
	cfg := "default agent\nprompt 0\ntimeout 0\nlabel agent\n  kernel /vmlinuz\n  append initrd=/initrd " + cmdline + "\n"
	if err := os.WriteFile(filepath.Join(boot, "isolinux.cfg"), []byte(cfg), 0o644); err != nil {
		return err
	}
	part := out + ".part"
	cmd := exec.CommandContext(ctx, "genisoimage", "-quiet", "-o", part,
		"-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
		"-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
		"-R", "-J", "-V", "IRONLAB_AGENT",
		"-graft-points", "isolinux/="+boot, "vmlinuz="+kernel, "initrd="+initrd)
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(part)
		return fmt.Errorf("agent ISO %s: genisoimage: %w: %s", out, err, strings.TrimSpace(string(b)))
	}
	if err := os.Chmod(part, 0o644); err != nil {
		return err
	}
	if err := os.Rename(part, out); err != nil {
		return errors.Join(fmt.Errorf("agent ISO %s: %w", out, err), os.Remove(part))
	}
	return nil
}
