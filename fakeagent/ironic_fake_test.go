package fakeagent

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// scriptedIronic is a small driver API that follows the protocol reference
// (§1 legacy vendor_passthru, §2 modern lookup/heartbeat) closely enough to
// test the agent against; the end-to-end tests use the real driver.
type scriptedIronic struct {
	srv      *httptest.Server
	maxMinor int
	timeout  float64 // heartbeat_timeout handed out

	mu            sync.Mutex
	nodes         map[string]*scriptedNode
	lookups       int
	heartbeats    []heartbeat
	hbCh          chan heartbeat
	lookupVersion string // microversion header of the last lookup
	// hbStatus, when set, answers heartbeats with this status (409 e.g.).
	hbStatus int
}

type scriptedNode struct {
	uuid     string
	macs     []string
	accept   bool // restrict_lookup: only some states accept lookups
	token    string
	agentURL string
}

type heartbeat struct {
	Node, URL, Token, Version string
	VerifyCA                  string // agent_verify_ca
	APIVersion                string // microversion header of the call
	Legacy                    bool
}

func newScriptedIronic(t *testing.T, maxMinor int) *scriptedIronic {
	s := &scriptedIronic{maxMinor: maxMinor, timeout: 1, nodes: map[string]*scriptedNode{}, hbCh: make(chan heartbeat, 1000)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.root)
	mux.HandleFunc("GET /v1/lookup", s.lookup)
	mux.HandleFunc("POST /v1/heartbeat/{node}", s.heartbeat)
	mux.HandleFunc("POST /v1/drivers/{driver}/vendor_passthru/lookup", s.legacyLookup)
	mux.HandleFunc("POST /v1/nodes/{node}/vendor_passthru/heartbeat", s.legacyHeartbeat)
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *scriptedIronic) addNode(uuid string, accept bool, macs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes[uuid] = &scriptedNode{uuid: uuid, macs: macs, accept: accept}
}

func (s *scriptedIronic) setAccept(uuid string, accept bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes[uuid].accept = accept
}

// wipe is what a power off does to the node (reference §2): agent_url and
// token are forgotten.
func (s *scriptedIronic) wipe(uuid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[uuid]
	n.token, n.agentURL = "", ""
}

func (s *scriptedIronic) deleteNode(uuid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.nodes, uuid)
}

func (s *scriptedIronic) token(uuid string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodes[uuid].token
}

func (s *scriptedIronic) lookupCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookups
}

func ironicError(w http.ResponseWriter, status int, msg string) {
	inner, _ := json.Marshal(map[string]any{"faultstring": msg, "faultcode": "Client", "debuginfo": nil})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error_message": string(inner)})
}

// version parses the microversion header; no header means 1.1.
func (s *scriptedIronic) version(w http.ResponseWriter, r *http.Request) (int, bool) {
	h := r.Header.Get("X-OpenStack-Ironic-API-Version")
	w.Header().Set("X-OpenStack-Ironic-API-Minimum-Version", "1.1")
	w.Header().Set("X-OpenStack-Ironic-API-Maximum-Version", fmt.Sprintf("1.%d", s.maxMinor))
	if h == "" {
		return 1, true
	}
	minor, err := strconv.Atoi(strings.TrimPrefix(h, "1."))
	if err != nil || minor > s.maxMinor {
		ironicError(w, 406, "Version "+h+" was requested but the requested API is not supported")
		return 0, false
	}
	w.Header().Set("X-OpenStack-Ironic-API-Version", h)
	return minor, true
}

func (s *scriptedIronic) root(w http.ResponseWriter, r *http.Request) {
	v := fmt.Sprintf("1.%d", s.maxMinor)
	writeJSON(w, 200, map[string]any{
		"name":            "OpenStack Ironic API",
		"default_version": map[string]any{"id": "v1", "version": v, "min_version": "1.1", "status": "CURRENT"},
		"versions":        []any{map[string]any{"id": "v1", "version": v, "min_version": "1.1", "status": "CURRENT"}},
	})
}

func (s *scriptedIronic) lookup(w http.ResponseWriter, r *http.Request) {
	minor, ok := s.version(w, r)
	if !ok {
		return
	}
	if minor < 22 {
		ironicError(w, 404, "The resource could not be found.")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookups++
	s.lookupVersion = r.Header.Get("X-OpenStack-Ironic-API-Version")
	var node *scriptedNode
	if u := r.URL.Query().Get("node_uuid"); u != "" {
		node = s.nodes[u]
	} else {
		addrs := strings.Split(r.URL.Query().Get("addresses"), ",")
		if r.URL.Query().Get("addresses") == "" {
			ironicError(w, 400, "Lookup requires at least one valid MAC address or node_uuid")
			return
		}
		for _, n := range s.nodes {
			for _, m := range n.macs {
				for _, a := range addrs {
					if strings.EqualFold(a, m) {
						node = n
					}
				}
			}
		}
	}
	if node == nil || !node.accept {
		ironicError(w, 404, "Node could not be found.")
		return
	}
	cfg := map[string]any{"heartbeat_timeout": s.timeout, "metrics": map[string]any{"backend": "noop"}}
	if minor >= 62 {
		if node.token == "" {
			b := make([]byte, 32)
			rand.Read(b)
			node.token = base64.RawURLEncoding.EncodeToString(b)
			cfg["agent_token"] = node.token
		} else {
			cfg["agent_token"] = "******"
		}
		cfg["agent_token_required"] = true
	}
	writeJSON(w, 200, map[string]any{
		"node":   map[string]any{"uuid": node.uuid, "properties": map[string]any{}, "instance_info": map[string]any{}, "driver_internal_info": map[string]any{}},
		"config": cfg,
	})
}

func (s *scriptedIronic) heartbeat(w http.ResponseWriter, r *http.Request) {
	minor, ok := s.version(w, r)
	if !ok {
		return
	}
	if minor < 22 {
		ironicError(w, 404, "The resource could not be found.")
		return
	}
	var body struct {
		CallbackURL  string  `json:"callback_url"`
		AgentToken   string  `json:"agent_token"`
		AgentVersion string  `json:"agent_version"`
		VerifyCA     *string `json:"agent_verify_ca"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		ironicError(w, 400, "Invalid JSON: "+err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	node := s.nodes[r.PathValue("node")]
	switch {
	case node == nil:
		ironicError(w, 404, "Node "+r.PathValue("node")+" could not be found.")
	case !strings.Contains(body.CallbackURL, "http"):
		ironicError(w, 400, "Invalid callback_url")
	case body.AgentVersion != "" && minor < 36:
		ironicError(w, 400, "agent_version is not allowed at this API version")
	case body.VerifyCA != nil && minor < 68:
		ironicError(w, 400, `Field "agent_verify_ca" not recognised in this version`)
	case body.AgentToken == "":
		ironicError(w, 400, "Agent token is required for heartbeat processing.")
	case body.AgentToken != node.token:
		ironicError(w, 400, "Invalid or missing agent token received.")
	case node.agentURL != "" && node.agentURL != body.CallbackURL:
		ironicError(w, 400, "Detected change in ramdisk provided 'callback_url'")
	case s.hbStatus != 0:
		ironicError(w, s.hbStatus, "Node is locked by host conductor-1")
	default:
		node.agentURL = body.CallbackURL
		hb := heartbeat{Node: node.uuid, URL: body.CallbackURL, Token: body.AgentToken, Version: body.AgentVersion,
			APIVersion: r.Header.Get("X-OpenStack-Ironic-API-Version")}
		if body.VerifyCA != nil {
			hb.VerifyCA = *body.VerifyCA
		}
		s.heartbeats = append(s.heartbeats, hb)
		select {
		case s.hbCh <- hb:
		default:
		}
		w.WriteHeader(202)
	}
}

func (s *scriptedIronic) legacyLookup(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Version   any `json:"version"`
		Inventory struct {
			Interfaces []struct {
				MACAddress string `json:"mac_address"`
			} `json:"interfaces"`
		} `json:"inventory"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		ironicError(w, 400, "Invalid JSON: "+err.Error())
		return
	}
	if fmt.Sprint(body.Version) != "2" {
		ironicError(w, 400, fmt.Sprintf("Unknown lookup payload version: %v", body.Version))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookups++
	owners := map[string]*scriptedNode{}
	for _, i := range body.Inventory.Interfaces {
		for _, n := range s.nodes {
			for _, m := range n.macs {
				if strings.EqualFold(m, i.MACAddress) {
					owners[n.uuid] = n
				}
			}
		}
	}
	if len(owners) != 1 {
		ironicError(w, 404, "Node with the given hardware could not be found")
		return
	}
	for _, n := range owners {
		if !n.accept {
			ironicError(w, 404, "Node with the given hardware could not be found")
			return
		}
		writeJSON(w, 200, map[string]any{"heartbeat_timeout": s.timeout, "node": map[string]any{"uuid": n.uuid, "driver": r.PathValue("driver")}})
	}
}

func (s *scriptedIronic) legacyHeartbeat(w http.ResponseWriter, r *http.Request) {
	var body struct {
		AgentURL string `json:"agent_url"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.AgentURL == "" {
		ironicError(w, 400, "Missing agent_url")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	node := s.nodes[r.PathValue("node")]
	if node == nil {
		ironicError(w, 404, "Node "+r.PathValue("node")+" could not be found.")
		return
	}
	if s.hbStatus != 0 {
		ironicError(w, s.hbStatus, "Node is locked by host conductor-1")
		return
	}
	node.agentURL = body.AgentURL
	hb := heartbeat{Node: node.uuid, URL: body.AgentURL, Legacy: true}
	s.heartbeats = append(s.heartbeats, hb)
	select {
	case s.hbCh <- hb:
	default:
	}
	w.WriteHeader(202)
}
