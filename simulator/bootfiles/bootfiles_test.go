package bootfiles

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWriteReadRemove(t *testing.T) {
	dir := t.TempDir()
	mac := "52:54:00:AB:cd:01"
	e := Entry{Kernel: "agent/vmlinuz", Initrd: "agent/initramfs.gz", Cmdline: "console=ttyS0 ipa-api-url=http://10.0.2.2:6385"}
	if err := Write(dir, mac, e); err != nil {
		t.Fatal(err)
	}
	got, err := Read(dir, mac)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(e, got); diff != "" {
		t.Errorf("Read (-want +got):\n%s", diff)
	}
	script, _ := os.ReadFile(filepath.Join(dir, "52-54-00-ab-cd-01.ipxe"))
	wantScript := "#!ipxe\nkernel agent/vmlinuz console=ttyS0 ipa-api-url=http://10.0.2.2:6385\ninitrd agent/initramfs.gz\nboot\n"
	if diff := cmp.Diff(wantScript, string(script)); diff != "" {
		t.Errorf("iPXE script (-want +got):\n%s", diff)
	}
	pxl, _ := os.ReadFile(filepath.Join(dir, "pxelinux.cfg", "01-52-54-00-ab-cd-01"))
	wantPXL := "DEFAULT ironlab\nLABEL ironlab\n  KERNEL agent/vmlinuz\n  APPEND initrd=agent/initramfs.gz console=ttyS0 ipa-api-url=http://10.0.2.2:6385\n"
	if diff := cmp.Diff(wantPXL, string(pxl)); diff != "" {
		t.Errorf("pxelinux config (-want +got):\n%s", diff)
	}
	if err := Remove(dir, mac); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dir, mac); !errors.Is(err, ErrNoEntry) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read after Remove = %v, want ErrNoEntry", err)
	}
	if err := Remove(dir, mac); err != nil {
		t.Fatalf("second Remove = %v", err)
	}
}

func TestWriteRejects(t *testing.T) {
	for name, tc := range map[string]struct {
		mac string
		e   Entry
	}{
		"bad mac":         {"52:54:00", Entry{Kernel: "k"}},
		"absolute kernel": {"52:54:00:00:00:01", Entry{Kernel: "/boot/vmlinuz"}},
		"escaping initrd": {"52:54:00:00:00:01", Entry{Kernel: "k", Initrd: "../x"}},
		"no kernel":       {"52:54:00:00:00:01", Entry{}},
		"two lines":       {"52:54:00:00:00:01", Entry{Kernel: "k", Cmdline: "a\nshell"}},
		"too long":        {"52:54:00:00:00:01", Entry{Kernel: "k", Cmdline: strings.Repeat("a", MaxCmdline+1)}},
		"trailing space":  {"52:54:00:00:00:01", Entry{Kernel: "k", Cmdline: "quiet\f"}},
	} {
		t.Run(name, func(t *testing.T) {
			if err := Write(t.TempDir(), tc.mac, tc.e); err == nil {
				t.Fatal("Write succeeded, want an error")
			}
		})
	}
}
