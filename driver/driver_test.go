package driver_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlab/ironlab/driver"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/scenarios/labtest/pgtest"
)

func config(t *testing.T, db string) driver.Config {
	cfg := driver.DefaultConfig()
	cfg.DBPath = db
	cfg.Host = "conductor-1"
	cfg.LockRetryInterval = time.Millisecond
	return cfg
}

// serve runs d on a loopback port and returns its URL and a stop function.
func serve(t *testing.T, d *driver.Driver) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, ln) }()
	return "http://" + ln.Addr().String(), func() {
		cancel()
		if err := labtest.Recv(t, done, "end of Serve after shutdown"); err != nil {
			t.Errorf("Serve returned %v after shutdown", err)
		}
	}
}

func call(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("X-OpenStack-Ironic-API-Version", "latest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestRestartKeepsNodesAndFailsInterruptedWork runs on both stores: an
// SQLite file, and a PostgreSQL DSN (what --db postgres://... selects).
func TestRestartKeepsNodesAndFailsInterruptedWork(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { restartKeepsNodes(t, filepath.Join(t.TempDir(), "ironlab.db")) })
	t.Run("postgres", func(t *testing.T) { restartKeepsNodes(t, pgtest.Start(t).NewDatabase(t)) })
}

func restartKeepsNodes(t *testing.T, db string) {
	ctx := context.Background()
	d, err := driver.New(ctx, config(t, db))
	if err != nil {
		t.Fatal(err)
	}
	url, stop := serve(t, d)
	for _, name := range []string{"waiting", "interrupted"} {
		code, _ := call(t, "POST", url+"/v1/nodes", `{"name": "`+name+`", "driver": "fake_agent",
			"instance_info": {"image_source": "http://127.0.0.1:8080/disk.raw", "image_checksum": "abc"}}`)
		if code != 201 {
			t.Fatalf("create %s: %d", name, code)
		}
		for _, verb := range []string{"manage", "provide"} {
			if code, body := call(t, "PUT", url+"/v1/nodes/"+name+"/states/provision", `{"target": "`+verb+`"}`); code != 202 {
				t.Fatalf("%s %s: %d %v", verb, name, code, body)
			}
			d.Conductor().Wait()
		}
	}
	// With automated cleaning "provide" waits for an agent in clean wait;
	// there is none here, so put the nodes in available directly.
	for _, name := range []string{"waiting", "interrupted"} {
		n, _ := d.Conductor().GetNode(ctx, name)
		n.ProvisionState = states.Available
		if err := d.Conductor().Store().UpdateNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if code, _ := call(t, "PUT", url+"/v1/nodes/waiting/states/provision", `{"target": "active"}`); code != 202 {
		t.Fatal("deploy")
	}
	d.Conductor().Wait()
	// Simulate a crash in the middle of a deploy step: state persisted as
	// deploying and the node still reserved by this host.
	st := d.Conductor().Store()
	n, _ := d.Conductor().GetNode(ctx, "interrupted")
	n.ProvisionState = states.Deploying
	if err := st.UpdateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := st.Reserve(ctx, n.UUID, "conductor-1"); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	d2, err := driver.New(ctx, config(t, db))
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	url2, stop2 := serve(t, d2)
	defer stop2()
	code, body := call(t, "GET", url2+"/v1/nodes?detail=true", "")
	if code != 200 {
		t.Fatal(code)
	}
	type row struct{ Name, State, Reservation, LastError string }
	var got []row
	for _, v := range body["nodes"].([]any) {
		m := v.(map[string]any)
		r := row{Name: m["name"].(string), State: m["provision_state"].(string)}
		if s, ok := m["reservation"].(string); ok {
			r.Reservation = s
		}
		if s, ok := m["last_error"].(string); ok {
			r.LastError = s
		}
		got = append(got, r)
	}
	want := []row{
		{Name: "waiting", State: states.DeployWait},
		{Name: "interrupted", State: states.DeployFailed,
			LastError: `Node was in "deploying" state when the conductor restarted; the operation could not continue`},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("nodes after restart (-want +got):\n%s", diff)
	}
	// The history survived too, and records the recovery.
	code, evs := call(t, "GET", url2+"/v1/nodes/interrupted/events", "")
	if code != 200 {
		t.Fatal(code)
	}
	list := evs["events"].([]any)
	last := list[len(list)-1].(map[string]any)
	if last["to_state"] != states.DeployFailed || last["from_state"] != states.Deploying {
		t.Errorf("last event after restart = %v", last)
	}
	var ev store.Event
	b, _ := json.Marshal(list[0])
	if err := json.Unmarshal(b, &ev); err != nil || ev.Event != "create" {
		t.Errorf("first event = %+v, %v", ev, err)
	}
}

func TestDefaultsListenOnLoopback(t *testing.T) {
	if got := driver.DefaultConfig().Listen; !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("default listen address %q is not loopback", got)
	}
}

// A client that connected and sent nothing, such as an HTTP client whose
// request was cancelled while it dialed and which pooled the connection,
// holds no request: stopping the driver must not wait on it. (net/http
// counts such a connection idle only after 5 s, the driver's whole grace.)
func TestShutdownDoesNotWaitOnSilentConnections(t *testing.T) {
	d, err := driver.New(t.Context(), config(t, filepath.Join(t.TempDir(), "ironlab.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	url, stop := serve(t, d)
	if code, _ := call(t, "GET", url+"/v1/nodes", ""); code != http.StatusOK {
		t.Fatalf("GET /v1/nodes: %d", code)
	}
	silent, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(50 * time.Millisecond) // accepted, and still nothing sent
	stop()                            // fails the test if Serve returns an error
	// The server hung up on it.
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := silent.Read(make([]byte, 1)); err == nil {
		t.Errorf("the silent connection read %d bytes after shutdown, want it closed", n)
	}
}
