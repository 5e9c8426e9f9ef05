// Package bootfiles owns the lab's boot folder: what each machine boots from
// the network, keyed by its MAC. The driver or the lab writes an entry
// (kernel, initramfs, kernel command line); the libvirt backend reads it back
// for a direct kernel boot, and QEMU's TFTP serves the same files to a real
// iPXE boot, so the two paths cannot drift apart.
//
// For MAC 52:54:00:12:34:56 an entry is two files, written together:
//
//	<dir>/52-54-00-12-34-56.ipxe             iPXE script (the one Read parses)
//	<dir>/pxelinux.cfg/01-52-54-00-12-34-56  the same entry for PXELINUX
//
// Kernel and initramfs paths are relative to dir, as TFTP clients name them.
package bootfiles

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"unicode"
)

// Entry is what a machine boots from the network.
type Entry struct {
	Kernel  string `json:"kernel"`  // path under the boot folder, e.g. "agent/vmlinuz"
	Initrd  string `json:"initrd"`  // path under the boot folder, may be empty
	Cmdline string `json:"cmdline"` // the kernel command line, one line
}

// ErrNoEntry is returned (wrapped, and also matching fs.ErrNotExist) when a
// MAC has no boot entry.
var ErrNoEntry = fmt.Errorf("no boot entry for this MAC: %w", fs.ErrNotExist)

// Dashed is a MAC in the form the file names use: lower case, dashes.
func Dashed(mac string) (string, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("bad MAC %q", mac)
	}
	return strings.ReplaceAll(hw.String(), ":", "-"), nil
}

// ScriptName is the iPXE script's name under the boot folder, which is also
// the bootfile a DHCP server (QEMU's slirp) hands this MAC.
func ScriptName(mac string) (string, error) {
	d, err := Dashed(mac)
	if err != nil {
		return "", err
	}
	return d + ".ipxe", nil
}

// PXELinuxName is the PXELINUX config's name under the boot folder.
func PXELinuxName(mac string) (string, error) {
	d, err := Dashed(mac)
	if err != nil {
		return "", err
	}
	return "pxelinux.cfg/01-" + d, nil
}

// MaxCmdline bounds a kernel command line (x86 Linux takes 2048 bytes; a
// few architectures 4096).
const MaxCmdline = 4096

func (e Entry) validate() error {
	for what, p := range map[string]string{"kernel": e.Kernel, "initrd": e.Initrd} {
		if p == "" && what == "initrd" {
			continue
		}
		if p == "" || strings.IndexFunc(p, unicode.IsSpace) >= 0 || path.IsAbs(p) || p != path.Clean(p) || strings.HasPrefix(p, "../") || p == ".." {
			return fmt.Errorf("boot entry %s path %q: must be a clean relative path without spaces", what, p)
		}
	}
	if strings.ContainsAny(e.Cmdline, "\r\n") {
		return fmt.Errorf("boot entry command line must be one line")
	}
	// Read trims the line: a command line must not depend on its ends.
	if strings.TrimSpace(e.Cmdline) != e.Cmdline {
		return fmt.Errorf("boot entry command line %q starts or ends with white space", e.Cmdline)
	}
	if len(e.Cmdline) > MaxCmdline {
		return fmt.Errorf("boot entry command line of %d bytes: at most %d", len(e.Cmdline), MaxCmdline)
	}
	return nil
}

// Write stores the entry for mac in dir (both formats), replacing any.
func Write(dir, mac string, e Entry) error {
	if err := e.validate(); err != nil {
		return err
	}
	script, err := ScriptName(mac)
	if err != nil {
		return err
	}
	pxl, _ := PXELinuxName(mac)
	var p strings.Builder
	p.WriteString("DEFAULT ironlab\nLABEL ironlab\n")
	fmt.Fprintf(&p, "  KERNEL %s\n", e.Kernel)
	appendLine := e.Cmdline
	if e.Initrd != "" {
		appendLine = strings.TrimSpace("initrd=" + e.Initrd + " " + e.Cmdline)
	}
	fmt.Fprintf(&p, "  APPEND %s\n", appendLine)

	if err := writeFile(filepath.Join(dir, filepath.FromSlash(pxl)), p.String()); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, script), e.ipxe())
}

func (e Entry) ipxe() string {
	var s strings.Builder
	s.WriteString("#!ipxe\n")
	fmt.Fprintf(&s, "kernel %s", e.Kernel)
	if e.Cmdline != "" {
		fmt.Fprintf(&s, " %s", e.Cmdline)
	}
	s.WriteString("\n")
	if e.Initrd != "" {
		fmt.Fprintf(&s, "initrd %s\n", e.Initrd)
	}
	s.WriteString("boot\n")
	return s.String()
}

// WriteScript stores the entry as an iPXE script named name in dir (a file
// directly in dir: iPXE resolves the kernel and initrd paths against the
// script's own path). The libvirt machines serve an entry this way with
// their network's facts added (see libvirtvm.Machine).
func WriteScript(dir, name string, e Entry) error {
	if err := e.validate(); err != nil {
		return err
	}
	if name == "" || name != filepath.Base(name) || strings.ContainsAny(name, " \t") {
		return fmt.Errorf("iPXE script name %q: must be a plain file name", name)
	}
	return writeFile(filepath.Join(dir, name), e.ipxe())
}

// writeFile replaces a file atomically, so a booting machine never reads half.
func writeFile(name, content string) error {
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

// Read returns the entry for mac in dir; ErrNoEntry when there is none.
func Read(dir, mac string) (Entry, error) {
	script, err := ScriptName(mac)
	if err != nil {
		return Entry{}, err
	}
	name := filepath.Join(dir, script)
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, fmt.Errorf("read boot entry %s: %w", name, ErrNoEntry)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("read boot entry: %w", err)
	}
	defer f.Close()
	var e Entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		verb, rest, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		switch verb {
		case "kernel":
			e.Kernel, e.Cmdline, _ = strings.Cut(strings.TrimSpace(rest), " ")
			e.Cmdline = strings.TrimSpace(e.Cmdline)
		case "initrd":
			e.Initrd = strings.TrimSpace(rest)
		}
	}
	if err := sc.Err(); err != nil {
		return Entry{}, fmt.Errorf("read boot entry %s: %w", name, err)
	}
	if err := e.validate(); err != nil {
		return Entry{}, fmt.Errorf("boot entry %s: %w", name, err)
	}
	return e, nil
}

// Remove deletes the entry for mac; removing an absent entry is not an error.
func Remove(dir, mac string) error {
	script, err := ScriptName(mac)
	if err != nil {
		return err
	}
	pxl, _ := PXELinuxName(mac)
	for _, n := range []string{filepath.Join(dir, script), filepath.Join(dir, filepath.FromSlash(pxl))} {
		if err := os.Remove(n); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove boot entry: %w", err)
		}
	}
	return nil
}
