package fakeagent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

func TestMuxServesManyAgents(t *testing.T) {
	const n = 200
	api := newScriptedIronic(t, 99)
	api.timeout = 300
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mux, err := ListenMux(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type node struct {
		uuid  string
		agent *Agent
		stop  context.CancelFunc
		done  chan error
	}
	nodes := make([]node, n)
	for i := range nodes {
		uuid := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		mac := fmt.Sprintf("52:54:00:00:%02x:%02x", i/256, i%256)
		api.addNode(uuid, true, mac)
		a, err := New(Config{
			APIURL: api.srv.URL, Mux: mux, Hardware: NewMemHardware(testHardware(t, mac)),
			LookupInterval: 10 * time.Millisecond, HeartbeatErrorBackoff: 10 * time.Millisecond, Logger: quietLogger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		actx, stop := context.WithCancel(ctx)
		nodes[i] = node{uuid: uuid, agent: a, stop: stop, done: make(chan error, 1)}
		go func(nd node) { nd.done <- a.Run(actx) }(nodes[i])
	}
	waitFor(t, "every agent registered", func() bool { return mux.Len() == n })
	// The driver API is 1.99: every agent uses the Mux's auto-TLS
	// certificate, and a client that trusts only it reaches them.
	ca := nodes[0].agent.CertificatePEM()
	client := clientTrusting(t, ca)

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, nd := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := nd.agent.AgentURL()
			if want := mux.TLSURL(nd.uuid); url != want || !strings.HasPrefix(url, "https://127.0.0.1:") {
				errs <- fmt.Errorf("agent_url = %q, want %q on loopback", url, want)
				return
			}
			body := strings.NewReader(`{"name": "standby.sync", "params": {}}`)
			resp, err := client.Post(url+"/v1/commands/?wait=true&agent_token="+api.token(nd.uuid), "application/json", body)
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("%s: POST sync = %d", nd.uuid, resp.StatusCode)
				return
			}
			if got := nd.agent.State().LastCommand; got != "standby.sync" {
				errs <- fmt.Errorf("%s: the command went to another agent (last command %q)", nd.uuid, got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// A heartbeat reached the driver with each agent's own URL.
	api.mu.Lock()
	urls := map[string]string{}
	for _, hb := range api.heartbeats {
		urls[hb.Node] = hb.URL
	}
	api.mu.Unlock()
	cas := map[string]string{}
	for _, hb := range api.heartbeats {
		cas[hb.Node] = hb.VerifyCA
	}
	for _, nd := range nodes[:5] {
		if urls[nd.uuid] != mux.TLSURL(nd.uuid) {
			t.Errorf("%s heartbeated with %q, want %q", nd.uuid, urls[nd.uuid], mux.TLSURL(nd.uuid))
		}
		if cas[nd.uuid] != ca || !strings.HasPrefix(ca, "-----BEGIN CERTIFICATE-----") {
			t.Errorf("%s heartbeated with agent_verify_ca %q, want the Mux's certificate", nd.uuid, cas[nd.uuid])
		}
	}

	// A stopped agent leaves the Mux; its URL then answers 404.
	nodes[0].stop()
	labtest.Recv(t, nodes[0].done, "end of the stopped agent")
	if mux.Len() != n-1 {
		t.Errorf("registered agents = %d after one stopped, want %d", mux.Len(), n-1)
	}
	resp, err := client.Get(mux.TLSURL(nodes[0].uuid) + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("stopped agent's status = %d, want 404", resp.StatusCode)
	}
	for _, nd := range nodes[1:] {
		nd.stop()
		labtest.Recv(t, nd.done, "end of a stopped agent")
	}
}
