package api

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/store"
)

// The spec's lookup: POST /v1/drivers/{driver}/vendor_passthru/lookup (or
// ?method=lookup). Body {"version": 2 or "2", "inventory": {...}}.
func (s *Server) driverPassthru(c *gin.Context) {
	method := c.Param("method")
	if method == "" {
		method = c.Query("method")
	}
	driver := c.Param("driver")
	if _, ok := conductor.ClassOf(driver); !ok || s.c.CheckDriver(driver) != nil {
		fail(c, http.StatusNotFound, fmt.Sprintf("Could not find the following driver(s) or hardware type(s): %s.", driver))
		return
	}
	if method != "lookup" {
		fail(c, http.StatusBadRequest, fmt.Sprintf("Unsupported method (%s) passed through to vendor extension of driver %s.", method, driver))
		return
	}
	var req struct {
		Version   any            `json:"version"`
		Inventory map[string]any `json:"inventory"`
		NodeUUID  *string        `json:"node_uuid"`
	}
	if !decode(c, &req, false) {
		return
	}
	switch v := req.Version.(type) {
	case nil:
		fail(c, http.StatusBadRequest, `Missing parameter "version" in the lookup body`)
		return
	case float64:
		if v != 2 {
			fail(c, http.StatusBadRequest, fmt.Sprintf(`Unknown lookup payload version: %v (field "version" must be 2)`, v))
			return
		}
	case string:
		if v != "2" {
			fail(c, http.StatusBadRequest, fmt.Sprintf(`Unknown lookup payload version: %q (field "version" must be 2)`, v))
			return
		}
	default:
		fail(c, http.StatusBadRequest, `Invalid type for field "version": expected 2 or "2"`)
		return
	}
	if req.Inventory == nil {
		fail(c, http.StatusBadRequest, `Missing parameter "inventory" in the lookup body`)
		return
	}
	ifaces, ok := req.Inventory["interfaces"].([]any)
	if !ok {
		fail(c, http.StatusBadRequest, `Invalid "inventory.interfaces": expected a list of interfaces with "mac_address"`)
		return
	}
	var macs []string
	for _, i := range ifaces {
		m, _ := i.(map[string]any)
		a, _ := m["mac_address"].(string)
		if mac := store.NormalizeMAC(a); mac != "" {
			macs = append(macs, mac)
		}
	}
	q := conductor.LookupQuery{MACs: macs, Dialect: conductor.DialectLegacy}
	if req.NodeUUID != nil {
		q.NodeUUID = *req.NodeUUID
	}
	if q.NodeUUID != "" {
		c.Set(refusalNode, q.NodeUUID)
	} else {
		c.Set(refusalNode, strings.Join(macs, ","))
	}
	if q.NodeUUID == "" && len(macs) == 0 {
		fail(c, http.StatusNotFound, "No node could be found: the inventory has no valid MAC address")
		return
	}
	n, _, err := s.c.Lookup(c.Request.Context(), q)
	if err != nil {
		failErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{
		"heartbeat_timeout": int(s.c.Config().HeartbeatTimeout.Seconds()),
		"node":              s.nodeDoc(c, n, true),
	})
}

// The spec's heartbeat: POST /v1/nodes/{uuid}/vendor_passthru/heartbeat
// (or ?method=heartbeat), body {"agent_url"}; other methods go to the
// node's deploy interface.
func (s *Server) nodePassthru(c *gin.Context) {
	method := c.Param("method")
	if method == "" {
		method = c.Query("method")
	}
	if method != "heartbeat" {
		if method == "" {
			fail(c, http.StatusBadRequest, `Missing argument: "method"`)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxBody))
		if err != nil {
			fail(c, http.StatusBadRequest, "Could not read the request body: "+err.Error())
			return
		}
		if err := s.c.VendorPassthru(c.Request.Context(), c.Param("ident"), method, body); err != nil {
			failErr(c, err)
			return
		}
		c.Status(http.StatusAccepted)
		return
	}
	var req struct {
		AgentURL *string `json:"agent_url"`
	}
	if !decode(c, &req, false) {
		return
	}
	if req.AgentURL == nil || *req.AgentURL == "" {
		fail(c, http.StatusBadRequest, `Missing parameter "agent_url" in the heartbeat body`)
		return
	}
	if err := s.c.Heartbeat(c.Request.Context(), conductor.Heartbeat{Ident: c.Param("ident"), AgentURL: *req.AgentURL, Dialect: conductor.DialectLegacy}); err != nil {
		failErr(c, err)
		return
	}
	c.Status(http.StatusAccepted)
}

// lookupConfig is the "config" of a modern lookup answer.
func (s *Server) lookupConfig(v Version, token string) map[string]any {
	cfg := map[string]any{
		"metrics":                       map[string]any{"backend": "noop", "prepend_host": false, "prepend_uuid": false, "prepend_host_reverse": true, "global_prefix": nil},
		"metrics_statsd":                map[string]any{"statsd_host": "localhost", "statsd_port": 8125},
		"heartbeat_timeout":             int(s.c.Config().HeartbeatTimeout.Seconds()),
		"agent_md5_checksum_enable":     false,
		"disable_deep_image_inspection": false,
		"permitted_image_formats":       []string{"raw", "qcow2", "iso"},
	}
	if v.AtLeast(62) {
		cfg["agent_token"] = token
		cfg["agent_token_required"] = s.c.Config().AgentTokenRequired
	}
	return cfg
}

// GET /v1/lookup?addresses=MAC,MAC&node_uuid=UUID (API >= 1.22).
func (s *Server) lookup(c *gin.Context) {
	v := ver(c)
	if !v.AtLeast(22) {
		fail(c, http.StatusNotFound, "The resource could not be found (lookup needs API version 1.22).")
		return
	}
	var macs []string
	for _, a := range strings.Split(c.Query("addresses"), ",") {
		if mac := store.NormalizeMAC(a); mac != "" {
			macs = append(macs, mac)
		}
	}
	q := conductor.LookupQuery{MACs: macs, Dialect: conductor.DialectV1, Restrict: true, IssueToken: v.AtLeast(62)}
	if id := c.Query("node_uuid"); id != "" {
		u, err := uuid.Parse(id)
		if err != nil {
			fail(c, http.StatusBadRequest, fmt.Sprintf("Invalid UUID for query parameter \"node_uuid\": %q", id))
			return
		}
		q.NodeUUID = u.String()
	}
	if q.NodeUUID == "" && len(macs) == 0 {
		fail(c, http.StatusBadRequest, "Lookup requires a valid MAC in \"addresses\" or a \"node_uuid\"")
		return
	}
	n, token, err := s.c.Lookup(c.Request.Context(), q)
	if err != nil {
		failErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{
		"node": gin.H{
			"uuid": n.UUID, "properties": emptyIfNil(n.Properties), "instance_info": masked(emptyIfNil(n.InstanceInfo)),
			"driver_internal_info": masked(n.DriverInternalInfoView()), "links": links(c, "nodes", n.UUID),
		},
		"config": s.lookupConfig(v, token),
	})
}

// POST /v1/heartbeat/{node_ident} (API >= 1.22).
func (s *Server) heartbeat(c *gin.Context) {
	v := ver(c)
	if !v.AtLeast(22) {
		fail(c, http.StatusNotFound, "The resource could not be found (heartbeat needs API version 1.22).")
		return
	}
	body, ok := readBody(c)
	if !ok {
		return
	}
	var req heartbeatBody
	if !req.parse(body) && !decodeBody(c, body, &req, false) {
		return
	}
	gates := []struct {
		set   bool
		name  string
		minor int
	}{
		{req.AgentVersion != nil, "agent_version", 36},
		{req.AgentVerifyCA != nil, "agent_verify_ca", 68},
		{req.AgentStatus != nil, "agent_status", 72},
		{req.AgentStatusMessage != nil, "agent_status_message", 72},
	}
	for _, g := range gates {
		if g.set && !v.AtLeast(g.minor) {
			fail(c, http.StatusBadRequest, fmt.Sprintf("Field %q is not allowed below API version 1.%d (requested %s)", g.name, g.minor, v))
			return
		}
	}
	if req.CallbackURL == nil || *req.CallbackURL == "" {
		fail(c, http.StatusBadRequest, `Missing parameter "callback_url" in the heartbeat body`)
		return
	}
	if req.AgentStatus != nil {
		switch *req.AgentStatus {
		case "start", "end", "error":
		default:
			fail(c, http.StatusBadRequest, fmt.Sprintf("Unknown agent_status %q: expected start, end or error", *req.AgentStatus))
			return
		}
	}
	if (req.AgentToken == nil || *req.AgentToken == "") && s.c.Config().AgentTokenRequired {
		fail(c, http.StatusBadRequest, "Agent token is required for heartbeat processing (field \"agent_token\").")
		return
	}
	if req.AgentVersion == nil && req.AgentStatus == nil {
		fail(c, http.StatusBadRequest, `Heartbeat needs "agent_version" (API >= 1.36)`)
		return
	}
	hb := conductor.Heartbeat{Ident: c.Param("ident"), AgentURL: *req.CallbackURL, Dialect: conductor.DialectV1}
	if req.AgentToken != nil {
		hb.AgentToken = *req.AgentToken
	}
	if req.AgentVersion != nil {
		hb.AgentVersion = *req.AgentVersion
	}
	if req.AgentVerifyCA != nil {
		hb.AgentVerifyCA = *req.AgentVerifyCA
	}
	if err := s.c.Heartbeat(c.Request.Context(), hb); err != nil {
		failErr(c, err)
		return
	}
	c.Status(http.StatusAccepted)
}

// heartbeatBody is the body of POST /v1/heartbeat/{node_ident}.
type heartbeatBody struct {
	CallbackURL        *string `json:"callback_url"`
	AgentToken         *string `json:"agent_token"`
	AgentVersion       *string `json:"agent_version"`
	AgentVerifyCA      *string `json:"agent_verify_ca"`
	AgentStatus        *string `json:"agent_status"`
	AgentStatusMessage *string `json:"agent_status_message"`
}

// parse decodes the body an agent sends, a flat object of this type's
// fields (each once, each a string of printable ASCII without escapes),
// as decode would, and reports whether it could; anything else (escapes,
// null, other bytes or fields, a malformed body) is left to decode, which
// says what is wrong. The heartbeat is the one request an agent fleet sends
// at its rate: encoding/json's decoder (reflection, its buffer, a second
// scan) was 6 % of a heartbeat's driver CPU in the bench's profile.
// FuzzHeartbeatBody checks it against decode.
func (b *heartbeatBody) parse(body []byte) bool {
	var parsed heartbeatBody
	i := skipSpace(body, 0)
	if i == len(body) || body[i] != '{' {
		return false
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		*b = parsed
		return skipSpace(body, i+1) == len(body)
	}
	for {
		key, next, ok := plainString(body, i)
		if !ok {
			return false
		}
		var field **string
		switch key {
		case "callback_url":
			field = &parsed.CallbackURL
		case "agent_token":
			field = &parsed.AgentToken
		case "agent_version":
			field = &parsed.AgentVersion
		case "agent_verify_ca":
			field = &parsed.AgentVerifyCA
		case "agent_status":
			field = &parsed.AgentStatus
		case "agent_status_message":
			field = &parsed.AgentStatusMessage
		default:
			return false
		}
		if *field != nil {
			return false // twice
		}
		i = skipSpace(body, next)
		if i == len(body) || body[i] != ':' {
			return false
		}
		value, next, ok := plainString(body, skipSpace(body, i+1))
		if !ok {
			return false
		}
		*field = &value
		i = skipSpace(body, next)
		if i == len(body) {
			return false
		}
		switch body[i] {
		case ',':
			i = skipSpace(body, i+1)
		case '}':
			if skipSpace(body, i+1) != len(body) {
				return false
			}
			*b = parsed
			return true
		default:
			return false
		}
	}
}

// skipSpace is the index of the first byte from i that is not JSON
// whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads the JSON string at b[i] if it is printable ASCII
// without escapes (then it is its own value), and returns it and the index
// after its closing quote.
func plainString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return string(b[i+1 : j]), j + 1, true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return "", 0, false
		}
	}
	return "", 0, false
}
