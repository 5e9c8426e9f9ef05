package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/deploy/agent"
)

// fuzzRoutes are the API's endpoints that take a JSON body, with the
// microversion a client would send. FuzzAPIBody picks one by number.
var fuzzRoutes = []struct{ method, path, version string }{
	{"POST", "/v1/nodes", "latest"},
	{"PATCH", "/v1/nodes/node-a", "latest"},
	{"PUT", "/v1/nodes/node-a/states/provision", "latest"},
	{"PUT", "/v1/nodes/node-a/states/power", "latest"},
	{"PUT", "/v1/nodes/node-a/maintenance", "latest"},
	{"POST", "/v1/ports", "latest"},
	{"POST", "/v1/heartbeat/node-a", "1.68"},
	{"POST", "/v1/drivers/fake_agent/vendor_passthru/lookup", ""},
	{"POST", "/v1/nodes/node-a/vendor_passthru/heartbeat", ""},
	{"POST", "/v1/nodes", ""},
	{"PATCH", "/v1/nodes/node-a", "1.1"},
}

// FuzzAPIBody sends a body to one of the JSON endpoints of a fresh driver
// holding one available node (node-a) with one port. The corpus holds the
// bodies the scenario runner, the OpenStack client and the agents send. A
// body never gets a 5xx; an error is Ironic's error document; a refused
// body (4xx) leaves nodes, ports and history as they were; an accepted
// PATCH or POST answers with what a GET then shows.
func FuzzAPIBody(f *testing.F) {
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		h, d := fuzzDriver(t)
		before := apiState(t, h)
		status, res, raw := call(t, h, rt.method, rt.path, rt.version, body)
		d.Conductor().Wait()
		if status >= 500 {
			t.Fatalf("%s %s %q: %d %s", rt.method, rt.path, body, status, raw)
		}
		if status >= 400 {
			msg, ok := res["error_message"].(string)
			var fault struct{ Faultstring, Faultcode string }
			if !ok || json.Unmarshal([]byte(msg), &fault) != nil || fault.Faultstring == "" || fault.Faultcode != "Client" {
				t.Fatalf("%d with a body that is no Ironic error: %s", status, raw)
			}
			if after := apiState(t, h); after != before {
				t.Fatalf("%s %s %q was refused (%d: %s) but changed the store:\nbefore %s\nafter  %s", rt.method, rt.path, body, status, fault.Faultstring, before, after)
			}
			return
		}
		switch {
		case rt.method == "PATCH" || rt.method == "POST" && rt.path == "/v1/nodes":
			uuid, _ := res["uuid"].(string)
			_, got, graw := call(t, h, "GET", "/v1/nodes/"+uuid, rt.version, nil)
			if a, b := mustMarshal(t, res), mustMarshal(t, got); a != b {
				t.Fatalf("%s %s answered\n%s\nbut GET shows\n%s", rt.method, rt.path, a, graw)
			}
		}
	})
}

// fuzzDriver starts a driver whose agent client cannot reach the network (a
// fuzzed callback URL must not leave the host) with node-a and its port.
func fuzzDriver(t *testing.T) (http.Handler, *driver.Driver) {
	cfg := driver.DefaultConfig()
	cfg.DBPath = filepath.Join(fuzzDir(t), "ironlab.db")
	cfg.Host = "fuzz-conductor"
	cfg.LockRetryInterval = time.Millisecond
	cfg.PowerRetryInterval = time.Millisecond
	client := agent.NewClient()
	client.HTTP = &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("fuzz: no network")
		},
	}}
	client.Retries, client.RetryInterval = 0, time.Millisecond
	cfg.DeployInterfaces = map[string]deploy.Interface{"agent": agent.New(agent.Config{Client: client, PollInterval: 10 * time.Millisecond})}
	d, err := driver.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	h := d.Handler()
	for _, c := range []struct{ path, body string }{
		{"/v1/nodes", `{"name": "node-a", "driver": "fake_agent", ` + image + `, "driver_info": {"ipmi_password": "secret"}}`},
		{"/v1/ports", `{"address": "52:54:00:00:00:0a", "node_uuid": "node-a"}`},
	} {
		if status, _, raw := call(t, h, "POST", c.path, "", []byte(c.body)); status != 201 {
			t.Fatalf("set up %s: %d %s", c.path, status, raw)
		}
	}
	d.Conductor().Wait()
	return h, d
}

// fuzzDir is a fresh folder for the database, in memory where the machine
// has /dev/shm: a database per input would otherwise wait on the disk.
func fuzzDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/dev/shm", "ironlab-fuzz-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// apiState is what a user sees of the store: every node, port and event.
func apiState(t *testing.T, h http.Handler) string {
	t.Helper()
	var b strings.Builder
	_, nodes, raw := call(t, h, "GET", "/v1/nodes/detail", "latest", nil)
	b.WriteString(raw)
	_, _, raw = call(t, h, "GET", "/v1/ports/detail", "latest", nil)
	b.WriteString(raw)
	list, _ := nodes["nodes"].([]any)
	for _, n := range list {
		uuid, _ := n.(map[string]any)["uuid"].(string)
		_, _, raw = call(t, h, "GET", "/v1/nodes/"+uuid+"/events", "latest", nil)
		b.WriteString(raw)
	}
	return b.String()
}

func call(t *testing.T, h http.Handler, method, path, version string, body []byte) (int, map[string]any, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if version != "" {
		req.Header.Set("X-OpenStack-Ironic-API-Version", version)
	}
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	var res map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &res)
	return w.Code, res, w.Body.String()
}

func mustMarshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
