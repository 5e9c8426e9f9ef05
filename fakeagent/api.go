package fakeagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// ServeHTTP serves IPA's REST API at the root (standalone mode).
func (a *Agent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.serve(w, r, "", r.URL.Path)
}

// serve routes path (the request path without any Mux prefix). prefix is
// put back into the links of the version documents.
func (a *Agent) serve(w http.ResponseWriter, r *http.Request, prefix, path string) {
	if a.isCrashed() || a.isRescued() {
		// A crashed agent answers nothing, and IPA stops its API after
		// finalize_rescue: drop the connection.
		panic(http.ErrAbortHandler)
	}
	root := requestRoot(r) + prefix
	switch path {
	case "/", "":
		if !allow(w, r, http.MethodGet) {
			return
		}
		writeJSON(w, 200, map[string]any{
			"name":            "OpenStack Ironic Python Agent API",
			"description":     "Ironic Python Agent is a provisioning agent for OpenStack Ironic (ironlab fake agent)",
			"versions":        []any{versionDoc(root)},
			"default_version": versionDoc(root),
		})
		return
	case "/v1/", "/v1":
		if !allow(w, r, http.MethodGet) {
			return
		}
		doc := versionDoc(root)
		doc["commands"] = []any{link(root+"/v1/commands", "self"), link(root+"/commands", "bookmark")}
		doc["status"] = []any{link(root+"/v1/status", "self"), link(root+"/status", "bookmark")}
		doc["media_types"] = []any{map[string]string{"base": "application/json", "type": "application/vnd.openstack.ironic-python-agent.v1+json"}}
		writeJSON(w, 200, doc)
		return
	}
	// The status and commands routes also work without /v1.
	rest := strings.TrimPrefix(path, "/v1")
	switch {
	case rest == "/status":
		if !allow(w, r, http.MethodGet) {
			return
		}
		writeJSON(w, 200, map[string]any{
			"started_at": float64(a.startedAt.UnixNano()) / 1e9,
			"version":    AgentVersion,
		})
	case rest == "/commands" || rest == "/commands/":
		switch r.Method {
		case http.MethodGet:
			if !a.checkGetToken(w, r) {
				return
			}
			writeJSON(w, 200, map[string]any{"commands": a.Commands()})
		case http.MethodPost:
			a.runCommand(w, r)
		default:
			allow(w, r, http.MethodGet, http.MethodPost)
		}
	case strings.HasPrefix(rest, "/commands/"):
		if !allow(w, r, http.MethodGet) || !a.checkGetToken(w, r) {
			return
		}
		id := strings.TrimPrefix(rest, "/commands/")
		a.mu.Lock()
		c, ok := a.byID[id]
		a.mu.Unlock()
		if !ok {
			writeFault(w, 404, fmt.Sprintf("Requested object not found: Command with id %s not found.", id))
			return
		}
		if strings.EqualFold(r.URL.Query().Get("wait"), "true") {
			select {
			case <-c.done:
			case <-r.Context().Done():
			}
		}
		writeJSON(w, 200, a.snapshot(c))
	default:
		writeFault(w, 404, "404 Not Found: The requested URL was not found on the server.")
	}
}

func (a *Agent) runCommand(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name   *string `json:"name"`
		Params params  `json:"params"`
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		writeFault(w, 400, "400 Bad Request: read body: "+err.Error())
		return
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(raw, &probe); err != nil {
		writeFault(w, 400, "400 Bad Request: The browser (or proxy) sent a request that this server could not understand: "+err.Error())
		return
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.Name == nil || body.Params == nil || !isObject(probe["params"]) {
		writeFault(w, 400, "400 Bad Request: Missing or invalid name or params")
		return
	}
	if !a.tokenOK(r.URL.Query().Get("agent_token")) {
		writeFault(w, 401, "401 Unauthorized: Token invalid.")
		return
	}
	wait := strings.EqualFold(r.URL.Query().Get("wait"), "true")
	res, err := a.execute(r.Context(), *body.Name, body.Params, wait)
	var he *httpError
	switch {
	case errors.Is(err, errDropConnection):
		panic(http.ErrAbortHandler)
	case errors.As(err, &he):
		writeFault(w, he.status, he.fault)
	case err != nil:
		writeFault(w, 500, err.Error())
	default:
		writeJSON(w, 200, res)
	}
}

// tokenOK: in the v1 dialect every command needs the token the lookup gave
// (none yet means nothing is accepted); the legacy dialect has no tokens.
func (a *Agent) tokenOK(token string) bool {
	if a.cfg.Dialect == DialectLegacy {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.token != "" && token == a.token
}

// checkGetToken applies IPA's rule for GET /commands: a token is required
// once any GET carried one (Ironic's poller sends none; a stricter client
// that sends it gets it enforced from then on). A wrong token is always 401.
func (a *Agent) checkGetToken(w http.ResponseWriter, r *http.Request) bool {
	if a.cfg.Dialect == DialectLegacy {
		return true
	}
	token := r.URL.Query().Get("agent_token")
	a.mu.Lock()
	if token != "" {
		a.getTokenSeen = true
	}
	ok := !a.getTokenSeen || (a.token != "" && token == a.token)
	a.mu.Unlock()
	if !ok {
		writeFault(w, 401, "401 Unauthorized: Token invalid.")
	}
	return ok
}

func isObject(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return strings.HasPrefix(s, "{")
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeFault(w, 405, "405 Method Not Allowed: The method is not allowed for the requested URL.")
	return false
}

func requestRoot(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func versionDoc(root string) map[string]any {
	return map[string]any{
		"id": "v1",
		"links": []any{
			link(root+"/v1", "self"),
			map[string]string{"href": "https://docs.openstack.org/ironic-python-agent", "rel": "describedby", "type": "text/html"},
		},
	}
}

func link(href, rel string) map[string]string { return map[string]string{"href": href, "rel": rel} }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeFault writes IPA's error body (WSME-like): faultcode and faultstring.
// Ironic reads faultstring, e.g. "agent is busy" for AgentInProgress.
func writeFault(w http.ResponseWriter, status int, fault string) {
	code := "Client"
	if status >= 500 {
		code = "Server"
	}
	writeJSON(w, status, map[string]string{"faultcode": code, "faultstring": fault})
}

func (a *Agent) isRescued() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rescued
}
