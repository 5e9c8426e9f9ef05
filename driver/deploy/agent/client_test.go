package agent

import (
	"context"
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

// TestForCAClientResumesTLS: a new connection of the client of an agent's
// certificate to that agent resumes the TLS session instead of a full
// handshake.
func TestForCAClientResumesTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"commands": []}`))
	}))
	srv.StartTLS()
	defer srv.Close()
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	c, err := NewClient().ForCA(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	var resumed []bool
	for range 3 {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL+"/v1/commands/", nil)
		resp, err := c.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		resumed = append(resumed, resp.TLS.DidResume)
		c.HTTP.CloseIdleConnections() // the next request needs a new connection
	}
	if resumed[0] || !resumed[1] || !resumed[2] {
		t.Errorf("TLS sessions resumed: %v, want [false true true]", resumed)
	}
	if _, err := c.Commands(context.Background(), srv.URL, "", false); err != nil {
		t.Errorf("commands through the agent's certificate: %v", err)
	}
}

// BenchmarkCommandsNewConnection is one command listing on a new TLS
// connection to the agent (as when more requests are in flight than the
// idle pool keeps): the handshake is most of it.
func BenchmarkCommandsNewConnection(b *testing.B) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"commands": []}`))
	}))
	srv.StartTLS()
	defer srv.Close()
	c, err := NewClient().ForCA(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Commands(context.Background(), srv.URL, "", false); err != nil {
			b.Fatal(err)
		}
		c.HTTP.CloseIdleConnections()
	}
}
