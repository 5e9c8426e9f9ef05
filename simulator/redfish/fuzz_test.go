package redfish

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/simulator/fake"
)

var fuzzMethods = []string{"GET", "PATCH", "POST", "DELETE", "PUT", "HEAD"}

// FuzzRedfish sends arbitrary requests through the service's handler (no
// socket). Whatever comes in: never a 5xx, never a panic, a JSON body in
// the DMTF error shape for every 4xx, and a refused request changes
// nothing the system shows. testdata/fuzz/FuzzRedfish holds the requests
// sushy, gofish and redfishtool send, plus broken ones.
func FuzzRedfish(f *testing.F) {
	svc, err := New(Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer svc.Close()
	m, err := fake.New(fake.Options{Name: "node-0", UUID: fuzzUUID, Hardware: testHardware(f.TempDir(), 0)})
	if err != nil {
		f.Fatal(err)
	}
	defer m.Close()
	if _, err := svc.Add(m); err != nil {
		f.Fatal(err)
	}
	sys := "/redfish/v1/Systems/" + fuzzUUID
	f.Add(uint8(1), sys, `{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}`, "")
	f.Add(uint8(2), sys+"/Actions/ComputerSystem.Reset", `{"ResetType":"ForceRestart"}`, "")
	f.Add(uint8(1), sys, `{"Boot":{"BootSourceOverrideMode":"Legacy"}}`, `W/"0"`)

	get := func(path string) (int, []byte) {
		r := httptest.NewRequest("GET", path, nil)
		r.SetBasicAuth("admin", "password")
		w := httptest.NewRecorder()
		svc.ServeHTTP(w, r)
		return w.Code, w.Body.Bytes()
	}
	snapshot := func() string {
		var b strings.Builder
		for _, p := range []string{sys, sys + "/Bios", sys + "/Bios/Settings", sys + "/SecureBoot", "/redfish/v1/Managers/" + fuzzUUID + "/VirtualMedia/Cd", "/redfish/v1/Managers/" + fuzzUUID + "/VirtualMedia/Floppy"} {
			_, body := get(p)
			b.Write(body)
		}
		fmt.Fprintf(&b, "%q", m.Media())
		return b.String()
	}

	f.Fuzz(func(t *testing.T, method uint8, path, body, ifMatch string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		r, err := http.NewRequest(fuzzMethods[int(method)%len(fuzzMethods)], "http://127.0.0.1"+path, strings.NewReader(body))
		if err != nil {
			return // not a request a client can send
		}
		r.SetBasicAuth("admin", "password")
		if ifMatch != "" {
			r.Header.Set("If-Match", ifMatch)
		}
		before := snapshot()
		w := httptest.NewRecorder()
		svc.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", r.Method, path, body, w.Code, w.Body.Bytes())
		}
		if w.Code >= 400 {
			var e struct {
				Error struct {
					Code  string            `json:"code"`
					Infos []json.RawMessage `json:"@Message.ExtendedInfo"`
				} `json:"error"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error.Code == "" || len(e.Error.Infos) == 0 {
				t.Fatalf("%s %s: %d without a Redfish error body: %q", r.Method, path, w.Code, w.Body.Bytes())
			}
			if after := snapshot(); after != before {
				t.Fatalf("%s %s %q refused with %d but changed the system:\n%s\n---\n%s", r.Method, path, body, w.Code, before, after)
			}
			return
		}
		if w.Code >= 300 {
			return // the mux's redirect of unclean paths
		}
		if w.Body.Len() > 0 && r.Method != "HEAD" && !bytes.HasPrefix(w.Body.Bytes(), []byte("<?xml")) && !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %s: %d with a body that is not JSON: %q", r.Method, path, w.Code, w.Body.Bytes())
		}
	})
}

const fuzzUUID = "8d4c2b1a-0000-4000-8000-00000000f022"
