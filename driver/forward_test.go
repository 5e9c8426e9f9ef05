package driver

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// forwardOnce sends one heartbeat-like POST through f to target.
func forwardOnce(t *testing.T, f *forwarder, target string) (*httptest.ResponseRecorder, bool) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/v1/heartbeat/node-1", strings.NewReader(`{"callback_url":"http://127.0.0.1:9999"}`))
	w := httptest.NewRecorder()
	return w, f.forward(w, r, "c2", u, []byte(`{"callback_url":"http://127.0.0.1:9999"}`))
}

func TestForwardCopiesTheOwnersAnswer(t *testing.T) {
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get(HeaderForwardedBy) != "c1" || r.URL.Path != "/v1/heartbeat/node-1" || !strings.Contains(string(b), "callback_url") {
			http.Error(w, "bad forward: "+r.Header.Get(HeaderForwardedBy)+" "+r.URL.Path+" "+string(b), http.StatusTeapot)
			return
		}
		w.Header().Set(HeaderConductor, "c2")
		w.WriteHeader(http.StatusAccepted)
	}))
	defer owner.Close()
	w, reached := forwardOnce(t, &forwarder{host: "c1", timeout: 5 * time.Second}, owner.URL)
	if !reached || w.Code != http.StatusAccepted || w.Header().Get(HeaderConductor) != "c2" {
		t.Fatalf("forward to a live owner: reached %v, %d %q, conductor %q", reached, w.Code, w.Body.String(), w.Header().Get(HeaderConductor))
	}
}

func TestForwardToAnOwnerThatIsGoneIsHandledHere(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: connection refused
	w, reached := forwardOnce(t, &forwarder{host: "c1", timeout: 5 * time.Second}, "http://"+addr)
	if reached || w.Body.Len() != 0 {
		t.Fatalf("forward to a dead owner: reached %v, wrote %d %q; want not reached and nothing written", reached, w.Code, w.Body.String())
	}
}

func TestForwardToAHungOwnerAnswers504(t *testing.T) {
	release := make(chan struct{})
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // a hung conductor: took the request, never answers
		case <-release:
		case <-time.After(time.Minute):
		}
	}))
	defer owner.Close()
	defer close(release)
	done := make(chan struct{})
	var w *httptest.ResponseRecorder
	var reached bool
	go func() {
		defer close(done)
		w, reached = forwardOnce(t, &forwarder{host: "c1", timeout: 300 * time.Millisecond}, owner.URL)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the forward to a hung owner never gave up")
	}
	if !reached || w.Code != http.StatusGatewayTimeout || w.Header().Get(HeaderConductor) != "c1" {
		t.Fatalf("forward to a hung owner: reached %v, %d %q, conductor %q; want 504 from c1", reached, w.Code, w.Body.String(), w.Header().Get(HeaderConductor))
	}
	var body struct {
		ErrorMessage string `json:"error_message"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("504 body %q: %v", w.Body.String(), err)
	}
	var fault struct {
		Faultstring string `json:"faultstring"`
	}
	if err := json.Unmarshal([]byte(body.ErrorMessage), &fault); err != nil || !strings.Contains(fault.Faultstring, "conductor c2") || !strings.Contains(fault.Faultstring, "300ms") {
		t.Fatalf("504 error_message %q (%v): want Ironic's error body naming the owner c2 and the timeout", body.ErrorMessage, err)
	}
}
