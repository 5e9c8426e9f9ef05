package agent

import (
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// The lab's agents share one https listener (one certificate): commands
// to them reuse at most agentConnsPerHost connections, however many are in
// flight, instead of a TLS handshake for most commands of a burst.
func TestAgentClientReusesConnectionsToOneListener(t *testing.T) {
	var dialed atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"commands": []}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dialed.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	c, err := NewClient().ForCA(ca)
	if err != nil {
		t.Fatal(err)
	}
	const burst = agentConnsPerHost + 100
	for round := range 3 {
		var wg sync.WaitGroup
		errs := make(chan error, burst)
		for range burst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := c.HTTP.Get(srv.URL + "/v1/commands/")
				if err != nil {
					errs <- err
					return
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	if n := dialed.Load(); n > agentConnsPerHost {
		t.Errorf("3 bursts of %d commands opened %d connections, want at most %d", burst, n, agentConnsPerHost)
	}
}
