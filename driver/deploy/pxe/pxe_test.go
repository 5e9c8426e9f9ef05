package pxe_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver"
	"github.com/ironlab/ironlab/driver/deploy/pxe"
	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/fakeagent/pxedeploy"
	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator/bootfiles"
	"github.com/ironlab/ironlab/simulator/imageserver"
)

const mac = "52:54:00:12:34:56"

// env is a real driver API with the PXE deploy, an image server and one
// fake_pxe node whose disk is a sparse file.
type env struct {
	t       *testing.T
	url     string
	d       *driver.Driver
	bootDir string
	disk    string
	images  *imageserver.Server
	info    images.Info
	uuid    string
	ramdisk *pxedeploy.Mux
}

func newEnv(t *testing.T, automatedClean bool) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, bootDir: filepath.Join(dir, "boot"), disk: filepath.Join(dir, "disk.raw")}
	if err := os.WriteFile(e.disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(e.disk, 8<<20); err != nil {
		t.Fatal(err)
	}
	e.images = imageserver.New(filepath.Join(dir, "images"), slog.New(slog.DiscardHandler))
	info, err := e.images.Build(images.Spec{ID: "img", Size: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	e.info = info
	if err := e.images.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.images.Close() })

	cfg := driver.DefaultConfig()
	cfg.DBPath = filepath.Join(dir, "ironlab.db")
	cfg.BootDir = e.bootDir
	cfg.AutomatedClean = automatedClean
	cfg.LockRetryInterval = 50 * time.Millisecond
	cfg.LockRetries = 40
	d, err := driver.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		labtest.Recv(t, done, "end of the driver API")
		d.Close()
	})
	e.url, e.d = "http://"+ln.Addr().String(), d

	// The deploy ramdisks' listener.
	rln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.ramdisk = pxedeploy.NewMux("http://" + rln.Addr().String() + "/pxe")
	srv := &http.Server{Handler: e.ramdisk}
	go srv.Serve(rln)
	t.Cleanup(func() { srv.Close() })

	_, body := e.call("POST", "/v1/nodes", `{"name": "n0", "driver": "fake_pxe"}`, 201)
	e.uuid = body["uuid"].(string)
	e.call("POST", "/v1/ports", `{"node_uuid": "`+e.uuid+`", "address": "`+mac+`"}`, 201)
	e.verb("manage")
	e.waitState("manageable", "")
	return e
}

func (e *env) call(method, path, body string, want int) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	req.Header.Set("X-OpenStack-Ironic-API-Version", "latest")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	if want != 0 && resp.StatusCode != want {
		e.t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, want)
	}
	return resp.StatusCode, out
}

func (e *env) verb(target string) {
	e.t.Helper()
	e.call("PUT", "/v1/nodes/"+e.uuid+"/states/provision", `{"target": "`+target+`"}`, 202)
}

func (e *env) node() map[string]any {
	_, n := e.call("GET", "/v1/nodes/"+e.uuid, "", 200)
	return n
}

// waitState waits until the node rests in state (and, if lastError is
// set, has a last_error containing it).
func (e *env) waitState(state, lastError string) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := e.node()
		le, _ := n["last_error"].(string)
		waiting := state == "wait call-back" || state == "clean wait" // these keep a target
		if n["provision_state"] == state && (waiting || n["target_provision_state"] == nil) && strings.Contains(le, lastError) {
			return n
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("node in %q (last_error %q), want %q with last_error containing %q", n["provision_state"], le, state, lastError)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// boot reads the node's boot config as a PXE ROM would and runs the deploy
// ramdisk it names, until the returned stop is called.
func (e *env) boot() (bootfiles.Entry, func()) {
	e.t.Helper()
	entry, err := bootfiles.Read(e.bootDir, mac)
	if err != nil {
		e.t.Fatalf("no boot config for %s: %v", mac, err)
	}
	cfg, err := pxedeploy.ConfigFromCmdline(entry.Cmdline)
	if err != nil {
		e.t.Fatal(err)
	}
	disk, err := fakeagent.OpenFileDisk(e.disk)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.Disk, cfg.AdvertiseURL, cfg.RetryInterval = disk, e.ramdisk.URL(cfg.NodeUUID), 20*time.Millisecond
	cfg.Logger = slog.New(slog.DiscardHandler)
	rd, err := pxedeploy.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.ramdisk.Add(rd)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rd.Run(ctx) }()
	return entry, func() {
		cancel()
		if err := labtest.Recv(e.t, done, "end of the deploy ramdisk"); err != nil {
			e.t.Errorf("ramdisk: %v", err)
		}
		e.ramdisk.Remove(rd)
		disk.Close()
	}
}

func (e *env) deploy(instanceInfo string) {
	e.t.Helper()
	e.call("PATCH", "/v1/nodes/"+e.uuid, `[{"op": "add", "path": "/instance_info", "value": `+instanceInfo+`}]`, 200)
	e.verb("active")
	e.waitState("wait call-back", "")
}

func (e *env) sha256Info() string {
	return `{"image_source": "` + e.images.URL("img") + `", "image_os_hash_algo": "sha256", "image_os_hash_value": "` + e.info.SHA256 + `"}`
}

func (e *env) events() []map[string]any {
	_, body := e.call("GET", "/v1/nodes/"+e.uuid+"/events", "", 200)
	var out []map[string]any
	b, _ := json.Marshal(body["events"])
	_ = json.Unmarshal(b, &out)
	return out
}

func TestDeployStreamsTheImageThroughTheConductor(t *testing.T) {
	for name, instanceInfo := range map[string]func(e *env) string{
		"sha256": (*env).sha256Info,
		"md5": func(e *env) string {
			return `{"image_source": "` + e.images.URL("img") + `", "image_checksum": "` + e.info.MD5 + `"}`
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, false)
			e.verb("provide")
			e.waitState("available", "")
			e.deploy(instanceInfo(e))
			entry, stop := e.boot()
			defer stop()
			for _, w := range []string{"ironlab.mode=pxe-deploy", "ipa-api-url=" + e.url, "ipa-node-uuid=" + e.uuid, "ironlab.deploy-key=", "BOOTIF=01-52-54-00-12-34-56"} {
				if !strings.Contains(entry.Cmdline, w) {
					t.Errorf("boot config command line %q lacks %q", entry.Cmdline, w)
				}
			}
			if entry.Kernel != "agent/vmlinuz" || entry.Initrd != "agent/initramfs.img" {
				t.Errorf("boot config names %s + %s", entry.Kernel, entry.Initrd)
			}
			n := e.waitState("active", "")
			if n["last_error"] != nil && n["last_error"] != "" {
				t.Errorf("last_error %v", n["last_error"])
			}
			f, err := os.Open(e.disk)
			if err != nil {
				t.Fatal(err)
			}
			h, err := images.Verify(f)
			f.Close()
			if err != nil || h.ID != "img" {
				t.Errorf("disk: %v (image %q)", err, h.ID)
			}
			if _, err := bootfiles.Read(e.bootDir, mac); err == nil {
				t.Errorf("the boot config is still there after the deploy")
			}
			var streamed float64
			for _, ev := range e.events() {
				if ev["event"] == "image streamed" {
					d, _ := ev["detail"].(map[string]any)
					streamed += d[pxe.BytesDetail].(float64)
				}
			}
			if int64(streamed) != e.info.Size {
				t.Errorf("events count %v image bytes through the conductor, want %d", streamed, e.info.Size)
			}
		})
	}
}

func TestWrongDeployKeyIs400(t *testing.T) {
	e := newEnv(t, false)
	e.verb("provide")
	e.waitState("available", "")
	e.deploy(e.sha256Info())
	path := "/v1/nodes/" + e.uuid + "/vendor_passthru/pass_deploy_info"
	code, body := e.call("POST", path, `{"address": "http://127.0.0.1:1/pxe/x", "key": "not-the-key"}`, 0)
	if code != 400 || !strings.Contains(body["error_message"].(string), "deploy key does not match") {
		t.Errorf("wrong key: %d %v, want 400 naming the key", code, body)
	}
	code, body = e.call("POST", "/v1/nodes/"+e.uuid+"/vendor_passthru/no_such_method", `{}`, 0)
	if code != 400 || !strings.Contains(body["error_message"].(string), "no_such_method") {
		t.Errorf("unknown method: %d %v", code, body)
	}
	if n := e.node(); n["provision_state"] != "wait call-back" {
		t.Errorf("a refused call-back moved the node to %v", n["provision_state"])
	}
	// The right key from the boot config still deploys.
	_, stop := e.boot()
	defer stop()
	e.waitState("active", "")
}

func TestDeployFailuresNameTheReason(t *testing.T) {
	for name, c := range map[string]struct {
		faults imageserver.Faults
		want   string
	}{
		"image 404":         {imageserver.Faults{NotFound: true}, "HTTP 404"},
		"checksum mismatch": {imageserver.Faults{CorruptAt: 4096}, "Image checksum mismatch"},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, false)
			e.verb("provide")
			e.waitState("available", "")
			e.images.SetFaults("img", c.faults)
			e.deploy(e.sha256Info())
			_, stop := e.boot()
			defer stop()
			e.waitState("deploy failed", c.want)
			if _, err := bootfiles.Read(e.bootDir, mac); err == nil {
				t.Errorf("a failed deploy left its boot config behind")
			}
		})
	}
}

func TestCleaningErasesTheDiskThroughTheRamdisk(t *testing.T) {
	e := newEnv(t, true)
	if err := os.WriteFile(e.disk, []byte("old data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(e.disk, 8<<20); err != nil {
		t.Fatal(err)
	}
	e.verb("provide")
	e.waitState("clean wait", "")
	_, stop := e.boot()
	defer stop()
	e.waitState("available", "")
	b, err := os.ReadFile(e.disk)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range b {
		if c != 0 {
			t.Fatalf("byte %d of the disk is %#x after cleaning", i, c)
		}
	}
	if len(b) != 8<<20 {
		t.Errorf("disk is %d bytes after cleaning", len(b))
	}
}

// The PXE deploy writes what it downloads as it is: a qcow2 image is
// refused with the reason, never written raw. Said in instance_info, the
// deploy request itself is refused; unsaid, the image's magic is caught
// before a byte reaches the disk.
func TestQcow2IsRefused(t *testing.T) {
	for name, said := range map[string]bool{"image_disk_format qcow2": true, "qcow2 unsaid": false} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, false)
			info, err := e.images.Build(images.Spec{ID: "q", Size: 2 << 20, Format: images.FormatQcow2})
			if err != nil {
				t.Fatal(err)
			}
			e.verb("provide")
			e.waitState("available", "")
			ii := `{"image_source": "` + e.images.URL("q") + `", "image_os_hash_algo": "sha256", "image_os_hash_value": "` + info.SHA256 + `"`
			if said {
				ii += `, "image_disk_format": "qcow2"`
			}
			e.call("PATCH", "/v1/nodes/"+e.uuid, `[{"op": "add", "path": "/instance_info", "value": `+ii+`}}]`, 200)
			if said {
				code, body := e.call("PUT", "/v1/nodes/"+e.uuid+"/states/provision", `{"target": "active"}`, 0)
				msg, _ := body["error_message"].(string)
				if code != 400 || !strings.Contains(msg, "image_disk_format is qcow2") || !strings.Contains(msg, "agent") {
					t.Fatalf("deploy of a qcow2 image: %d %q, want 400 naming the format and the agent deploy", code, msg)
				}
				if n := e.node(); n["provision_state"] != "available" {
					t.Errorf("a refused deploy moved the node to %v", n["provision_state"])
				}
			} else {
				e.verb("active")
				e.waitState("wait call-back", "")
				_, stop := e.boot()
				defer stop()
				e.waitState("deploy failed", "is qcow2")
			}
			b, err := os.ReadFile(e.disk)
			if err != nil {
				t.Fatal(err)
			}
			if i := bytes.IndexFunc(b, func(r rune) bool { return r != 0 }); i >= 0 {
				t.Errorf("the disk was written (byte %d is not zero)", i)
			}
		})
	}
}
