package agent

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkForCACached is the look-up every agent call makes (the deploy
// asks ForCA for the node's certificate before each command), with the
// certificate already cached: the lab's case, all agents behind one.
func BenchmarkForCACached(b *testing.B) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	c := NewClient()
	if _, err := c.ForCA(ca); err != nil {
		b.Fatal(err)
	}
	// Each call's certificate is a string of its own, read from the store.
	ca = strings.Clone(ca)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.ForCA(ca); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkCommandsReused is a command listing as the deploy's polls make
// it: ForCA, then the request on a kept connection.
func BenchmarkCommandsReused(b *testing.B) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"commands": []}`))
	}))
	srv.StartTLS()
	defer srv.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	base := NewClient()
	b.ReportAllocs()
	for b.Loop() {
		c, err := base.ForCA(ca)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Commands(context.Background(), srv.URL, "", false); err != nil {
			b.Fatal(err)
		}
	}
}
