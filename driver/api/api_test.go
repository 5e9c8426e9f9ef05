package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/driver"
	"github.com/ironlab/ironlab/driver/api"
	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/scenarios/labtest/pgtest"
)

type server struct {
	d   *driver.Driver
	url string
}

func newServer(t testing.TB, mutate func(*driver.Config)) *server {
	t.Helper()
	cfg := driver.DefaultConfig()
	cfg.DBPath = filepath.Join(t.TempDir(), "ironlab.db")
	cfg.Host = "test-conductor"
	cfg.LockRetryInterval = time.Millisecond
	cfg.PowerRetryInterval = time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	d, err := driver.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(func() {
		srv.Close()
		d.Close()
	})
	return &server{d: d, url: srv.URL}
}

type response struct {
	status int
	header http.Header
	body   string
	json   map[string]any
}

func (s *server) do(t testing.TB, method, path, version, body string) response {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.url+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if version != "" {
		req.Header.Set("X-OpenStack-Ironic-API-Version", version)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := response{status: resp.StatusCode, header: resp.Header, body: string(b)}
	_ = json.Unmarshal(b, &out.json)
	s.d.Conductor().Wait()
	return out
}

// errorMessage decodes Ironic's {"error_message": "<JSON string>"}.
func errorMessage(t testing.TB, r response) string {
	t.Helper()
	raw, ok := r.json["error_message"].(string)
	if !ok {
		t.Fatalf("error body %q lacks a string error_message", r.body)
	}
	var fault struct {
		Faultstring string `json:"faultstring"`
		Faultcode   string `json:"faultcode"`
	}
	if err := json.Unmarshal([]byte(raw), &fault); err != nil || fault.Faultstring == "" || fault.Faultcode == "" {
		t.Fatalf("error_message %q is not a JSON fault: %v", raw, err)
	}
	return fault.Faultstring
}

type step struct {
	name, method, path, version, body string
	status                            int
	// contains must appear in the error's faultstring (error statuses) or in
	// the body (others).
	contains string
}

func run(t *testing.T, s *server, steps []step) {
	t.Helper()
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			r := s.do(t, st.method, st.path, st.version, st.body)
			if r.status != st.status {
				t.Fatalf("%s %s: status %d, want %d; body %s", st.method, st.path, r.status, st.status, r.body)
			}
			got := r.body
			if r.status >= 400 {
				got = errorMessage(t, r)
			}
			if !strings.Contains(got, st.contains) {
				t.Errorf("%s %s: %q does not contain %q", st.method, st.path, got, st.contains)
			}
		})
	}
}

const image = `"instance_info": {"image_source": "http://127.0.0.1:8080/disk.raw", "image_checksum": "abc"}`

func TestNodeAndPortRoutes(t *testing.T) {
	s := newServer(t, nil)
	run(t, s, []step{
		{"root", "GET", "/", "", "", 200, `"version":"1.89"`},
		{"v1", "GET", "/v1", "", "", 200, `"media_types"`},
		{"v1 slash", "GET", "/v1/", "", "", 200, `"nodes"`},
		{"drivers", "GET", "/v1/drivers", "", "", 200, `"fake_agent"`},
		{"unknown route", "GET", "/v1/chassis", "", "", 404, "could not be found"},
		{"version above max", "GET", "/v1/nodes", "1.99", "", 406, "1.99"},
		{"major 2", "GET", "/v1/nodes", "2.0", "", 406, "2.0"},
		{"garbled version", "GET", "/v1/nodes", "one", "", 400, "X-OpenStack-Ironic-API-Version"},

		{"create node (1.1: available)", "POST", "/v1/nodes", "", `{"name": "node-a", "driver": "fake_agent", ` + image + `}`, 201, `"provision_state":"available"`},
		{"create node (latest: enroll)", "POST", "/v1/nodes", "latest", `{"name": "node-b", "driver": "fake_agent", "driver_info": {"ipmi_password": "secret"}}`, 201, `"provision_state":"enroll"`},
		{"password masked", "GET", "/v1/nodes/node-b", "", "", 200, `"ipmi_password":"******"`},
		{"duplicate name", "POST", "/v1/nodes", "", `{"name": "node-a", "driver": "fake_agent"}`, 409, "node-a"},
		{"driver missing", "POST", "/v1/nodes", "", `{"name": "node-c"}`, 400, "driver"},
		{"driver not enabled", "POST", "/v1/nodes", "", `{"name": "node-c", "driver": "agent_ipmitool"}`, 400, "driver agent_ipmitool is not enabled"},
		{"unknown driver", "POST", "/v1/nodes", "", `{"name": "node-c", "driver": "teapot"}`, 400, "driver teapot is not enabled"},
		{"malformed JSON", "POST", "/v1/nodes", "", `{"name": "node-c", "driver": `, 400, "Malformed JSON"},
		{"unknown field", "POST", "/v1/nodes", "", `{"name": "node-c", "driver": "fake_agent", "colour": "red"}`, 400, `"colour"`},
		{"wrong type", "POST", "/v1/nodes", "", `{"name": "node-c", "driver": "fake_agent", "driver_info": "x"}`, 400, `"driver_info"`},
		{"bad name", "POST", "/v1/nodes", "", `{"name": "node c", "driver": "fake_agent"}`, 400, `"name"`},
		{"empty body", "POST", "/v1/nodes", "", ``, 400, "empty"},

		{"list", "GET", "/v1/nodes", "", "", 200, `"name":"node-b"`},
		{"list filtered", "GET", "/v1/nodes?provision_state=enroll", "", "", 200, `node-b`},
		{"list detail", "GET", "/v1/nodes?detail=true&driver=fake_agent", "", "", 200, `"driver_info"`},
		{"list /detail", "GET", "/v1/nodes/detail", "", "", 200, `"driver_internal_info"`},
		{"list bad maintenance", "GET", "/v1/nodes?maintenance=perhaps", "", "", 400, "maintenance"},
		{"show by name", "GET", "/v1/nodes/node-a", "", "", 200, `"name":"node-a"`},
		{"show unknown", "GET", "/v1/nodes/node-z", "", "", 404, "node-z"},
		{"states", "GET", "/v1/nodes/node-a/states", "", "", 200, `"provision_state":"available"`},

		{"patch add", "PATCH", "/v1/nodes/node-b", "", `[{"op": "add", "path": "/driver_info/ipmi_address", "value": "127.0.0.1"}, {"op": "add", "path": "/extra/rack", "value": "r1"}]`, 200, `"ipmi_address":"127.0.0.1"`},
		{"patch replace name", "PATCH", "/v1/nodes/node-b", "", `[{"op": "replace", "path": "/name", "value": "node-bb"}]`, 200, `"name":"node-bb"`},
		{"patch remove", "PATCH", "/v1/nodes/node-bb", "", `[{"op": "remove", "path": "/extra/rack"}]`, 200, `"extra":{}`},
		{"patch read-only", "PATCH", "/v1/nodes/node-bb", "", `[{"op": "replace", "path": "/provision_state", "value": "active"}]`, 400, "/provision_state"},
		{"patch missing key", "PATCH", "/v1/nodes/node-bb", "", `[{"op": "replace", "path": "/extra/nope", "value": 1}]`, 400, "/extra/nope"},
		{"patch bad op", "PATCH", "/v1/nodes/node-bb", "", `[{"op": "move", "path": "/extra/a"}]`, 400, "move"},
		{"patch not a list", "PATCH", "/v1/nodes/node-bb", "", `{"op": "add"}`, 400, "expected"},
		{"patch wrong type", "PATCH", "/v1/nodes/node-bb", "", `[{"op": "replace", "path": "/maintenance", "value": "yes"}]`, 400, "maintenance"},
		{"patch unknown node", "PATCH", "/v1/nodes/nope", "", `[{"op": "add", "path": "/extra/a", "value": 1}]`, 404, "nope"},

		{"port create", "POST", "/v1/ports", "", `{"address": "52:54:00:AA:00:01", "node_uuid": "node-a"}`, 201, `"address":"52:54:00:aa:00:01"`},
		{"port duplicate", "POST", "/v1/ports", "", `{"address": "52:54:00:aa:00:01", "node_uuid": "node-bb"}`, 409, "52:54:00:aa:00:01"},
		{"port bad MAC", "POST", "/v1/ports", "", `{"address": "52:54:00", "node_uuid": "node-a"}`, 400, "MAC"},
		{"port unknown node", "POST", "/v1/ports", "", `{"address": "52:54:00:aa:00:02", "node_uuid": "node-z"}`, 400, "node_uuid"},
		{"port no address", "POST", "/v1/ports", "", `{"node_uuid": "node-a"}`, 400, "address"},
		{"port unknown field", "POST", "/v1/ports", "", `{"address": "52:54:00:aa:00:02", "node_uuid": "node-a", "vlan": 3}`, 400, "vlan"},
		{"port wrong type", "POST", "/v1/ports", "", `{"address": "52:54:00:aa:00:02", "node_uuid": "node-a", "pxe_enabled": "yes"}`, 400, "pxe_enabled"},
		{"ports by node", "GET", "/v1/ports?node=node-a", "", "", 200, "52:54:00:aa:00:01"},
		{"ports by address", "GET", "/v1/ports?address=52-54-00-AA-00-01&detail=true", "", "", 200, `"node_uuid"`},
		{"ports of unknown node", "GET", "/v1/ports?node=node-z", "", "", 404, "node-z"},
		{"node ports", "GET", "/v1/nodes/node-a/ports", "", "", 200, "52:54:00:aa:00:01"},
		{"port unknown", "GET", "/v1/ports/3f2b0c4e-0000-4000-8000-000000000000", "", "", 404, "3f2b0c4e"},

		{"provision unknown verb", "PUT", "/v1/nodes/node-a/states/provision", "", `{"target": "fly"}`, 400, "fly"},
		{"provision refused in state", "PUT", "/v1/nodes/node-bb/states/provision", "", `{"target": "active"}`, 400, `while it is in state "enroll"`},
		{"provision clean without steps", "PUT", "/v1/nodes/node-bb/states/provision", "", `{"target": "clean"}`, 400, "clean_steps"},
		{"provision no target", "PUT", "/v1/nodes/node-a/states/provision", "", `{}`, 400, "target"},
		{"provision wrong type", "PUT", "/v1/nodes/node-a/states/provision", "", `{"target": 3}`, 400, "target"},
		{"provision unknown node", "PUT", "/v1/nodes/node-z/states/provision", "", `{"target": "manage"}`, 404, "node-z"},
		{"rescue needs 1.38", "PUT", "/v1/nodes/node-a/states/provision", "1.37", `{"target": "rescue", "rescue_password": "pw"}`, 406, "1.38"},
		{"unrescue needs 1.38", "PUT", "/v1/nodes/node-a/states/provision", "", `{"target": "unrescue"}`, 406, "1.38"},
		{"rescue without password", "PUT", "/v1/nodes/node-a/states/provision", "1.38", `{"target": "rescue"}`, 400, `A non-empty "rescue_password" is required`},
		{"rescue empty password", "PUT", "/v1/nodes/node-a/states/provision", "1.38", `{"target": "rescue", "rescue_password": ""}`, 400, `non-empty`},
		{"rescue_password with manage", "PUT", "/v1/nodes/node-a/states/provision", "1.38", `{"target": "manage", "rescue_password": "pw"}`, 400, `only valid`},
		{"rescue refused in state", "PUT", "/v1/nodes/node-a/states/provision", "1.38", `{"target": "rescue", "rescue_password": "pw"}`, 400, `while it is in state "available"`},
		{"rescue interface", "GET", "/v1/nodes/node-a", "", "", 200, `"rescue_interface":"agent"`},
		{"manage", "PUT", "/v1/nodes/node-bb/states/provision", "", `{"target": "manage"}`, 202, ""},
		{"managed", "GET", "/v1/nodes/node-bb", "", "", 200, `"provision_state":"manageable"`},

		{"power bad target", "PUT", "/v1/nodes/node-a/states/power", "", `{"target": "power sideways"}`, 400, "power sideways"},
		{"power on", "PUT", "/v1/nodes/node-a/states/power", "", `{"target": "power on"}`, 202, ""},
		{"powered on", "GET", "/v1/nodes/node-a/states", "", "", 200, `"power_state":"power on"`},

		{"maintenance on", "PUT", "/v1/nodes/node-a/maintenance", "", `{"reason": "fan noise"}`, 202, ""},
		{"maintenance shown", "GET", "/v1/nodes/node-a", "", "", 200, `"maintenance_reason":"fan noise"`},
		{"maintenance bad body", "PUT", "/v1/nodes/node-a/maintenance", "", `{"why": "x"}`, 400, "why"},
		{"maintenance off", "DELETE", "/v1/nodes/node-a/maintenance", "", "", 202, ""},
		{"maintenance off shown", "GET", "/v1/nodes?maintenance=false", "", "", 200, "node-a"},

		{"history needs 1.78", "GET", "/v1/nodes/node-a/history", "", "", 404, "1.78"},
		{"history", "GET", "/v1/nodes/node-a/history", "1.78", "", 200, `"event_type":"power"`},
		{"events", "GET", "/v1/nodes/node-a/events", "", "", 200, `"kind":"maintenance"`},
		{"events unknown", "GET", "/v1/nodes/node-z/events", "", "", 404, "node-z"},

		{"delete refused while deploying", "PUT", "/v1/nodes/node-a/states/provision", "", `{"target": "active"}`, 202, ""},
		{"delete node in wait call-back", "DELETE", "/v1/nodes/node-a", "", "", 409, "wait call-back"},
		{"delete node", "DELETE", "/v1/nodes/node-bb", "", "", 204, ""},
		{"deleted", "GET", "/v1/nodes/node-bb", "", "", 404, "node-bb"},
		{"port delete", "DELETE", "/v1/ports/3f2b0c4e-0000-4000-8000-000000000000", "", "", 404, "3f2b0c4e"},
	})
}

func TestVersionHeaders(t *testing.T) {
	s := newServer(t, nil)
	tests := []struct {
		send, want string
		status     int
	}{
		{"", "1.1", 200},
		{"1.62", "1.62", 200},
		{"latest", "1.89", 200},
		{"1.0", "", 406},
		{"1.90", "", 406},
		{"01.0068", "1.68", 200},
		{"1.99999999999999999999", "", 406},
		{"1.x", "", 400},
		{"1.", "", 400},
		{".62", "", 400},
		{"1.6.2", "", 400},
		{"+1.62", "", 400},
	}
	for _, tc := range tests {
		t.Run("version "+tc.send, func(t *testing.T) {
			r := s.do(t, "GET", "/v1/nodes", tc.send, "")
			got := []string{r.header.Get("X-OpenStack-Ironic-API-Minimum-Version"), r.header.Get("X-OpenStack-Ironic-API-Maximum-Version"), r.header.Get("X-OpenStack-Ironic-API-Version")}
			if diff := cmp.Diff([]string{"1.1", "1.89", tc.want}, got); diff != "" || r.status != tc.status {
				t.Errorf("status %d (want %d), headers (-want +got):\n%s", r.status, tc.status, diff)
			}
		})
	}
}

func TestLegacyVendorPassthru(t *testing.T) {
	s := newServer(t, nil)
	for _, b := range []string{
		`{"name": "node-a", "driver": "fake_agent"}`, `{"name": "node-b", "driver": "fake_agent"}`,
	} {
		if r := s.do(t, "POST", "/v1/nodes", "", b); r.status != 201 {
			t.Fatal(r.body)
		}
	}
	for _, b := range []string{
		`{"address": "52:54:00:00:00:0a", "node_uuid": "node-a"}`, `{"address": "52:54:00:00:00:0b", "node_uuid": "node-b"}`,
	} {
		if r := s.do(t, "POST", "/v1/ports", "", b); r.status != 201 {
			t.Fatal(r.body)
		}
	}
	inv := func(version string, macs ...string) string {
		var ifs []string
		for _, m := range macs {
			ifs = append(ifs, `{"name": "eth0", "mac_address": "`+m+`"}`)
		}
		v := ""
		if version != "" {
			v = `"version": ` + version + `, `
		}
		return `{` + v + `"inventory": {"interfaces": [` + strings.Join(ifs, ",") + `], "cpu": {"count": 2}, "disks": [], "memory": {"total": 1}}}`
	}
	lookup := "/v1/drivers/fake_agent/vendor_passthru/lookup"
	run(t, s, []step{
		{"lookup version number", "POST", lookup, "", inv("2", "52:54:00:00:00:0A"), 200, `"heartbeat_timeout":300`},
		{"lookup version string", "POST", lookup, "", inv(`"2"`, "52:54:00:00:00:0a"), 200, `"name":"node-a"`},
		{"lookup ?method=", "POST", "/v1/drivers/fake_agent/vendor_passthru?method=lookup", "", inv("2", "52:54:00:00:00:0a"), 200, `"uuid"`},
		{"lookup version 3", "POST", lookup, "", inv("3", "52:54:00:00:00:0a"), 400, "version"},
		{"lookup version missing", "POST", lookup, "", inv("", "52:54:00:00:00:0a"), 400, "version"},
		{"lookup unknown MAC", "POST", lookup, "", inv("2", "52:54:00:00:00:0c"), 404, "52:54:00:00:00:0c"},
		{"lookup MACs of two nodes", "POST", lookup, "", inv("2", "52:54:00:00:00:0a", "52:54:00:00:00:0b"), 404, "more than one node"},
		{"lookup unknown driver", "POST", "/v1/drivers/teapot/vendor_passthru/lookup", "", inv("2", "52:54:00:00:00:0a"), 404, "teapot"},
		{"lookup malformed", "POST", lookup, "", `{"version": 2, `, 400, "Malformed JSON"},
		{"lookup unknown field", "POST", lookup, "", `{"version": 2, "inventory": {"interfaces": []}, "hw": 1}`, 400, "hw"},
		{"heartbeat", "POST", "/v1/nodes/node-a/vendor_passthru/heartbeat", "", `{"agent_url": "http://127.0.0.1:9999/"}`, 202, ""},
		{"heartbeat recorded in driver_info", "GET", "/v1/nodes/node-a", "", "", 200, `"agent_url":"http://127.0.0.1:9999"`},
		{"heartbeat ?method=", "POST", "/v1/nodes/node-a/vendor_passthru?method=heartbeat", "", `{"agent_url": "http://127.0.0.1:9999"}`, 202, ""},
		{"heartbeat unknown node", "POST", "/v1/nodes/4b6a3d64-0000-4000-8000-000000000000/vendor_passthru/heartbeat", "", `{"agent_url": "http://127.0.0.1:9999"}`, 404, "4b6a3d64"},
		{"heartbeat no agent_url", "POST", "/v1/nodes/node-a/vendor_passthru/heartbeat", "", `{}`, 400, "agent_url"},
		{"heartbeat wrong type", "POST", "/v1/nodes/node-a/vendor_passthru/heartbeat", "", `{"agent_url": 9999}`, 400, "agent_url"},
		{"unknown vendor method", "POST", "/v1/nodes/node-a/vendor_passthru/reboot_agent", "", `{}`, 400, "reboot_agent"},
	})
	n, _ := s.d.Conductor().GetNode(context.Background(), "node-b")
	if err := s.d.Conductor().Store().Reserve(context.Background(), n.UUID, "other-conductor"); err != nil {
		t.Fatal(err)
	}
	run(t, s, []step{
		{"heartbeat locked node", "POST", "/v1/nodes/" + n.UUID + "/vendor_passthru/heartbeat", "", `{"agent_url": "http://127.0.0.1:9998"}`, 409, "locked"},
		{"deploy locked node", "PUT", "/v1/nodes/node-b/states/provision", "", `{"target": "manage"}`, 409, "locked"},
	})
}

func TestModernLookupAndHeartbeat(t *testing.T) {
	s := newServer(t, nil)
	r := s.do(t, "POST", "/v1/nodes", "", `{"name": "node-a", "driver": "fake_agent", `+image+`}`)
	if r.status != 201 {
		t.Fatal(r.body)
	}
	id := r.json["uuid"].(string)
	s.do(t, "POST", "/v1/ports", "", `{"address": "52:54:00:00:00:0a", "node_uuid": "node-a"}`)
	lookup := "/v1/lookup?addresses=52:54:00:00:00:0a,zz"
	run(t, s, []step{
		{"lookup below 1.22", "GET", lookup, "", "", 404, "1.22"},
		{"lookup restricted (available)", "GET", lookup, "1.62", "", 404, "available"},
		{"lookup without addresses", "GET", "/v1/lookup?addresses=zz", "1.62", "", 400, "addresses"},
		{"lookup bad node_uuid", "GET", "/v1/lookup?node_uuid=nope", "1.62", "", 400, "node_uuid"},
		{"deploy", "PUT", "/v1/nodes/node-a/states/provision", "", `{"target": "active"}`, 202, ""},
		{"lookup at 1.22 has no token", "GET", lookup, "1.22", "", 200, `"heartbeat_timeout":300`},
	})
	if r := s.do(t, "GET", lookup, "1.22", ""); strings.Contains(r.body, "agent_token") {
		t.Errorf("lookup at 1.22 hands out a token: %s", r.body)
	}
	r = s.do(t, "GET", lookup, "1.62", "")
	if r.status != 200 {
		t.Fatal(r.body)
	}
	cfg := r.json["config"].(map[string]any)
	token, _ := cfg["agent_token"].(string)
	if len(token) != 43 || cfg["agent_token_required"] != true || r.json["node"].(map[string]any)["uuid"] != id {
		t.Fatalf("lookup answer = %s", r.body)
	}
	hb := "/v1/heartbeat/" + id
	body := func(url, token, extra string) string {
		return `{"callback_url": "` + url + `", "agent_token": "` + token + `"` + extra + `}`
	}
	const agentURL = "http://127.0.0.1:1" // nothing listens: the call-back fails quietly in the background
	run(t, s, []step{
		{"second lookup masks the token", "GET", lookup, "1.62", "", 200, `"agent_token":"******"`},
		{"heartbeat below 1.22", "POST", hb, "1.1", body(agentURL, token, `, "agent_version": "10"`), 404, "1.22"},
		{"heartbeat without token", "POST", hb, "1.68", `{"callback_url": "` + agentURL + `", "agent_version": "10"}`, 400, "agent_token"},
		{"heartbeat wrong token", "POST", hb, "1.68", body(agentURL, "forged", `, "agent_version": "10"`), 400, "token"},
		{"heartbeat agent_version below 1.36", "POST", hb, "1.22", body(agentURL, token, `, "agent_version": "10"`), 400, "agent_version"},
		{"heartbeat agent_verify_ca below 1.68", "POST", hb, "1.62", body(agentURL, token, `, "agent_version": "10", "agent_verify_ca": "pem"`), 400, "agent_verify_ca"},
		{"heartbeat without agent_version", "POST", hb, "1.68", body(agentURL, token, ""), 400, "agent_version"},
		{"heartbeat unknown field", "POST", hb, "1.68", body(agentURL, token, `, "agent_version": "10", "mood": "ok"`), 400, "mood"},
		{"heartbeat not http", "POST", hb, "1.68", body("ftp://127.0.0.1:1", token, `, "agent_version": "10"`), 400, "callback_url"},
		{"heartbeat unknown node", "POST", "/v1/heartbeat/node-z", "1.68", body(agentURL, token, `, "agent_version": "10"`), 404, "node-z"},
		{"heartbeat", "POST", hb, "1.68", body(agentURL, token, `, "agent_version": "10"`), 202, ""},
		{"heartbeat changed callback", "POST", hb, "1.68", body("http://127.0.0.1:2", token, `, "agent_version": "10"`), 400, "callback_url"},
	})
}

// BenchmarkHeartbeat measures the heartbeat path, API handler to store, for
// an agent kept running on an available node (record only, no call-back),
// on each store: SQLite and PostgreSQL (a server of its own on loopback;
// without PostgreSQL /postgres skips, as tests do, and fails under CI).
func BenchmarkHeartbeat(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchmarkHeartbeat(b, "", "") })
	// An auto-TLS agent (IPA with agent_verify_ca) sends its certificate
	// with every heartbeat.
	b.Run("sqlite-verify-ca", func(b *testing.B) { benchmarkHeartbeat(b, "", selfSigned(b)) })
	// One server for every round of /postgres (a sub-benchmark function runs
	// once per b.N tried, with its cleanups after each); each round gets an
	// empty database of its own.
	var srv *pgtest.Server
	if _, err := pgtest.BinDir(); err == nil {
		srv = pgtest.Start(b)
	}
	b.Run("postgres", func(b *testing.B) {
		if srv == nil {
			pgtest.Require(b)
		}
		benchmarkHeartbeat(b, srv.NewDatabase(b), "")
	})
}

func benchmarkHeartbeat(b *testing.B, dsn, ca string) {
	s := newServer(b, func(c *driver.Config) {
		c.FastTrack = true
		if dsn != "" {
			c.DBPath = dsn
		}
	})
	r := s.do(b, "POST", "/v1/nodes", "", `{"name": "node-a", "driver": "fake_agent"}`)
	id := r.json["uuid"].(string)
	s.do(b, "POST", "/v1/ports", "", `{"address": "52:54:00:00:00:0a", "node_uuid": "node-a"}`)
	r = s.do(b, "GET", "/v1/lookup?addresses=52:54:00:00:00:0a", "1.62", "")
	token := r.json["config"].(map[string]any)["agent_token"].(string)
	h := s.d.Handler()
	body := `{"callback_url": "http://127.0.0.1:9999", "agent_token": "` + token + `", "agent_version": "10.0.0"}`
	if ca != "" {
		caJSON, _ := json.Marshal(ca)
		body = `{"callback_url": "https://127.0.0.1:9999", "agent_token": "` + token + `", "agent_version": "10.0.0", "agent_verify_ca": ` + string(caJSON) + `}`
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest("POST", "/v1/heartbeat/"+id, strings.NewReader(body))
		req.Header.Set("X-OpenStack-Ironic-API-Version", "1.68")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusAccepted {
			b.Fatalf("heartbeat: %d %s", w.Code, w.Body)
		}
	}
}

// python-ironicclient asks for collection URLs with a trailing slash
// (/v1/ports/?node=...); they are the same routes, answered, not redirected.
func TestTrailingSlashIsTheSameRoute(t *testing.T) {
	s := newServer(t, nil)
	s.do(t, http.MethodPost, "/v1/nodes", "1.78", `{"name": "n1", "driver": "fake_agent"}`)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/v1/nodes/", "/v1/ports/?node=n1", "/v1/"} {
		req, _ := http.NewRequest(http.MethodGet, s.url+path, nil)
		req.Header.Set("X-OpenStack-Ironic-API-Version", "1.78")
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d, want 200", path, resp.StatusCode)
		}
	}
}

// The lab extension GET /v1/lab/process reports this process's pid and
// CPU time, which only grows.
func TestLabProcessReportsCPUTime(t *testing.T) {
	s := newServer(t, nil)
	read := func() (int, float64) {
		r := s.do(t, http.MethodGet, "/v1/lab/process", "", "")
		if r.status != http.StatusOK {
			t.Fatalf("GET /v1/lab/process: %d %s", r.status, r.body)
		}
		pid, _ := r.json["pid"].(float64)
		cpu, ok := r.json["cpu_seconds"].(float64)
		if !ok {
			t.Fatalf("GET /v1/lab/process: no cpu_seconds in %s", r.body)
		}
		return int(pid), cpu
	}
	pid, a := read()
	if pid != os.Getpid() {
		t.Errorf("pid %d, want this process's %d", pid, os.Getpid())
	}
	x := 0
	for i := 0; i < 50_000_000; i++ {
		x += i % 7
	}
	_ = x
	if _, b := read(); b < a || b == 0 {
		t.Errorf("CPU time %.3fs then %.3fs: want it above zero and never back", a, b)
	}
}

// TestListNodesFields: ?fields= answers exactly the fields asked for, the
// same values as the detail list (from the node's columns alone when every
// field is one, from the whole node when one is a JSON field), and refuses
// unknown fields and fields with detail, as Ironic does.
func TestListNodesFields(t *testing.T) {
	s := newServer(t, nil)
	for version, body := range map[string]string{
		"":       `{"name": "node-a", "driver": "fake_agent", "driver_info": {"ipmi_password": "secret", "deploy_kernel": "k"}, ` + image + `}`,
		"latest": `{"name": "node-b", "driver": "fake_agent"}`,
	} {
		if r := s.do(t, "POST", "/v1/nodes", version, body); r.status != 201 {
			t.Fatalf("create node: %d %s", r.status, r.body)
		}
	}
	detail := s.do(t, "GET", "/v1/nodes/detail", "latest", "")
	byName := map[string]map[string]any{}
	for _, n := range detail.json["nodes"].([]any) {
		d := n.(map[string]any)
		byName[d["name"].(string)] = d
	}
	for _, fields := range [][]string{
		{"uuid", "name", "provision_state", "target_provision_state", "power_state", "maintenance", "last_error", "reservation", "created_at"},
		{"name", "driver_info", "provision_state"},
	} {
		r := s.do(t, "GET", "/v1/nodes?fields="+strings.Join(fields, ","), "latest", "")
		if r.status != 200 {
			t.Fatalf("fields %v: %d %s", fields, r.status, r.body)
		}
		nodes, _ := r.json["nodes"].([]any)
		if len(nodes) != 2 {
			t.Fatalf("fields %v: %d nodes, want 2: %s", fields, len(nodes), r.body)
		}
		for _, n := range nodes {
			d := n.(map[string]any)
			if len(d) != len(fields) {
				t.Errorf("fields %v: node has %d fields: %v", fields, len(d), d)
			}
			want := byName[fmt.Sprint(d["name"])]
			for _, f := range fields {
				if got, w := fmt.Sprint(d[f]), fmt.Sprint(want[f]); got != w {
					t.Errorf("fields %v: node %v field %s = %s, detail says %s", fields, d["name"], f, got, w)
				}
			}
		}
	}
	if r := s.do(t, "GET", "/v1/nodes?fields=name,driver_info", "latest", ""); !strings.Contains(r.body, `"ipmi_password":"******"`) || strings.Contains(r.body, "secret") {
		t.Errorf("driver_info through fields is not masked: %s", r.body)
	}
	run(t, s, []step{
		{"unknown field", "GET", "/v1/nodes?fields=name,colour", "latest", "", 400, `"colour"`},
		{"fields with detail", "GET", "/v1/nodes?fields=name&detail=true", "latest", "", 400, "detail"},
		{"no field named", "GET", "/v1/nodes?fields=", "latest", "", 400, "fields"},
		{"filter and fields", "GET", "/v1/nodes?provision_state=enroll&fields=name", "latest", "", 200, `{"nodes":[{"name":"node-b"}]}`},
	})
}

// TestGetNodeFields: GET /v1/nodes/{ident}?fields= (Ironic's, API 1.8)
// answers exactly the fields asked for, the values of the whole node, and
// refuses what the list refuses; without it, every field.
func TestGetNodeFields(t *testing.T) {
	s := newServer(t, nil)
	if r := s.do(t, "POST", "/v1/nodes", "latest", `{"name": "node-a", "driver": "fake_agent", "driver_info": {"ipmi_password": "secret"}}`); r.status != 201 {
		t.Fatalf("create node: %d %s", r.status, r.body)
	}
	whole := s.do(t, "GET", "/v1/nodes/node-a", "latest", "")
	if whole.status != 200 || whole.json["driver"] != "fake_agent" || whole.json["links"] == nil {
		t.Fatalf("the whole node: %d %s", whole.status, whole.body)
	}
	for _, fields := range [][]string{
		{"provision_state", "target_provision_state"},
		{"uuid", "driver_info", "maintenance"},
	} {
		r := s.do(t, "GET", "/v1/nodes/node-a?fields="+strings.Join(fields, ","), "latest", "")
		if r.status != 200 || len(r.json) != len(fields) {
			t.Fatalf("fields %v: %d %s", fields, r.status, r.body)
		}
		for _, f := range fields {
			if got, w := fmt.Sprint(r.json[f]), fmt.Sprint(whole.json[f]); got != w {
				t.Errorf("fields %v: %s = %s, the whole node says %s", fields, f, got, w)
			}
		}
	}
	run(t, s, []step{
		{"states only", "GET", "/v1/nodes/node-a?fields=provision_state,target_provision_state", "latest", "", 200, `{"provision_state":"enroll","target_provision_state":null}`},
		{"driver_info masked", "GET", "/v1/nodes/node-a?fields=driver_info", "latest", "", 200, `******`},
		{"unknown field", "GET", "/v1/nodes/node-a?fields=name,colour", "latest", "", 400, `"colour"`},
		{"no field named", "GET", "/v1/nodes/node-a?fields=,", "latest", "", 400, "fields"},
		{"no such node", "GET", "/v1/nodes/node-z?fields=name", "latest", "", 404, "node-z"},
	})
}

// TestColumnFieldsAreInEveryNodeDocument: ?fields= takes a column field
// without building a node's document to check its name, so each must be
// in the document at every API version that has ?fields=.
func TestColumnFieldsAreInEveryNodeDocument(t *testing.T) {
	s := newServer(t, nil)
	if r := s.do(t, "POST", "/v1/nodes", "latest", `{"name": "node-a", "driver": "fake_agent"}`); r.status != 201 {
		t.Fatalf("create node: %d %s", r.status, r.body)
	}
	for _, version := range []string{"1.8", "1.48", "latest"} {
		r := s.do(t, "GET", "/v1/nodes/node-a", version, "")
		for name := range api.ColumnFields {
			if _, ok := r.json[name]; !ok {
				t.Errorf("API %s: the node's document has no %q: %s", version, name, r.body)
			}
		}
	}
}

// TestColumnsJSON: the list of column fields written by hand is what
// encoding/json writes for the same maps, strings that need escapes
// included, and a field asked for twice is answered once.
func TestColumnsJSON(t *testing.T) {
	for _, s := range []string{"", "node-1", `a"b`, `back\slash`, "tab\there", "<b>&</b>", "ünïcode", "bad\xffutf8", "\u2028"} {
		want, _ := json.Marshal(s)
		if got := api.AppendJSONString(nil, s); string(got) != string(want) {
			t.Errorf("api.AppendJSONString(%q) = %s, encoding/json writes %s", s, got, want)
		}
	}
	nodes := []*store.Node{
		{UUID: "u-1", Name: "n-1", ProvisionState: "active", PowerState: "power on", Maintenance: true, LastError: `failed: "x" <y>`},
		{UUID: "u-2", ProvisionState: "enroll"},
	}
	fields := []string{"uuid", "name", "provision_state", "target_provision_state", "power_state", "maintenance", "last_error", "name"}
	var got, want any
	if err := json.Unmarshal(api.ColumnsJSON(nodes, fields), &got); err != nil {
		t.Fatalf("columnsJSON is not JSON: %v", err)
	}
	var list []map[string]any
	for _, n := range nodes {
		d := map[string]any{}
		for _, f := range fields {
			d[f] = api.ColumnFields[f](n)
		}
		list = append(list, d)
	}
	b, _ := json.Marshal(map[string]any{"nodes": list})
	_ = json.Unmarshal(b, &want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("columnsJSON differs from encoding/json (-want +got):\n%s", diff)
	}
	if n := strings.Count(string(api.ColumnsJSON(nodes[:1], fields)), `"name":`); n != 1 {
		t.Errorf("a field asked for twice is written %d times, want once", n)
	}
}

// The lab extension PUT /v1/lab/profile begins the CPU profile's next
// piece in a driver that writes one, says which file it goes to, and
// refuses a bad name, a name used before and a bad body with the status
// and the reason; a driver that writes no profile answers 404.
func TestLabProfileBeginsAPiece(t *testing.T) {
	if r := newServer(t, nil).do(t, http.MethodPut, "/v1/lab/profile", "", `{"name": "deploy"}`); r.status != http.StatusNotFound ||
		!strings.Contains(r.body, "--cpuprofile") {
		t.Errorf("without a profile: %d %s, want 404 saying how to start one", r.status, r.body)
	}
	var pieces []string
	s := newServer(t, func(c *driver.Config) {
		c.Profiler = func(name string) (string, error) {
			switch {
			case name == "Bad":
				return "", fmt.Errorf("%w: %q", api.ErrProfileName, name)
			case slices.Contains(pieces, name):
				return "", fmt.Errorf("%w: %q", api.ErrProfilePieceExists, name)
			}
			pieces = append(pieces, name)
			return "/p/driver." + name + ".cpu", nil
		}
	})
	for _, c := range []struct {
		body   string
		status int
		want   string
	}{
		{`{"name": "deploy"}`, http.StatusOK, `"file":"/p/driver.deploy.cpu"`},
		{`{"name": "deploy"}`, http.StatusConflict, `written already: \\\"deploy\\\"`},
		{`{"name": "Bad"}`, http.StatusBadRequest, `invalid CPU profile piece name`},
		{`{"name": `, http.StatusBadRequest, `Invalid body`},
		{`{"name": "after-deploy"}`, http.StatusOK, `"file":"/p/driver.after-deploy.cpu"`},
	} {
		r := s.do(t, http.MethodPut, "/v1/lab/profile", "", c.body)
		if r.status != c.status || !strings.Contains(r.body, c.want) {
			t.Errorf("PUT /v1/lab/profile %s: %d %s, want %d with %s", c.body, r.status, r.body, c.status, c.want)
		}
	}
	if want := []string{"deploy", "after-deploy"}; !cmp.Equal(pieces, want) {
		t.Errorf("pieces begun %v, want %v", pieces, want)
	}
}
