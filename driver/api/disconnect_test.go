package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver"
)

// TestHandlerSeesClientDisconnect: a request waiting for a locked node
// stops waiting when its client goes away, instead of retrying the lock
// for the whole LockRetries x LockRetryInterval (here 50 s).
func TestHandlerSeesClientDisconnect(t *testing.T) {
	ctx := context.Background()
	cfg := driver.DefaultConfig()
	cfg.DBPath = filepath.Join(t.TempDir(), "ironlab.db")
	cfg.Host = "test-conductor"
	cfg.LockRetries, cfg.LockRetryInterval = 1000, 50*time.Millisecond
	d, err := driver.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	returned := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.Handler().ServeHTTP(w, r)
		if r.Method == http.MethodPatch {
			returned <- struct{}{}
		}
	}))
	defer srv.Close()
	s := &server{d: d, url: srv.URL}
	if r := s.do(t, "POST", "/v1/nodes", "1.68", `{"name": "node-a", "driver": "fake_agent"}`); r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	n, err := d.Conductor().GetNode(ctx, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	// Another conductor holds the node.
	if err := d.Conductor().Store().Reserve(ctx, n.UUID, "other-conductor"); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodPatch, srv.URL+"/v1/nodes/node-a",
		strings.NewReader(`[{"op": "add", "path": "/extra/a", "value": "b"}]`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("PATCH of a locked node answered %d before the client gave up", resp.StatusCode)
	}
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler kept waiting for the node's lock after its client went away")
	}
	if got, _ := d.Conductor().GetNode(ctx, "node-a"); got.Extra["a"] != nil {
		t.Errorf("the abandoned PATCH was applied: extra %v", got.Extra)
	}
}
