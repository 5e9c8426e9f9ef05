package contract

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/driver/deploy/pxe"
	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/fakeagent/pxedeploy"
	"github.com/ironlab/ironlab/internal/shacrypt"
	"github.com/ironlab/ironlab/scenarios"
	"github.com/ironlab/ironlab/simulator/bootfiles"
)

// tree is every file under dir, by slash path, with its content.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The driver writes the boot folder byte for byte as the lab's bootfiles
// does (both file formats, the same names), the lab reads back what the
// driver wrote, and each side removes what the other wrote.
func TestBootFolderLayout(t *testing.T) {
	for name, e := range map[string]bootfiles.Entry{
		"kernel, initrd and command line": {Kernel: "agent/vmlinuz", Initrd: "agent/initramfs.gz", Cmdline: "console=ttyS0 ironlab.mode=pxe-deploy"},
		"no initrd":                       {Kernel: "deploy/kernel", Cmdline: "quiet"},
		"no command line":                 {Kernel: "k", Initrd: "i"},
	} {
		t.Run(name, func(t *testing.T) {
			const mac = "52:54:00:AB:cd:01"
			byDriver, byLab := t.TempDir(), t.TempDir()
			if err := pxe.WriteBootConfig(byDriver, mac, pxe.BootConfig{Kernel: e.Kernel, Initrd: e.Initrd, Cmdline: e.Cmdline}); err != nil {
				t.Fatal(err)
			}
			if err := bootfiles.Write(byLab, mac, e); err != nil {
				t.Fatal(err)
			}
			want := tree(t, byLab)
			if diff := cmp.Diff(want, tree(t, byDriver)); diff != "" {
				t.Errorf("boot folder written by the driver (+) differs from the lab's layout (-):\n%s", diff)
			}
			script, _ := bootfiles.ScriptName(mac)
			pxl, _ := bootfiles.PXELinuxName(mac)
			if _, ok := want[script]; !ok {
				t.Errorf("no iPXE script %s in %v", script, want)
			}
			if _, ok := want[pxl]; !ok {
				t.Errorf("no PXELINUX file %s in %v", pxl, want)
			}
			got, err := bootfiles.Read(byDriver, mac)
			if err != nil {
				t.Fatalf("the lab reads the driver's boot config: %v", err)
			}
			if diff := cmp.Diff(e, got); diff != "" {
				t.Errorf("the lab reads back (-wrote +read):\n%s", diff)
			}
			if err := pxe.RemoveBootConfig(byLab, mac); err != nil {
				t.Fatal(err)
			}
			if err := bootfiles.Remove(byDriver, mac); err != nil {
				t.Fatal(err)
			}
			for _, dir := range []string{byLab, byDriver} {
				if left := tree(t, dir); len(left) != 0 {
					t.Errorf("files left in %s after removal: %v", dir, left)
				}
			}
		})
	}
}

// The command line the driver writes starts the lab's deploy ramdisk with
// the driver's API, node and key; the ramdisk's disk API takes the key in
// the header the driver sends, and refuses a request without it.
func TestDeployRamdiskWire(t *testing.T) {
	for _, c := range []struct{ what, driver, ramdisk string }{
		{"mode word", pxe.ModeWord, pxedeploy.ModeWord},
		{"deploy mode", pxe.ModePXEDeploy, pxedeploy.ModePXEDeploy},
		{"key word", pxe.KeyWord, pxedeploy.KeyWord},
		{"key header", pxe.KeyHeader, pxedeploy.KeyHeader},
	} {
		if c.driver != c.ramdisk {
			t.Errorf("%s: the driver says %q, the ramdisk %q", c.what, c.driver, c.ramdisk)
		}
	}
	const api, uuid, key = "http://127.0.0.1:6385", "8a1c4c5e-2f3b-4a4e-9b7d-0c1d2e3f4a5b", "one-time-key"
	cmdline := pxe.DeployCmdline("console=ttyS0", api, uuid, key, "52-54-00-ab-cd-01")
	if m := pxedeploy.Mode(cmdline); m != pxedeploy.ModePXEDeploy {
		t.Fatalf("the ramdisk reads mode %q from %q", m, cmdline)
	}
	cfg, err := pxedeploy.ConfigFromCmdline(cmdline)
	if err != nil {
		t.Fatalf("the ramdisk refuses the driver's command line %q: %v", cmdline, err)
	}
	if cfg.APIURL != api || cfg.NodeUUID != uuid || cfg.DeployKey != key {
		t.Errorf("the ramdisk read api %q node %q key %q from %q", cfg.APIURL, cfg.NodeUUID, cfg.DeployKey, cmdline)
	}

	path := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	disk, err := fakeagent.OpenFileDisk(path)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	cfg.Disk = disk
	cfg.AdvertiseURL = "http://127.0.0.1:9999" // where it says it listens; the test calls its handler
	rd, err := pxedeploy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rd)
	defer srv.Close()
	for _, c := range []struct {
		key  string
		want int
	}{{key, http.StatusOK}, {"", http.StatusUnauthorized}} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/disk/sha256", nil)
		if c.key != "" {
			req.Header.Set(pxe.KeyHeader, c.key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("GET /disk/sha256 with %s %q: %d, want %d", pxe.KeyHeader, c.key, resp.StatusCode, c.want)
		}
	}
}

// The runner counts image bytes through the conductor from the detail
// field the PXE deploy records.
func TestConductorBytesDetail(t *testing.T) {
	if pxe.BytesDetail != scenarios.ConductorBytesDetail {
		t.Errorf("the PXE deploy records %q, the runner reads %q", pxe.BytesDetail, scenarios.ConductorBytesDetail)
	}
}

// The driver hashes a rescue password (internal/shacrypt, as Ironic's
// crypt.crypt with a SHA-256 or SHA-512 salt); the rescue ramdisk's login checks it
// (fakeagent.RescueLogin): a driver hash logs the rescue user in.
func TestRescuePasswordHashLogsIn(t *testing.T) {
	for _, pw := range []string{"s3cret", "a much longer rescue password than sixty-four characters, to cross a block", "ü"} {
		for _, method := range []string{shacrypt.SHA256, shacrypt.SHA512} {
			h, err := shacrypt.Hash(method, pw)
			if err != nil {
				t.Fatal(err)
			}
			if !fakeagent.RescueLogin(h, pw) || fakeagent.RescueLogin(h, pw+"!") {
				t.Errorf("the rescue login does not accept exactly %q for the driver's %s hash %s", pw, method, h)
			}
		}
	}
}
