package pxedeploy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/fakeagent"
)

// FuzzConfigFromCmdline feeds kernel command lines to the deploy ramdisk's
// parser. The corpus holds the lines the PXE driver and the libvirt backend
// write. An accepted line is a pxe-deploy line with a node, a key and an
// API URL, and whatever address it advertises is one the ramdisk can serve.
func FuzzConfigFromCmdline(f *testing.F) {
	f.Fuzz(func(t *testing.T, cmdline string) {
		c, err := ConfigFromCmdline(cmdline)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "kernel command line: ") && !strings.HasPrefix(msg, "pxedeploy: ") {
				t.Fatalf("error %q does not say what it is about", msg)
			}
			return
		}
		if Mode(cmdline) != ModePXEDeploy {
			t.Fatalf("accepted a line in mode %q", Mode(cmdline))
		}
		if c.NodeUUID == "" || c.DeployKey == "" {
			t.Fatalf("accepted a line without node (%q) or key (%q)", c.NodeUUID, c.DeployKey)
		}
		if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			t.Fatalf("accepted API URL %q (%v)", c.APIURL, err)
		}
		if c.AdvertiseURL != "" {
			u, err := url.Parse(c.AdvertiseURL)
			if err != nil || u.Host == "" || u.Path != "" {
				t.Fatalf("accepted advertise URL %q (%v)", c.AdvertiseURL, err)
			}
			if _, port, err := net.SplitHostPort(c.Listen); err != nil || port != u.Port() {
				t.Fatalf("listens on %q but advertises %q", c.Listen, c.AdvertiseURL)
			}
		}
	})
}

// FuzzDiskAPI sends the conductor's disk requests (and mutations of their
// query and body) to a deploy ramdisk with a 64 KiB disk. The corpus holds
// the requests driver/deploy/pxe makes. A write lands exactly where it
// says or is refused with a 4xx and leaves the disk as it was; nothing
// grows the disk; a hash covers what it says.
func FuzzDiskAPI(f *testing.F) {
	const size = 64 << 10
	f.Fuzz(func(t *testing.T, route uint8, query string, body []byte) {
		path := filepath.Join(t.TempDir(), "disk.raw")
		if err := os.WriteFile(path, bytes.Repeat([]byte{0xa5}, size), 0o644); err != nil {
			t.Fatal(err)
		}
		disk, err := fakeagent.OpenFileDisk(path)
		if err != nil {
			t.Fatal(err)
		}
		defer disk.Close()
		rd, err := New(Config{APIURL: "http://127.0.0.1:1", NodeUUID: "u-1", DeployKey: "K", Disk: disk,
			AdvertiseURL: "http://127.0.0.1:1/u-1", Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		routes := []struct{ method, path string }{{"PUT", "/disk"}, {"GET", "/disk/sha256"}, {"POST", "/disk/erase"}, {"GET", "/"}}
		r := routes[int(route)%len(routes)]
		u := r.path
		if query != "" {
			u += "?" + query
		}
		req, err := http.NewRequest(r.method, "http://ramdisk"+u, bytes.NewReader(body))
		if err != nil {
			return // not a request line a client could send
		}
		req.Header.Set(KeyHeader, "K")
		w := httptest.NewRecorder()
		rd.ServeHTTP(w, req)
		var res map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil {
			t.Fatalf("%s %s: %d with a body that is no JSON object: %q", r.method, u, w.Code, w.Body.String())
		}
		after, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != size {
			t.Fatalf("%s %s: the disk is %d bytes, was %d", r.method, u, len(after), size)
		}
		if w.Code >= 500 {
			t.Fatalf("%s %s: %d %v", r.method, u, w.Code, res)
		}
		untouched := bytes.Equal(after, bytes.Repeat([]byte{0xa5}, size))
		switch {
		case w.Code >= 400:
			if !untouched {
				t.Fatalf("%s %s was refused (%d %v) but changed the disk", r.method, u, w.Code, res)
			}
		case r.path == "/disk":
			off, _ := strconv.ParseInt(req.URL.Query().Get("offset"), 10, 64)
			if res["written"] != float64(len(body)) || !bytes.Equal(after[off:off+int64(len(body))], body) {
				t.Fatalf("PUT %s answered %v; the disk does not hold the %d bytes at %d", u, res, len(body), off)
			}
		case r.path == "/disk/sha256":
			n, _ := res["length"].(float64)
			sum := sha256.Sum256(after[:int(n)])
			if res["sha256"] != hex.EncodeToString(sum[:]) {
				t.Fatalf("GET %s answered %v, the disk's first %d bytes hash to %x", u, res, int(n), sum)
			}
		}
	})
}
