package pxedeploy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/scenarios/labtest"
)

func TestConfigFromCmdline(t *testing.T) {
	got, err := ConfigFromCmdline("console=ttyS0 ironlab.mode=pxe-deploy ipa-api-url=http://10.0.2.2:6385 ipa-node-uuid=u-1 " +
		"ironlab.deploy-key=K3Y BOOTIF=01-52-54-00-12-34-56 ipa-advertise-host=127.0.0.1 ipa-advertise-port=7001")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{APIURL: "http://10.0.2.2:6385", NodeUUID: "u-1", DeployKey: "K3Y", BootMAC: "52:54:00:12:34:56",
		AdvertiseURL: "http://127.0.0.1:7001", Listen: "0.0.0.0:7001"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	for name, cmdline := range map[string]string{
		"agent mode":   "ipa-api-url=http://x ipa-node-uuid=u ironlab.deploy-key=k",
		"no key":       "ironlab.mode=pxe-deploy ipa-api-url=http://x ipa-node-uuid=u",
		"no node":      "ironlab.mode=pxe-deploy ipa-api-url=http://x ironlab.deploy-key=k",
		"bad BOOTIF":   "ironlab.mode=pxe-deploy ipa-api-url=http://x ipa-node-uuid=u ironlab.deploy-key=k BOOTIF=zz",
		"no api url":   "ironlab.mode=pxe-deploy ipa-node-uuid=u ironlab.deploy-key=k",
		"bad adv port": "ironlab.mode=pxe-deploy ipa-api-url=http://x ipa-node-uuid=u ironlab.deploy-key=k ipa-advertise-port=0",
	} {
		if _, err := ConfigFromCmdline(cmdline); err == nil {
			t.Errorf("%s: %q parsed", name, cmdline)
		}
	}
	if Mode("quiet") != ModeAgent || Mode("ironlab.mode=pxe-deploy") != ModePXEDeploy {
		t.Errorf("Mode")
	}
}

// A ramdisk behind a Mux: it calls back (retrying a 409 and a refused
// connection's worth of failures), serves its disk only with the key, and
// writes, hashes and erases it.
func TestRamdiskCallsBackAndServesItsDisk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 4<<20); err != nil {
		t.Fatal(err)
	}
	disk, err := fakeagent.OpenFileDisk(path)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()

	var calls atomic.Int32
	got := make(chan map[string]string, 1)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/nodes/u-1/vendor_passthru/pass_deploy_info" || r.Method != "POST" {
			http.NotFound(w, r)
			return
		}
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusConflict) // the conductor still holds the node
			return
		}
		var body map[string]string
		_ = json.NewDecoder(r.Body).Decode(&body)
		got <- body
		w.WriteHeader(http.StatusAccepted)
	}))
	defer api.Close()

	mux := NewMux("http://127.0.0.1:1/pxe")
	srv := httptest.NewServer(mux)
	defer srv.Close()
	var console bytes.Buffer // written by Run, read once it has returned
	rd, err := New(Config{APIURL: api.URL, NodeUUID: "u-1", DeployKey: "K", Disk: disk, AdvertiseURL: mux.URL("u-1"),
		RetryInterval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler), Console: &console})
	if err != nil {
		t.Fatal(err)
	}
	mux.Add(rd)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rd.Run(ctx) }()
	select {
	case body := <-got:
		if d := cmp.Diff(map[string]string{"address": "http://127.0.0.1:1/pxe/u-1", "key": "K"}, body); d != "" {
			t.Errorf("pass_deploy_info body (-want +got):\n%s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pass_deploy_info")
	}

	do := func(method, path, key string, body []byte) (int, map[string]any) {
		req, _ := http.NewRequest(method, srv.URL+"/pxe/u-1"+path, bytes.NewReader(body))
		if key != "" {
			req.Header.Set(KeyHeader, key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, &out)
		return resp.StatusCode, out
	}
	data := bytes.Repeat([]byte("ironlab!"), 300000) // 2.4 MB, not a multiple of the chunk
	if code, _ := do("PUT", "/disk", "wrong", data); code != 401 {
		t.Errorf("PUT with a wrong key: %d, want 401", code)
	}
	if code, out := do("PUT", "/disk", "K", data); code != 200 || out["written"] != float64(len(data)) {
		t.Errorf("PUT: %d %v", code, out)
	}
	sum := sha256.Sum256(data)
	if code, out := do("GET", "/disk/sha256?length=2400000", "K", nil); code != 200 || out["sha256"] != hex.EncodeToString(sum[:]) {
		t.Errorf("sha256: %d %v, want %x", code, out, sum)
	}
	if code, _ := do("PUT", "/disk?offset=4194000", "K", data); code != http.StatusRequestEntityTooLarge {
		t.Errorf("PUT past the end: %d, want 413", code)
	}
	if code, out := do("POST", "/disk/erase", "K", nil); code != 200 || out["erased"] != float64(4<<20) {
		t.Errorf("erase: %d %v", code, out)
	}
	b, _ := os.ReadFile(path)
	if len(b) != 4<<20 || bytes.ContainsFunc(b, func(r rune) bool { return r != 0 }) {
		t.Errorf("disk not zero after erase (%d bytes)", len(b))
	}
	if code, _ := do("GET", "/", "", nil); code != 200 {
		t.Errorf("status: %d", code)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/pxe/other/", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 404 {
		t.Errorf("unknown node: %v %v", resp, err)
	}
	cancel()
	if err := labtest.Recv(t, done, "end of Run"); err != nil {
		t.Errorf("Run: %v", err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d call-backs, want 2 (one 409, then accepted)", n)
	}
	if want := "ironlab deploy ramdisk: pass_deploy_info accepted (attempt 2)\n"; console.String() != want {
		t.Errorf("console %q, want %q: the accepted call-back, once", console.String(), want)
	}
}

func TestRefusedCallBackEndsRun(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error_message": "deploy key does not match"}`)
	}))
	defer api.Close()
	disk, err := fakeagent.OpenFileDisk(os.DevNull)
	if err != nil {
		t.Skip("no /dev/null")
	}
	defer disk.Close()
	var console bytes.Buffer
	rd, err := New(Config{APIURL: api.URL, NodeUUID: "u", DeployKey: "k", Disk: disk, AdvertiseURL: "http://127.0.0.1:1/u",
		RetryInterval: time.Millisecond, Logger: slog.New(slog.DiscardHandler), Console: &console})
	if err != nil {
		t.Fatal(err)
	}
	err = rd.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "deploy key does not match") {
		t.Errorf("Run: %v, want the refusal", err)
	}
	if console.Len() != 0 {
		t.Errorf("console %q after a refused call-back, want nothing", console.String())
	}
}
