package scenarios

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The lab's front repeats a lookup (a GET) that a dying conductor got on
// to the next one, as a load balancer does, and notes it: the dead one
// may have handed out the agent token. A lookup answered in full, or one
// that never reached a conductor (refused), is not noted.
func TestFrontNotesLookupsItsConductorsDidNotAnswer(t *testing.T) {
	dies := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack() // killed mid-request
		if err == nil {
			conn.Close()
		}
	}))
	defer dies.Close()
	answers := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"config":{"agent_token":"******"}}`)
	}))
	defer answers.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()

	cs := &conductorSet{
		procs: map[string]*driverProcess{"c1": {url: dies.URL}, "c2": {url: answers.URL}, "c3": {url: refused}},
		order: []string{"c1", "c2", "c3"}, down: map[string]bool{},
	}
	front := httptest.NewServer(http.HandlerFunc(cs.serveFront))
	defer front.Close()
	lookup := func(addresses string) {
		t.Helper()
		resp, err := http.Get(front.URL + "/v1/lookup?addresses=" + addresses)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != `{"config":{"agent_token":"******"}}` {
			t.Fatalf("lookup %s through the front: %d %s, want c2's answer", addresses, resp.StatusCode, body)
		}
	}
	cs.next = 1 // c2 answers in full
	lookup("52:54:00:00:00:0a")
	cs.next = 2 // c3 refuses, c1 dies with it, c2 answers
	lookup("52:54:00:00:00:0B,52:54:00:00:00:0c")

	if l, ok := cs.lostLookupOf("", []string{"52:54:00:00:00:0c"}); !ok || l.conductor != "c1" || l.err == "" {
		t.Errorf("the lookup c1 died with: noted %v as %+v, want noted, conductor c1, with its error", ok, l)
	}
	if _, ok := cs.lostLookupOf("", []string{"52:54:00:00:00:0b"}); !ok {
		t.Error("the lookup c1 died with is not found by its other address (case aside)")
	}
	if l, ok := cs.lostLookupOf("", []string{"52:54:00:00:00:0a"}); ok {
		t.Errorf("the lookup c2 answered in full is noted as lost: %+v", l)
	}
	if len(cs.lost) != 1 {
		t.Errorf("lost lookups %+v, want only c1's (c3 refused the connection: it got nothing)", cs.lost)
	}
}
