// Package api is the driver's HTTP API (gin): the subset of Ironic's /v1
// that the lab uses, the agent's lookup and heartbeat in both dialects (the
// spec's vendor_passthru methods and the modern /v1/lookup, /v1/heartbeat),
// and a lab extension that returns a node's full event history. JSON shapes,
// status codes and microversion gates follow Ironic.
package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/store"
)

// API versions served.
const (
	MinVersion = "1.1"
	MaxVersion = "1.89"
)

const (
	versionHeader    = "X-OpenStack-Ironic-API-Version"
	minVersionHeader = "X-OpenStack-Ironic-API-Minimum-Version"
	maxVersionHeader = "X-OpenStack-Ironic-API-Maximum-Version"
	maxBody          = 16 << 20
)

// Version is an API microversion (major is always 1).
type Version struct{ Major, Minor int }

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// AtLeast reports v >= 1.minor.
func (v Version) AtLeast(minor int) bool { return v.Minor >= minor }

var (
	minV = Version{1, 1}
	maxV = Version{1, 89}
)

// Server is the HTTP API over a conductor.
type Server struct {
	c   *conductor.Conductor
	log *slog.Logger
	eng *gin.Engine
	// owner names the conductor servicing a node ("" none alive); nil:
	// this one (a single conductor).
	owner func(*store.Node) string
	// refused logs the agents' heartbeats and lookups refused.
	refused *refusalLog
	// profiler writes the CPU profile's next piece (nil: none).
	profiler Profiler
}

// SetOwner tells the API who services a node (the node's conductor
// field, API 1.49), for conductors that share the nodes on a hash ring.
func (s *Server) SetOwner(owner func(*store.Node) string) { s.owner = owner }

// New returns the API handler for c.
func New(c *conductor.Conductor, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	gin.SetMode(gin.ReleaseMode)
	s := &Server{c: c, log: log, eng: gin.New(), refused: &refusalLog{log: log}}
	s.eng.HandleMethodNotAllowed = true
	s.eng.Use(s.recover, s.refusals, urgent, s.version)
	s.routes()
	return s
}

// urgent marks the request's writes as ones a client waits on: on SQLite
// they go before the background work's (store.Urgent). The work a request
// starts runs on the conductor's context and is not urgent.
func urgent(c *gin.Context) {
	c.Request = c.Request.WithContext(store.Urgent(c.Request.Context()))
	c.Next()
}

// ServeHTTP serves the API.
//
// A trailing slash is dropped before routing: Ironic answers /v1/ports/ as
// /v1/ports, and python-ironicclient asks for /v1/ports/?node=... (gin's
// redirect would send it a relative Location it cannot follow).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p := r.URL.Path; len(p) > 1 && strings.HasSuffix(p, "/") {
		r.URL.Path = strings.TrimRight(p, "/")
		if r.URL.Path == "" {
			r.URL.Path = "/"
		}
		r.URL.RawPath = ""
	}
	s.eng.ServeHTTP(w, r)
}

func (s *Server) routes() {
	e := s.eng
	e.NoRoute(func(c *gin.Context) { fail(c, http.StatusNotFound, "The resource could not be found.") })
	e.NoMethod(func(c *gin.Context) {
		fail(c, http.StatusMethodNotAllowed, "The method is not allowed for the requested URL.")
	})
	e.GET("/", s.root)
	e.GET("/v1", s.v1)
	e.GET("/v1/", s.v1)

	e.GET("/v1/drivers", s.listDrivers)
	e.POST("/v1/drivers/:driver/vendor_passthru", s.driverPassthru)
	e.POST("/v1/drivers/:driver/vendor_passthru/:method", s.driverPassthru)

	e.POST("/v1/nodes", s.createNode)
	e.GET("/v1/nodes", s.listNodes)
	e.GET("/v1/nodes/detail", s.listNodesDetail)
	e.GET("/v1/nodes/:ident", s.getNode)
	e.PATCH("/v1/nodes/:ident", s.patchNode)
	e.DELETE("/v1/nodes/:ident", s.deleteNode)
	e.GET("/v1/nodes/:ident/ports", s.nodePorts)
	e.GET("/v1/nodes/:ident/states", s.getStates)
	e.PUT("/v1/nodes/:ident/states/provision", s.setProvision)
	e.PUT("/v1/nodes/:ident/states/power", s.setPower)
	e.PUT("/v1/nodes/:ident/maintenance", s.setMaintenance)
	e.DELETE("/v1/nodes/:ident/maintenance", s.unsetMaintenance)
	e.GET("/v1/nodes/:ident/history", s.history)
	e.GET("/v1/nodes/:ident/history/:event", s.historyEvent)
	e.GET("/v1/nodes/:ident/events", s.events)
	e.POST("/v1/nodes/:ident/vendor_passthru", s.nodePassthru)
	e.POST("/v1/nodes/:ident/vendor_passthru/:method", s.nodePassthru)

	e.POST("/v1/ports", s.createPort)
	e.GET("/v1/ports", s.listPorts)
	e.GET("/v1/ports/detail", s.listPortsDetail)
	e.GET("/v1/ports/:uuid", s.getPort)
	e.DELETE("/v1/ports/:uuid", s.deletePort)

	e.GET("/v1/lab/process", s.labProcess)
	e.PUT("/v1/lab/profile", s.labProfile)

	e.GET("/v1/lookup", s.lookup)
	e.POST("/v1/heartbeat/:ident", s.heartbeat)
}

// fail writes Ironic's error body: {"error_message": "<JSON string>"}.
func fail(c *gin.Context, code int, msg string) {
	c.Set(refusalReason, msg) // for the refusal log (refusals.go)
	c.AbortWithStatusJSON(code, gin.H{"error_message": ErrorMessage(code, msg)})
}

// ErrorMessage is the error_message of Ironic's error body for an answer
// with status code: msg as faultstring, in a JSON string.
func ErrorMessage(code int, msg string) string {
	fc := "Client"
	if code >= 500 {
		fc = "Server"
	}
	b, _ := json.Marshal(map[string]any{"faultstring": msg, "faultcode": fc, "debuginfo": nil})
	return string(b)
}

// failErr maps conductor errors to status codes.
func failErr(c *gin.Context, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, conductor.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, conductor.ErrNodeLocked), errors.Is(err, conductor.ErrDuplicate), errors.Is(err, conductor.ErrInvalidState):
		code = http.StatusConflict
	case errors.Is(err, conductor.ErrInvalidRequest), errors.Is(err, conductor.ErrInvalidParameter),
		errors.Is(err, conductor.ErrDriverNotEnabled), errors.Is(err, conductor.ErrInvalidAgentToken):
		code = http.StatusBadRequest
	}
	fail(c, code, cleanMsg(err))
}

// cleanMsg drops the sentinel's text that %w appended.
func cleanMsg(err error) string {
	msg := err.Error()
	for _, s := range []error{conductor.ErrNotFound, conductor.ErrNodeLocked, conductor.ErrDuplicate, conductor.ErrInvalidState,
		conductor.ErrInvalidRequest, conductor.ErrInvalidParameter, conductor.ErrDriverNotEnabled, conductor.ErrInvalidAgentToken} {
		msg = strings.TrimSuffix(msg, ": "+s.Error())
	}
	return msg
}

func (s *Server) recover(c *gin.Context) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("API panic", "path", c.Request.URL.Path, "panic", r)
			fail(c, http.StatusInternalServerError, "Internal server error")
		}
	}()
	c.Next()
}

// The version headers in their canonical (textproto) form, and each
// supported version's text: the middleware runs on every request, and
// canonicalizing, formatting and a regexp were 3 % of a heartbeat's CPU.
var (
	versionKey    = textproto.CanonicalMIMEHeaderKey(versionHeader)
	minVersionKey = textproto.CanonicalMIMEHeaderKey(minVersionHeader)
	maxVersionKey = textproto.CanonicalMIMEHeaderKey(maxVersionHeader)
	versionTexts  = func() []string {
		t := make([]string, maxV.Minor+1)
		for m := range t {
			t[m] = Version{1, m}.String()
		}
		return t
	}()
	// The version headers' values, shared by every answer (a header's
	// value is replaced, never written in place): three slices less per
	// request.
	minVersionValue, maxVersionValue = []string{MinVersion}, []string{MaxVersion}
	versionValues                    = func() [][]string {
		v := make([][]string, len(versionTexts))
		for m, t := range versionTexts {
			v[m] = []string{t}
		}
		return v
	}()
)

// parseVersion parses "MAJOR.MINOR", both decimal digits only.
func parseVersion(raw string) (Version, bool) {
	maj, min, ok := strings.Cut(raw, ".")
	a, okA := digits(maj)
	b, okB := digits(min)
	return Version{a, b}, ok && okA && okB
}

// digits is the value of s, one or more decimal digits; a value past 1<<30
// stays there (out of every range, as strconv.Atoi's clamp was).
func digits(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	v := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		v = min(v*10+int(s[i]-'0'), 1<<30)
	}
	return v, true
}

// version negotiates the microversion: absent is 1.1, "latest" the maximum,
// anything outside [min, max] is 406.
func (s *Server) version(c *gin.Context) {
	h := c.Writer.Header()
	h[minVersionKey] = minVersionValue
	h[maxVersionKey] = maxVersionValue
	raw := strings.TrimSpace(c.GetHeader(versionHeader))
	v := minV
	switch {
	case raw == "":
	case strings.EqualFold(raw, "latest"):
		v = maxV
	default:
		var ok bool
		if v, ok = parseVersion(raw); !ok {
			fail(c, http.StatusBadRequest, fmt.Sprintf("Invalid value for %s header: %q; expected a version like 1.62 or \"latest\"", versionHeader, raw))
			return
		}
		if v.Major != 1 || v.Minor < minV.Minor || v.Minor > maxV.Minor {
			fail(c, http.StatusNotAcceptable, fmt.Sprintf("Version %s was requested but the minor version is not supported by this service. The supported version range is: [%s, %s].", raw, MinVersion, MaxVersion))
			return
		}
	}
	h[versionKey] = versionValues[v.Minor]
	c.Next()
}

// ver is the request's negotiated version, as the version middleware
// answers it (X-OpenStack-Ironic-API-Version of the answer): kept in gin's
// key map, it cost a map per request.
func ver(c *gin.Context) Version {
	if h := c.Writer.Header()[versionKey]; len(h) == 1 {
		if v, ok := parseVersion(h[0]); ok {
			return v
		}
	}
	return minV
}

// decode reads a JSON body strictly: malformed JSON, unknown fields, wrong
// types and trailing data are 400s naming what is wrong.
func decode(c *gin.Context, v any, optional bool) bool {
	body, ok := readBody(c)
	return ok && decodeBody(c, body, v, optional)
}

// readBody reads the request body (at most maxBody).
func readBody(c *gin.Context) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxBody))
	if err != nil {
		fail(c, http.StatusBadRequest, "Could not read the request body: "+err.Error())
		return nil, false
	}
	return body, true
}

// decodeBody is decode's check and decoding of a body read.
func decodeBody(c *gin.Context, body []byte, v any, optional bool) bool {
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return true
		}
		fail(c, http.StatusBadRequest, "The request body is empty; a JSON object is required")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		fail(c, http.StatusBadRequest, jsonError(err))
		return false
	}
	if dec.More() {
		fail(c, http.StatusBadRequest, "Malformed JSON in the request body: unexpected data after the JSON value")
		return false
	}
	return true
}

func jsonError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("Malformed JSON in the request body at offset %d: %v", se.Offset, err)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return fmt.Sprintf("Invalid request body: expected %s, got a JSON %s", te.Type, te.Value)
		}
		return fmt.Sprintf("Invalid type for field %q: expected %s, got a JSON %s", field, te.Type, te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "Malformed JSON in the request body: unexpected end of input"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Sprintf("Unknown attribute %s in the request body", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return "Invalid request body: " + err.Error()
}

func baseURL(c *gin.Context) string {
	scheme := "http"
	if c.Request.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + c.Request.Host
}

func links(c *gin.Context, kind, id string) []map[string]string {
	b := baseURL(c)
	return []map[string]string{
		{"href": b + "/v1/" + kind + "/" + id, "rel": "self"},
		{"href": b + "/" + kind + "/" + id, "rel": "bookmark"},
	}
}

func (s *Server) versionDoc(c *gin.Context) map[string]any {
	return map[string]any{
		"id": "v1", "status": "CURRENT", "min_version": MinVersion, "version": MaxVersion,
		"links": []map[string]string{{"href": baseURL(c) + "/v1/", "rel": "self"}},
	}
}

func (s *Server) root(c *gin.Context) {
	d := s.versionDoc(c)
	c.JSON(http.StatusOK, gin.H{
		"name":            "OpenStack Ironic API",
		"description":     "Ironic is an OpenStack project which enables the provision and management of baremetal machines. (ironlab)",
		"default_version": d,
		"versions":        []any{d},
	})
}

func (s *Server) v1(c *gin.Context) {
	b := baseURL(c)
	res := func(name string) []map[string]string {
		return []map[string]string{{"href": b + "/v1/" + name + "/", "rel": "self"}, {"href": b + "/" + name + "/", "rel": "bookmark"}}
	}
	c.JSON(http.StatusOK, gin.H{
		"id":          "v1",
		"links":       []map[string]string{{"href": b + "/v1/", "rel": "self"}},
		"media_types": []map[string]string{{"base": "application/json", "type": "application/vnd.openstack.ironic.v1+json"}},
		"version":     s.versionDoc(c),
		"nodes":       res("nodes"),
		"ports":       res("ports"),
		"drivers":     res("drivers"),
		"lookup":      res("lookup"),
		"heartbeat":   res("heartbeat"),
	})
}

func (s *Server) listDrivers(c *gin.Context) {
	host := s.c.Config().Host
	out := []any{}
	for _, name := range s.c.EnabledDrivers() {
		out = append(out, gin.H{"name": name, "hosts": []string{host}, "type": "classic", "links": links(c, "drivers", name)})
	}
	c.JSON(http.StatusOK, gin.H{"drivers": out})
}
