package fakeagent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// brokenListener fails every Accept, as a listener whose socket died.
type brokenListener struct{ net.Listener }

var errAcceptDied = errors.New("accept: the socket died")

func (brokenListener) Accept() (net.Conn, error) { return nil, errAcceptDied }

// A server that stops serving ends what runs beside it, and its error is
// returned, not dropped.
func TestServeWhileReportsTheServeError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		done <- ServeWhile(context.Background(), &http.Server{}, brokenListener{ln}, func(ctx context.Context) error {
			<-ctx.Done() // an agent runs until its context ends
			return nil
		})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errAcceptDied) || !strings.Contains(err.Error(), "serve on 127.0.0.1:") {
			t.Fatalf("ServeWhile returned %v, want the accept error naming the address", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the run went on after its server had stopped")
	}
}

// A run that ends shuts a healthy server down without an error of its own.
func TestServeWhileEndsWithTheRun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	want := errors.New("agent stopped")
	err = ServeWhile(context.Background(), &http.Server{}, ln, func(context.Context) error { return want })
	if !errors.Is(err, want) || strings.Contains(err.Error(), "serve on") {
		t.Fatalf("ServeWhile returned %v, want only the run's error", err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("the listener still accepts after ServeWhile returned")
	}
}
