package ironic_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver"
	"github.com/ironlab/ironlab/scenarios/ironic"
)

// The client against the built-in driver's API: version negotiation,
// enrollment, reads, a patch, a verb, the event history, error answers
// with Ironic's faultstring, and the lab's process extension.
func TestClientAgainstTheBuiltinDriver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := driver.DefaultConfig()
	cfg.DBPath = filepath.Join(t.TempDir(), "ironlab.db")
	d, err := driver.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(func() { srv.Close(); d.Close() })

	c, err := ironic.New(ctx, srv.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Version() != ironic.MaxVersion || c.URL() != srv.URL {
		t.Errorf("version %q at %q, want %s at %s", c.Version(), c.URL(), ironic.MaxVersion, srv.URL)
	}
	n, err := c.CreateNode(ctx, map[string]any{"name": "n-0", "driver": "fake_agent"})
	if err != nil {
		t.Fatal(err)
	}
	if n.UUID == "" || n.ProvisionState != "enroll" || !n.Settled() || n.Error() != "" {
		t.Errorf("created node %+v", n)
	}
	if err := c.CreatePort(ctx, n.UUID, "52:54:00:00:00:01"); err != nil {
		t.Fatal(err)
	}
	if err := c.Patch(ctx, "n-0", []map[string]any{{"op": "add", "path": "/extra/rack", "value": "r1"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Provision(ctx, n.UUID, map[string]any{"target": "manage"}); err != nil {
		t.Fatal(err)
	}
	all, err := c.Nodes(ctx)
	if err != nil || len(all) != 1 || all[0].Name != "n-0" {
		t.Fatalf("nodes: %+v, %v", all, err)
	}
	evs, err := c.Events(ctx, n.UUID)
	if err != nil || len(evs) < 2 || !strings.Contains(string(evs[1]), `"event":"manage"`) {
		t.Errorf("events after create and manage (%v): %s", err, evs)
	}
	_, err = c.Node(ctx, "no-such-node")
	if !ironic.IsStatus(err, http.StatusNotFound) {
		t.Fatalf("unknown node: %v, want a 404", err)
	}
	if e := err.Error(); strings.Contains(e, "error_message") || !strings.Contains(e, "no-such-node") {
		t.Errorf("error %q: want Ironic's faultstring naming the node", e)
	}
	pid, cpu, err := c.Process(ctx)
	if err != nil || pid != os.Getpid() || cpu <= 0 {
		t.Errorf("process: pid %d cpu %.3f, %v", pid, cpu, err)
	}
}

// A real Ironic has no events extension: the client reads node history.
func TestEventsFallBackToHistory(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Write([]byte(`{"default_version": {"version": "1.89"}}`))
		case "/v1/nodes/u-1/history":
			if v := r.Header.Get("X-OpenStack-Ironic-API-Version"); v != "1.78" {
				http.Error(w, "version "+v, http.StatusNotAcceptable)
				return
			}
			w.Write([]byte(`{"history": [{"event": "deploy"}, {"event": "active"}]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c, err := ironic.New(context.Background(), srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := c.Events(context.Background(), "u-1")
	if err != nil || len(evs) != 2 {
		t.Fatalf("events: %s, %v", evs, err)
	}
}

// A request Ironic refuses because the node is locked (409 NodeLocked) is
// sent again, as python-ironicclient does; any other 409 is not.
func TestNodeLockedIsRetried(t *testing.T) {
	var calls atomic.Int32
	var locked atomic.Int32
	locked.Store(2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		switch {
		case r.URL.Path == "/v1/nodes/n1/states/provision" && n <= locked.Load():
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"error_message": "{\"faultstring\": \"Node n1 is locked by host 127.0.0.1, please retry after the current operation is completed.\"}"}`))
		case r.URL.Path == "/v1/nodes/n2/states/provision":
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"error_message": "{\"faultstring\": \"Node n2 can not be updated while a state transition is in progress.\"}"}`))
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	t.Cleanup(srv.Close)
	c := ironic.Dial(srv.URL, "1.78", nil)
	c.SetLockRetries(5, 10*time.Millisecond)
	ctx := context.Background()
	if err := c.Provision(ctx, "n1", map[string]any{"target": "provide"}); err != nil || calls.Load() != 3 {
		t.Errorf("provide of a node locked twice: %v after %d calls, want success on the 3rd", err, calls.Load())
	}
	calls.Store(0)
	if err := c.Provision(ctx, "n2", map[string]any{"target": "provide"}); !ironic.IsStatus(err, http.StatusConflict) || calls.Load() != 1 {
		t.Errorf("a 409 that is not NodeLocked: %v after %d calls, want the 409 at once", err, calls.Load())
	}
	calls.Store(0)
	locked.Store(100)
	if err := c.Provision(ctx, "n1", map[string]any{"target": "provide"}); !ironic.IsStatus(err, http.StatusConflict) || calls.Load() != 5 {
		t.Errorf("a node that stays locked: %v after %d calls, want the 409 after 5", err, calls.Load())
	}
	calls.Store(0)
	c.SetLockRetries(5, time.Hour)
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := c.Provision(cctx, "n1", map[string]any{"target": "provide"}); err == nil || !strings.Contains(err.Error(), "is locked by host") || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("locked, context ending while waiting to retry: %v, want the 409 and the deadline", err)
	}
}
