package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// certPEMs makes n distinct self-signed certificates, as n VM agent boots
// would send (one key: only the certificates need to differ).
func certPEMs(t *testing.T, n int) []string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, n)
	for i := range out {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), Subject: pkix.Name{CommonName: fmt.Sprintf("agent-boot-%d", i)},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	return out
}

// agentServer is an https agent answering command listings; it counts the
// connections opened and sends each one's close.
type agentServer struct {
	*httptest.Server
	ca     string
	dialed atomic.Int64
	closed chan struct{}
}

func newAgentServer(t *testing.T) *agentServer {
	t.Helper()
	s := &agentServer{closed: make(chan struct{}, 16)}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"commands": []}`))
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.dialed.Add(1)
		case http.StateClosed:
			select {
			case s.closed <- struct{}{}:
			default:
			}
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	s.ca = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}))
	return s
}

func (s *agentServer) list(t *testing.T, c *Client) {
	t.Helper()
	cc, err := c.ForCA(s.ca)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Commands(context.Background(), s.URL, "", false); err != nil {
		t.Fatalf("commands through the agent's certificate: %v", err)
	}
}

// A long-running lab whose VM agents each send a new certificate per boot
// keeps at most maxCAClients clients, the most recently used.
func TestForCAClientsBounded(t *testing.T) {
	c := NewClient()
	pems := certPEMs(t, 3*maxCAClients)
	first, err := c.ForCA(pems[0])
	if err != nil {
		t.Fatal(err)
	}
	var last *Client
	for _, p := range pems {
		if last, err = c.ForCA(p); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.cas.len(); n != maxCAClients {
		t.Errorf("after %d certificates the client keeps %d, want %d", len(pems), n, maxCAClients)
	}
	again, err := c.ForCA(pems[len(pems)-1])
	if err != nil {
		t.Fatal(err)
	}
	if again.HTTP != last.HTTP {
		t.Error("the most recently used certificate got a new client: its connections are not reused")
	}
	if again, err = c.ForCA(pems[0]); err != nil {
		t.Fatal(err)
	}
	if again.HTTP == first.HTTP {
		t.Error("the least recently used certificate kept its client past the bound")
	}
	if n := c.cas.len(); n != maxCAClients {
		t.Errorf("after seeing an evicted certificate again the client keeps %d, want %d", n, maxCAClients)
	}
}

// An evicted certificate's idle connections are closed; the same
// certificate, seen again (the agent answering again), still works.
func TestForCAEvictedCertificateWorksAgain(t *testing.T) {
	srv := newAgentServer(t)
	c := NewClient()
	srv.list(t, c)
	for _, p := range certPEMs(t, maxCAClients) {
		if _, err := c.ForCA(p); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-srv.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the evicted client's idle connection to the agent is still open after 10 s")
	}
	srv.list(t, c)
	if n := srv.dialed.Load(); n != 2 {
		t.Errorf("the agent saw %d connections, want 2 (one before the eviction, one after)", n)
	}
}

// A certificate in use stays cached while others come and go: its
// connection is reused and its TLS session resumed.
func TestForCAReuseSurvivesOtherCertificates(t *testing.T) {
	srv := newAgentServer(t)
	c := NewClient()
	pems := certPEMs(t, 2*maxCAClients)
	srv.list(t, c)
	for i := 0; i < len(pems); i += maxCAClients / 2 {
		for _, p := range pems[i : i+maxCAClients/2] {
			if _, err := c.ForCA(p); err != nil {
				t.Fatal(err)
			}
		}
		srv.list(t, c)
	}
	if n := srv.dialed.Load(); n != 1 {
		t.Errorf("%d listings between %d other certificates opened %d connections, want 1", 5, len(pems), n)
	}
	cc, err := c.ForCA(srv.ca)
	if err != nil {
		t.Fatal(err)
	}
	cc.HTTP.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL+"/v1/commands/", nil)
	resp, err := cc.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !resp.TLS.DidResume {
		t.Error("a new connection after the other certificates did not resume the TLS session")
	}
}
