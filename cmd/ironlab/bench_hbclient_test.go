package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hbServer is an httptest server playing the driver's heartbeat endpoint:
// it checks each request as the driver would read it and counts what it
// answered, so that a test can hold the client's counts against it.
type hbServer struct {
	t        *testing.T
	srv      *httptest.Server
	tokens   map[string]string // uuid -> token
	answer   func(w http.ResponseWriter, uuid string) int
	accepted atomic.Int64
	other    atomic.Int64
	conns    atomic.Int64
	bad      atomic.Value // string: the first malformed request
}

func newHBServer(t *testing.T, n int, answer func(w http.ResponseWriter, uuid string) int) (*hbServer, []hbTarget) {
	s := &hbServer{t: t, tokens: map[string]string{}, answer: answer}
	var targets []hbTarget
	for i := range n {
		tg := hbTarget{UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Token: fmt.Sprintf("token-%d", i),
			Callback: fmt.Sprintf("http://127.0.0.1:9/hbload-%d", i)}
		s.tokens[tg.UUID] = tg.Token
		targets = append(targets, tg)
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.srv.Start()
	t.Cleanup(s.srv.Close)
	return s, targets
}

func (s *hbServer) serve(w http.ResponseWriter, r *http.Request) {
	uuid, ok := strings.CutPrefix(r.URL.Path, "/v1/heartbeat/")
	var body struct {
		CallbackURL  string `json:"callback_url"`
		AgentToken   string `json:"agent_token"`
		AgentVersion string `json:"agent_version"`
	}
	err := json.NewDecoder(r.Body).Decode(&body)
	switch {
	case r.Method != http.MethodPost || !ok || s.tokens[uuid] == "":
		err = fmt.Errorf("%s %s", r.Method, r.URL.Path)
	case err != nil:
	case r.Header.Get("X-OpenStack-Ironic-API-Version") != loadVersion || r.Header.Get("Content-Type") != "application/json":
		err = fmt.Errorf("headers %v", r.Header)
	case body.AgentToken != s.tokens[uuid] || body.AgentVersion != "9.4.0" || !strings.HasPrefix(body.CallbackURL, "http://127.0.0.1:9/hbload-"):
		err = fmt.Errorf("body %+v for %s", body, uuid)
	}
	if err != nil {
		s.bad.CompareAndSwap(nil, err.Error())
		http.Error(w, "bad request", http.StatusBadRequest)
		s.other.Add(1)
		return
	}
	code := s.answer(w, uuid)
	if code == http.StatusAccepted {
		s.accepted.Add(1)
	} else {
		s.other.Add(1)
	}
}

func (s *hbServer) check(r HeartbeatLoad) {
	s.t.Helper()
	if b := s.bad.Load(); b != nil {
		s.t.Errorf("the server got a malformed heartbeat: %s", b)
	}
	if got := s.accepted.Load(); int64(r.Accepted) != got {
		s.t.Errorf("client counted %d accepted, the server answered %d with 202", r.Accepted, got)
	}
	if r.Requests != r.Accepted+r.Errors || r.Requests == 0 {
		s.t.Errorf("requests %d, accepted %d + errors %d: want equal and above 0", r.Requests, r.Accepted, r.Errors)
	}
	if r.P50Ms <= 0 || r.P50Ms > r.P99Ms {
		s.t.Errorf("p50 %v ms, p99 %v ms: want 0 < p50 <= p99", r.P50Ms, r.P99Ms)
	}
}

func accept(w http.ResponseWriter, _ string) int {
	w.WriteHeader(http.StatusAccepted)
	return http.StatusAccepted
}

// The lean client sends what the driver reads (path, API version, body
// with the token), reuses one connection per worker, and its count of 202
// answers is the server's.
func TestHeartbeatLoadCountsWhatTheServerAccepted(t *testing.T) {
	s, targets := newHBServer(t, 8, accept)
	r := heartbeatLoad(t.Context(), s.srv.URL, targets, 4, 300*time.Millisecond)
	s.check(r)
	if r.Errors != 0 || r.FirstError != "" {
		t.Errorf("errors %d (%s), want none", r.Errors, r.FirstError)
	}
	if c := s.conns.Load(); c > 4 {
		t.Errorf("%d connections for 4 workers: want keep-alive, one each", c)
	}
	if r.Accepted < 20 {
		t.Errorf("only %d heartbeats in 300 ms", r.Accepted)
	}
	// net/http's client on the same server counts the same way.
	before := s.accepted.Load()
	hc := loadClient(4)
	for _, tg := range targets {
		body, _ := json.Marshal(map[string]string{"callback_url": tg.Callback, "agent_token": tg.Token, "agent_version": "9.4.0"})
		if err := apiCall(t.Context(), hc, http.MethodPost, s.srv.URL+"/v1/heartbeat/"+tg.UUID, json.RawMessage(body), nil); err != nil {
			t.Errorf("net/http heartbeat: %v", err)
		}
	}
	if got := s.accepted.Load() - before; got != int64(len(targets)) {
		t.Errorf("net/http's heartbeats: the server accepted %d of %d", got, len(targets))
	}
}

// Any answer but 202 is an error, counted and named; the 202s still count.
func TestHeartbeatLoadCountsOtherAnswersAsErrors(t *testing.T) {
	var refused string
	s, targets := newHBServer(t, 4, func(w http.ResponseWriter, uuid string) int {
		if uuid == refused {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			fmt.Fprint(w, `{"error_message": "node locked"}`)
			return http.StatusConflict
		}
		return accept(w, uuid)
	})
	refused = targets[2].UUID
	r := heartbeatLoad(t.Context(), s.srv.URL, targets, 2, 200*time.Millisecond)
	s.check(r)
	if int64(r.Errors) != s.other.Load() || r.Errors == 0 {
		t.Errorf("client counted %d errors, the server answered %d non-202", r.Errors, s.other.Load())
	}
	if want := "heartbeat of " + refused + ": HTTP 409"; r.FirstError != want {
		t.Errorf("first error %q, want %q", r.FirstError, want)
	}
	if c := s.conns.Load(); c > 2 {
		t.Errorf("%d connections for 2 workers: a 409 with a body must not cost the connection", c)
	}
}

// A chunked body (no Content-Length: the handler flushes) is read to its
// end, and the connection serves the next heartbeat.
func TestHeartbeatLoadReadsChunkedAnswers(t *testing.T) {
	s, targets := newHBServer(t, 4, func(w http.ResponseWriter, _ string) int {
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprint(w, `{"a":`)
		w.(http.Flusher).Flush()
		fmt.Fprint(w, strings.Repeat(" ", 5000)+`1}`)
		return http.StatusAccepted
	})
	r := heartbeatLoad(t.Context(), s.srv.URL, targets, 2, 200*time.Millisecond)
	s.check(r)
	if r.Errors != 0 {
		t.Errorf("errors %d (%s), want none", r.Errors, r.FirstError)
	}
	if c := s.conns.Load(); c > 2 {
		t.Errorf("%d connections for 2 workers: chunked answers must keep the connection", c)
	}
}

// A server that answers with Connection: close gets a new connection per
// heartbeat, and every heartbeat still counts.
func TestHeartbeatLoadReconnectsAfterConnectionClose(t *testing.T) {
	s, targets := newHBServer(t, 4, func(w http.ResponseWriter, uuid string) int {
		w.Header().Set("Connection", "close")
		return accept(w, uuid)
	})
	r := heartbeatLoad(t.Context(), s.srv.URL, targets, 2, 200*time.Millisecond)
	s.check(r)
	if r.Errors != 0 {
		t.Errorf("errors %d (%s), want none", r.Errors, r.FirstError)
	}
	if c := s.conns.Load(); c != int64(r.Requests) {
		t.Errorf("%d connections for %d heartbeats: want one each after Connection: close", c, r.Requests)
	}
}

// rawCounts is what a rawServer saw.
type rawCounts struct {
	conns, requests atomic.Int64
	// extra are requests sent on a connection after its answers ran out
	// (one the client should not have reused).
	extra atomic.Int64
}

// rawServer answers the requests on each connection with answers (raw
// bytes), in turn; then it closes the connection if closeAfter is set, or
// waits for more bytes (counted as extra) and closes it.
func rawServer(t *testing.T, answers []string, closeAfter bool) (string, *rawCounts) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &rawCounts{}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			n.conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(conn)
				for _, a := range answers {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if _, err := io.Copy(io.Discard, req.Body); err != nil {
						return
					}
					n.requests.Add(1)
					if _, err := conn.Write([]byte(a)); err != nil {
						return
					}
				}
				if !closeAfter {
					if _, err := br.ReadByte(); err == nil {
						n.extra.Add(1)
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String(), n
}

// The parser's cases, each against exact bytes: a heartbeat counts on a
// 202 only, whatever framing the body has, and the connection is reused
// or redialled as the answer says.
func TestHeartbeatClientParsesAnswers(t *testing.T) {
	const ok0 = "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
	for _, tc := range []struct {
		name       string
		answers    []string // on each connection, in turn
		closeAfter bool
		beats      int // heartbeats sent, one after the other
		accepted   int
		conns      int
	}{
		{"content-length, and a 100 Continue before an answer", []string{
			"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}",
			"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n",
		}, false, 2, 2, 1},
		{"chunked, with extensions and trailers", []string{
			"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n",
			"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
		}, false, 2, 2, 1},
		{"Connection: close", []string{
			"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
		}, false, 3, 3, 3},
		{"HTTP/1.0, the body up to the close", []string{
			"HTTP/1.0 202 Accepted\r\n\r\nbody up to the close",
		}, true, 2, 2, 2},
		{"HTTP/1.0 keep-alive", []string{
			"HTTP/1.0 202 Accepted\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
			"HTTP/1.0 202 Accepted\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
		}, false, 2, 2, 1},
		{"an idle close by the server is redialled, not an error", []string{ok0, ok0}, true, 3, 3, 2},
		{"a 500 and a 204 are errors", []string{
			"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops!",
			"HTTP/1.1 204 No Content\r\n\r\n",
			ok0,
		}, false, 3, 1, 1},
		{"a truncated body is an error", []string{
			"HTTP/1.1 202 Accepted\r\nContent-Length: 10\r\n\r\nabc",
		}, true, 2, 0, 2},
		{"a truncated chunk is an error", []string{
			"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
		}, true, 1, 0, 1},
		{"not HTTP is an error", []string{"SMTP ready\r\n\r\n"}, true, 1, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, n := rawServer(t, tc.answers, tc.closeAfter)
			addr, reqs, err := hbRequests(url, []hbTarget{{UUID: "u1", Token: "t1"}}, [][]byte{[]byte(`{}`)})
			if err != nil {
				t.Fatal(err)
			}
			c := &hbConn{addr: addr, deadline: time.Now().Add(10 * time.Second)}
			defer c.close()
			accepted := 0
			for range tc.beats {
				status, err := c.do(t.Context(), reqs[0])
				if err == nil && status == http.StatusAccepted {
					accepted++
				} else {
					t.Logf("not counted: status %d, err %v", status, err)
				}
			}
			c.close()
			if accepted != tc.accepted {
				t.Errorf("accepted %d of %d heartbeats, want %d", accepted, tc.beats, tc.accepted)
			}
			if got := n.conns.Load(); got != int64(tc.conns) {
				t.Errorf("%d connections, want %d", got, tc.conns)
			}
			if got := n.extra.Load(); got != 0 {
				t.Errorf("%d requests sent on a connection past its answers (Connection: close or a body to the close ignored)", got)
			}
		})
	}
}
