package pxe

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// The driver's side of the wire to the deploy ramdisk and the boot folder.
// The driver links nothing of the lab or the ramdisk (fakeagent/pxedeploy,
// simulator/bootfiles own their side): as Ironic's PXE driver owned its
// templates, this package owns the words it writes. The contract test in
// scenarios/contract checks that both sides agree.
const (
	// ModeWord on the kernel command line selects what the ramdisk runs;
	// ModePXEDeploy is its value for the deploy ramdisk.
	ModeWord      = "ironlab.mode"
	ModePXEDeploy = "pxe-deploy"
	// KeyWord carries the one-time deploy key the conductor expects back.
	KeyWord = "ironlab.deploy-key"
	// KeyHeader carries the deploy key on every /disk request to the ramdisk.
	KeyHeader = "X-Ironlab-Deploy-Key"
)

// DeployCmdline is the deploy ramdisk's kernel command line: extra words
// first, then the mode, the API to call back, the node, its one-time key
// and the boot MAC (dashed, as BOOTIF has it).
func DeployCmdline(extra, apiURL, nodeUUID, key, dashedMAC string) string {
	return strings.TrimSpace(strings.Join([]string{extra,
		ModeWord + "=" + ModePXEDeploy,
		"ipa-api-url=" + apiURL,
		"ipa-node-uuid=" + nodeUUID,
		KeyWord + "=" + key,
		"BOOTIF=01-" + dashedMAC}, " "))
}

// BootConfig is what a MAC boots from the boot folder: kernel and initramfs
// paths relative to the folder (as TFTP clients name them) and the kernel
// command line.
type BootConfig struct {
	Kernel, Initrd, Cmdline string
}

// dashedMAC is a MAC as the boot files name it: lower case, dashes.
func dashedMAC(mac string) (string, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("bad MAC %q", mac)
	}
	return strings.ReplaceAll(hw.String(), ":", "-"), nil
}

// bootConfigFiles are a MAC's two boot files under the boot folder: the
// iPXE script (<mac>.ipxe, the bootfile DHCP hands the MAC) and the
// PXELINUX config (pxelinux.cfg/01-<mac>).
func bootConfigFiles(dir, mac string) (script, pxelinux string, err error) {
	d, err := dashedMAC(mac)
	if err != nil {
		return "", "", err
	}
	return filepath.Join(dir, d+".ipxe"), filepath.Join(dir, "pxelinux.cfg", "01-"+d), nil
}

func (c BootConfig) validate() error {
	for what, p := range map[string]string{"kernel": c.Kernel, "initrd": c.Initrd} {
		if p == "" && what == "initrd" {
			continue
		}
		if p == "" || strings.ContainsAny(p, " \t\r\n") || path.IsAbs(p) || p != path.Clean(p) || strings.HasPrefix(p, "../") || p == ".." {
			return fmt.Errorf("boot config %s path %q: must be a clean relative path without spaces", what, p)
		}
	}
	if strings.ContainsAny(c.Cmdline, "\r\n") {
		return errors.New("boot config kernel command line must be one line")
	}
	return nil
}

// WriteBootConfig writes mac's boot files in dir (both formats), replacing
// any, each atomically so a booting machine never reads half.
func WriteBootConfig(dir, mac string, c BootConfig) error {
	if err := c.validate(); err != nil {
		return err
	}
	script, pxelinux, err := bootConfigFiles(dir, mac)
	if err != nil {
		return err
	}
	appendLine := c.Cmdline
	if c.Initrd != "" {
		appendLine = strings.TrimSpace("initrd=" + c.Initrd + " " + c.Cmdline)
	}
	pxl := fmt.Sprintf("DEFAULT ironlab\nLABEL ironlab\n  KERNEL %s\n  APPEND %s\n", c.Kernel, appendLine)
	if err := writeAtomic(pxelinux, pxl); err != nil {
		return err
	}
	var s strings.Builder
	s.WriteString("#!ipxe\n")
	fmt.Fprintf(&s, "kernel %s", c.Kernel)
	if c.Cmdline != "" {
		fmt.Fprintf(&s, " %s", c.Cmdline)
	}
	s.WriteString("\n")
	if c.Initrd != "" {
		fmt.Fprintf(&s, "initrd %s\n", c.Initrd)
	}
	s.WriteString("boot\n")
	return writeAtomic(script, s.String())
}

// RemoveBootConfig deletes mac's boot files; absent files are not an error.
func RemoveBootConfig(dir, mac string) error {
	script, pxelinux, err := bootConfigFiles(dir, mac)
	if err != nil {
		return err
	}
	for _, n := range []string{script, pxelinux} {
		if err := os.Remove(n); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove boot config %s: %w", n, err)
		}
	}
	return nil
}

func writeAtomic(name, content string) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), ".bootfile-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}
