package httpstop_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/ironlab/ironlab/internal/httpstop"
)

// Shutdown waits for a request in flight and answers it, and hangs up on
// a connection that has sent nothing, well before net/http's 5 s.
func TestShutdownWaitsForRequestsNotSilence(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	srv := httpstop.New(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "done")
	})})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)

	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	answer := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			answer <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answer <- string(b)
	}()
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(ctx) }()
	// The silent connection is hung up on while the request still runs.
	silent.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := silent.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("silent connection: read %d bytes, %v; want EOF from the server hanging up", n, err)
	}
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	close(release)
	if got := <-answer; got != "done" {
		t.Errorf("the request in flight got %q, want its answer", got)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// New keeps the server's own ConnState hook.
func TestNewChainsConnState(t *testing.T) {
	states := make(chan http.ConnState, 8)
	srv := httpstop.New(&http.Server{
		Handler:   http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}),
		ConnState: func(_ net.Conn, s http.ConnState) { states <- s },
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, want := range []http.ConnState{http.StateNew, http.StateActive, http.StateIdle} {
		if got := <-states; got != want {
			t.Errorf("ConnState hook saw %v, want %v", got, want)
		}
	}
}
