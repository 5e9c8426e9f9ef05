package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ironlab/ironlab/images/configdrive"
	"github.com/ironlab/ironlab/images/ramdisk"
	"github.com/ironlab/ironlab/scenarios/labtest"
	libvirtvm "github.com/ironlab/ironlab/simulator/libvirt"
)

// ironlab up --backend libvirt --bmc redfish builds each node's agent ISO
// and prints it with the curl lines of a virtual media boot; the ISO is
// served, carries the node's agent command line as the guest sees the
// driver, and the printed InsertMedia line puts it in the VM's drive. (No
// VM boots: the insert alone is checked; the boot is
// TestVMRedfishVirtualMediaBootsAgent's.)
func TestUpLibvirtRedfishAgentISO(t *testing.T) {
	labtest.RequireFunc(t, "libvirtd", "scripts/vm-deps.sh as root (libvirt-daemon-system, qemu-system-x86; starts libvirtd)", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := libvirtvm.Connect(ctx, libvirtvm.ConnOptions{})
		if err == nil {
			c.Close()
		}
		return err
	})
	if why := ramdisk.ISOTools(); why != "" {
		labtest.Missing(t, "genisoimage and isolinux", why)
	}
	curl := labtest.Require(t, "curl")
	dir := t.TempDir()
	for _, p := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(labtest.Binary(t), "up", "--backend", "libvirt", "--accel", "tcg", "--nodes", "1", "--disk-size", "64MiB",
		"--image-size", "1MiB", "--bmc", "redfish", "--redfish-listen", "per-node", "--redfish-port", "0", "--state-dir", dir, "--listen", "127.0.0.1:0")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.AfterFunc(5*time.Minute, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	sc := bufio.NewScanner(stdout)
	var iso, insert string
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "agent ISO:"); ok {
			iso = strings.Fields(rest)[0]
		}
		if rest, ok := strings.CutPrefix(line, "boot it:"); ok {
			insert = strings.TrimSpace(rest)
		}
		if strings.Contains(line, "the lab runs until") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if iso == "" || !strings.Contains(insert, "VirtualMedia.InsertMedia") || !strings.Contains(insert, iso) {
		t.Fatalf("up printed agent ISO %q and boot line %q", iso, insert)
	}
	resp, err := http.Get(iso)
	if err != nil {
		t.Fatal(err)
	}
	img, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s, %v", iso, resp.Status, err)
	}
	fs, err := configdrive.OpenISO(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatalf("%s: %v", iso, err)
	}
	cfg, err := fs.ReadFile(ramdisk.ISOCmdlineFile)
	if err != nil || !strings.Contains(string(cfg), "ipa-api-url=http://10.0.2.2:") || !strings.Contains(string(cfg), "ipa-advertise-port=") {
		t.Fatalf("%s in %s: %q (%v)", ramdisk.ISOCmdlineFile, iso, cfg, err)
	}
	if out, err := exec.Command("sh", "-c", strings.Replace(insert, "curl", curl+" -f", 1)).CombinedOutput(); err != nil {
		t.Fatalf("the printed InsertMedia line: %v\n%s", err, out)
	}
	if st, err := os.Stat(filepath.Join(dir, "vms", "node-0.cd.iso")); err != nil || st.Size() != int64(len(img)) {
		t.Errorf("the VM's CD image after the insert: %v, %v (want %d bytes)", st, err, len(img))
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("up after SIGTERM: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "vms", "node-0.cd.iso")); err == nil {
		t.Errorf("the VM's CD image is left after the lab stopped")
	}
}
