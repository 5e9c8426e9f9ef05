package fakeagent

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// imageServer serves a test image and the broken variants the writer must
// refuse.
func imageServer(t *testing.T, image []byte) *httptest.Server {
	sum := sha256.Sum256(image)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /good.img", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(image)))
		w.Write(image)
	})
	mux.HandleFunc("GET /short.img", func(w http.ResponseWriter, r *http.Request) {
		// Promise the whole image, send half, and hang up.
		w.Header().Set("Content-Length", strconv.Itoa(len(image)))
		w.Write(image[:len(image)/2])
		panic(http.ErrAbortHandler)
	})
	mux.HandleFunc("GET /SHA256SUMS", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%x  other.img\n%x  good.img\n", sha256.Sum256(nil), sum)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func testImage(size int) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(7, 8))
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	b[440], b[441], b[442], b[443] = 0x78, 0x56, 0x34, 0x12 // MBR disk signature
	return b
}

func writeImageStep(info map[string]any) map[string]any {
	return map[string]any{
		"step":           map[string]any{"interface": "deploy", "step": "write_image", "priority": 80, "args": map[string]any{"image_info": info}},
		"node":           map[string]any{"uuid": nodeA},
		"ports":          []any{},
		"deploy_version": hardwareManagerVersion,
	}
}

func TestWriteImage(t *testing.T) {
	image := testImage(3<<20 + 12345)
	sha := fmt.Sprintf("%x", sha256.Sum256(image))
	md := fmt.Sprintf("%x", md5.Sum(image))
	srv := imageServer(t, image)
	wrongSHA := strings.Repeat("0", 64)
	wrongMD5 := strings.Repeat("0", 32)
	tests := []struct {
		name      string
		info      map[string]any
		wantOK    bool
		wantError []string // substrings of command_error.details
	}{
		{"sha256 checksum", map[string]any{"checksum": sha}, true, nil},
		{"md5 checksum", map[string]any{"checksum": md}, true, nil},
		{"os_hash sha256", map[string]any{"os_hash_algo": "sha256", "os_hash_value": sha}, true, nil},
		{"checksum file URL", map[string]any{"checksum": srv.URL + "/SHA256SUMS"}, true, nil},
		{"404", map[string]any{"checksum": sha, "urls": []string{srv.URL + "/missing.img"}}, false,
			[]string{srv.URL + "/missing.img", "404 Not Found"}},
		{"short read", map[string]any{"checksum": sha, "urls": []string{srv.URL + "/short.img"}}, false,
			[]string{"short read", srv.URL + "/short.img", fmt.Sprintf("expected %d bytes", len(image))}},
		{"sha256 mismatch", map[string]any{"checksum": wrongSHA}, false,
			[]string{"expected sha256 " + wrongSHA, "actual " + sha}},
		{"md5 mismatch", map[string]any{"checksum": wrongMD5}, false,
			[]string{"expected md5 " + wrongMD5, "actual " + md}},
		{"second URL after a 404", map[string]any{"checksum": sha, "urls": []string{srv.URL + "/missing.img", srv.URL + "/good.img"}}, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := newScriptedIronic(t, 99)
			api.addNode(nodeA, true, macA)
			ta := startAgent(t, api, testHardware(t, macA), nil)
			ta.waitLookedUp(t)
			info := map[string]any{"id": "test-image", "urls": []string{srv.URL + "/good.img"}, "disk_format": "raw", "container_format": "bare"}
			for k, v := range tc.info {
				info[k] = v
			}
			res := ta.runCommand(t, api, "deploy.execute_deploy_step", writeImageStep(info))
			disk, err := os.ReadFile(ta.hw.Hardware().Disks[0].Path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantOK {
				if res["command_status"] != StatusSucceeded {
					t.Fatalf("status %v, error %v; want SUCCEEDED", res["command_status"], res["command_error"])
				}
				if !bytes.Equal(disk[:len(image)], image) {
					t.Errorf("disk bytes differ from the image")
				}
				want := map[string]any{
					"deploy_result": nil,
					"deploy_step":   writeImageStep(info)["step"],
				}
				if diff := cmp.Diff(roundTrip(t, want), res["command_result"]); diff != "" {
					t.Errorf("command_result (-want +got):\n%s", diff)
				}
				return
			}
			if res["command_status"] != StatusFailed {
				t.Fatalf("status %v, want FAILED", res["command_status"])
			}
			details, _ := res["command_error"].(map[string]any)["details"].(string)
			for _, s := range tc.wantError {
				if !strings.Contains(details, s) {
					t.Errorf("command_error.details = %q, want it to mention %q", details, s)
				}
			}
		})
	}
}

func TestPrepareImageAndPartitionUUIDs(t *testing.T) {
	image := testImage(1 << 20)
	srv := imageServer(t, image)
	api := newScriptedIronic(t, 99)
	api.addNode(nodeA, true, macA)
	ta := startAgent(t, api, testHardware(t, macA), func(c *Config) { c.Dialect = DialectLegacy })
	ta.waitLookedUp(t)
	info := map[string]any{"id": "img-1", "urls": []string{srv.URL + "/good.img"}, "checksum": hex.EncodeToString(md5Sum(image))}
	res := ta.runCommand(t, api, "standby.prepare_image", map[string]any{"image_info": info})
	want := map[string]any{"result": "prepare_image: image (img-1) written to device /dev/vda root_uuid=0x12345678"}
	if diff := cmp.Diff(want, res["command_result"]); diff != "" {
		t.Errorf("prepare_image result (-want +got):\n%s", diff)
	}
	_, res = ta.post(t, "standby.get_partition_uuids", map[string]any{}, true, "")
	if diff := cmp.Diff(map[string]any{"root uuid": "0x12345678"}, res["command_result"]); diff != "" {
		t.Errorf("get_partition_uuids result (-want +got):\n%s", diff)
	}
}

func TestImageInfoValidation(t *testing.T) {
	tests := []struct {
		name string
		info string
		md5  bool
		want string // substring of the error
	}{
		{"missing id", `{"urls": ["http://x/a"], "checksum": "` + strings.Repeat("a", 64) + `"}`, true, "missing id"},
		{"no urls", `{"id": "i", "urls": [], "checksum": "` + strings.Repeat("a", 64) + `"}`, true, "no urls"},
		{"no checksum", `{"id": "i", "urls": ["http://x/a"]}`, true, "no checksum"},
		{"md5 disabled", `{"id": "i", "urls": ["http://x/a"], "checksum": "` + strings.Repeat("a", 32) + `"}`, false, "md5 checksums are disabled"},
		{"odd length", `{"id": "i", "urls": ["http://x/a"], "checksum": "abcd"}`, true, "no hash algorithm"},
		{"bad os_hash_algo", `{"id": "i", "urls": ["http://x/a"], "os_hash_algo": "crc32", "os_hash_value": "aa"}`, true, "not usable"},
		{"vmdk", `{"id": "i", "urls": ["http://x/a"], "disk_format": "vmdk", "checksum": "` + strings.Repeat("a", 64) + `"}`, true, "raw and qcow2 images only"},
		{"qcow2 ok", `{"id": "i", "urls": ["http://x/a"], "disk_format": "qcow2", "checksum": "` + strings.Repeat("a", 64) + `"}`, true, ""},
		{"bad image_type", `{"id": "i", "urls": ["http://x/a"], "image_type": "lvm", "checksum": "` + strings.Repeat("a", 64) + `"}`, true, "image_type"},
		{"partition without root_mb", `{"id": "i", "urls": ["http://x/a"], "image_type": "partition", "checksum": "` + strings.Repeat("a", 64) + `"}`, true, "root_mb"},
		{"ephemeral partition", `{"id": "i", "urls": ["http://x/a"], "image_type": "partition", "root_mb": "10", "ephemeral_mb": 5, "checksum": "` + strings.Repeat("a", 64) + `"}`, true, "does not make filesystems"},
		{"sha512 ok", `{"id": "i", "urls": ["http://x/a"], "checksum": "` + strings.Repeat("a", 128) + `"}`, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseImageInfo([]byte(tc.info), tc.md5)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func md5Sum(b []byte) []byte { s := md5.Sum(b); return s[:] }
