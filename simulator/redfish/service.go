// Package redfish serves virtual Redfish BMCs (DMTF Redfish, the subset
// Ironic's redfish hardware type, sushy, gofish and redfishtool use) in
// front of simulator.Machine, like the IPMI BMC of package bmc. One Service
// is one HTTP listener on loopback; it may hold thousands of systems
// (/redfish/v1/Systems/{uuid}, as sushy-tools does) or one per node.
//
// Power, boot override and virtual media act on the Machine, so a boot
// override set over Redfish is what the machine boots next, and an inserted
// CD is what a machine booting "Cd" fetches. Requests go through net/http's
// ServeMux method patterns: no framework is needed for about thirty
// resources, and the handler is a plain http.Handler that fuzzing and the
// benchmark call without a socket.
package redfish

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/ironlab/ironlab/internal/httpstop"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bmc"
)

// Options configure a Service. The zero value is usable.
type Options struct {
	// Credentials default to bmc.DefaultCredentials() (admin/password).
	Credentials bmc.Credentials
	// TLS serves https with a self-signed certificate for the listen
	// address, 127.0.0.1 and localhost (CACertPEM); false serves plain http.
	TLS bool
	// Faults are the service's initial injected failures.
	Faults Faults
	// SessionTimeout ends a session silent this long (default 30 min).
	SessionTimeout time.Duration
	// MaxSessions caps open sessions; a new one evicts the oldest (default 1024).
	MaxSessions int
	// MachineTimeout bounds one call into a Machine (default 2 min).
	MachineTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.Credentials == (bmc.Credentials{}) {
		o.Credentials = bmc.DefaultCredentials()
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 30 * time.Minute
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 1024
	}
	if o.MachineTimeout <= 0 {
		o.MachineTimeout = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// maxBody bounds a request body; Redfish requests are small JSON objects.
const maxBody = 64 << 10

// Service is one Redfish service: one listener, many systems.
type Service struct {
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
	uuid string

	faults   faultBox
	sessions sessionStore
	tasks    taskStore

	mu      sync.RWMutex
	systems map[string]*System
	order   []string

	cert    *tls.Certificate
	certPEM []byte

	ln   net.Listener
	srv  *httpstop.Server
	bg   sync.WaitGroup // late power changes, tasks
	stop context.CancelFunc
	ctx  context.Context // ends with Close: background work stops
}

// ErrDuplicateSystem is returned when a machine's UUID is already served.
var ErrDuplicateSystem = errors.New("system already served")

// New makes a service with no systems and no listener; Start binds it.
func New(opts Options) (*Service, error) {
	opts.defaults()
	if err := opts.Faults.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		opts:    opts,
		log:     opts.Logger,
		uuid:    uuid.NewString(),
		systems: map[string]*System{},
		ctx:     ctx,
		stop:    cancel,
	}
	s.faults.set(opts.Faults)
	s.sessions.init(opts.MaxSessions, opts.SessionTimeout)
	s.tasks.init()
	s.routes()
	return s, nil
}

// Start binds addr (loopback only, ":0"-style ports allowed) and serves in
// the background until Close.
func (s *Service) Start(addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("redfish service: address %q: %w", addr, err)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("redfish service: address %s is not loopback", addr)
	}
	if s.opts.TLS {
		cert, pemBytes, err := selfSigned(net.IP(ap.Addr().AsSlice()))
		if err != nil {
			return fmt.Errorf("redfish service: certificate for %s: %w", addr, err)
		}
		s.cert, s.certPEM = cert, pemBytes
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("redfish service: listen on %s: %w", addr, err)
	}
	s.ln = ln
	s.srv = httpstop.New(&http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	})
	if s.cert != nil {
		s.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*s.cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, s.srv.TLSConfig)
	}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("redfish service stopped", "addr", addr, "err", err)
		}
	}()
	return nil
}

// URL is the service's base URL ("https://127.0.0.1:8000"); empty before Start.
func (s *Service) URL() string {
	if s.ln == nil {
		return ""
	}
	scheme := "http"
	if s.cert != nil {
		scheme = "https"
	}
	return scheme + "://" + s.ln.Addr().String()
}

// CACertPEM is the self-signed certificate clients verify the service with
// (redfish_verify_ca); nil without TLS or before Start.
func (s *Service) CACertPEM() []byte { return s.certPEM }

// Close stops serving and waits for late power changes and tasks to end.
func (s *Service) Close() error {
	s.stop()
	var err error
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = s.srv.Shutdown(ctx)
		cancel()
		if err != nil {
			err = s.srv.Close()
		}
	}
	s.bg.Wait()
	return err
}

// Add serves m as /redfish/v1/Systems/{m.UUID()}, with a manager and a
// chassis of the same id.
func (s *Service) Add(m simulator.Machine) (*System, error) {
	id := m.UUID()
	if id == "" || strings.ContainsAny(id, "/?#% ") {
		return nil, fmt.Errorf("redfish service: machine %s: UUID %q cannot be a resource id", m.Name(), id)
	}
	sys, err := newSystem(s, m)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.systems[id]; ok {
		return nil, fmt.Errorf("redfish service: machine %s: %w: %s", m.Name(), ErrDuplicateSystem, id)
	}
	s.systems[id] = sys
	s.order = append(s.order, id)
	return sys, nil
}

// System is the system with id, or nil.
func (s *Service) System(id string) *System {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.systems[id]
}

func (s *Service) systemIDs() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.order)
}

// Faults are the service's current injected failures.
func (s *Service) Faults() Faults { return s.faults.get() }

// SetFaults replaces the service-wide injected failures.
func (s *Service) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	s.faults.set(f)
	return nil
}

// Credentials are what the service accepts.
func (s *Service) Credentials() bmc.Credentials { return s.opts.Credentials }

// ServeHTTP answers one request. Paths are matched without a trailing
// slash, except the service root, which Redfish names "/redfish/v1/".
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/redfish/v1":
		r.URL.Path = "/redfish/v1/"
	case len(p) > len("/redfish/v1/") && strings.HasSuffix(p, "/"):
		r.URL.Path = strings.TrimRight(p, "/")
	}
	w.Header().Set("OData-Version", "4.0")
	s.mux.ServeHTTP(w, r)
}

// faultBox holds one set of faults and the count of 5xx answers left.
type faultBox struct {
	mu   sync.Mutex
	f    Faults
	left int
}

func (b *faultBox) get() Faults {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.f
}

func (b *faultBox) set(f Faults) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.f, b.left = f, f.ServerErrorCount
}

// takeError is the 5xx status this request gets, or 0.
func (b *faultBox) takeError() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.f.ServerError == 0 {
		return 0
	}
	if b.f.ServerErrorCount == 0 {
		return b.f.ServerError
	}
	if b.left > 0 {
		b.left--
		return b.f.ServerError
	}
	return 0
}

// call is one request as a handler sees it.
type call struct {
	w      http.ResponseWriter
	r      *http.Request
	sys    *System // nil for service-wide resources
	faults Faults
}

// result is a handler's answer: a JSON body (nil: 204), extra headers.
type result struct {
	status int
	body   any
	header map[string]string
}

func ok(body any) (*result, *rfError) { return &result{status: http.StatusOK, body: body}, nil }
func noContent() (*result, *rfError)  { return &result{status: http.StatusNoContent}, nil }

type handler func(c *call) (*result, *rfError)

// Route flags.
const (
	public   = 1 << iota // no authentication (service root, login)
	onSystem             // the pattern's {id} names a system
)

// handle registers fn for "METHOD /path" and, once per path, a fallback
// answering other methods with 405 in the Redfish shape.
func (s *Service) handle(pattern string, flags int, fn handler, seen map[string]bool) {
	method, path, _ := strings.Cut(pattern, " ")
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		s.serve(w, r, flags, fn)
	})
	if !seen[path] {
		seen[path] = true
		s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			s.serve(w, r, flags, func(c *call) (*result, *rfError) {
				return nil, errorf(http.StatusMethodNotAllowed, "OperationNotAllowed", nil, nil,
					"The method %s is not allowed on %s.", r.Method, r.URL.Path)
			})
		})
	}
	_ = method
}

func (s *Service) serve(w http.ResponseWriter, r *http.Request, flags int, fn handler) {
	c := &call{w: w, r: r, faults: s.faults.get()}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("redfish handler panicked", "method", r.Method, "path", r.URL.Path, "panic", p)
			writeError(w, internal("The request failed inside the service."))
		}
	}()
	if flags&onSystem != 0 {
		c.sys = s.System(r.PathValue("id"))
		if c.sys != nil {
			c.faults = merge(c.faults, c.sys.faults.get())
		}
	}
	if d := time.Duration(c.faults.Delay); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	status := s.faults.takeError()
	if status == 0 && c.sys != nil {
		status = c.sys.faults.takeError()
	}
	if status != 0 {
		writeError(w, errorf(status, "InternalError", nil, nil, "Injected fault: the service answers %d.", status))
		return
	}
	if flags&public == 0 {
		if e := s.authenticate(r, c.faults); e != nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="ironlab redfish"`)
			writeError(w, e)
			return
		}
	}
	if flags&onSystem != 0 && c.sys == nil {
		writeError(w, notFound(r.URL.Path))
		return
	}
	res, e := fn(c)
	if e != nil {
		writeError(w, e)
		return
	}
	if res == nil {
		return // the handler wrote its own answer
	}
	for k, v := range res.header {
		w.Header().Set(k, v)
	}
	if res.body == nil {
		w.WriteHeader(res.status)
		return
	}
	b, err := json.Marshal(res.body)
	if err != nil {
		writeError(w, internal("encode the answer: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		w.Header().Set("ETag", etagOf(b))
	}
	w.WriteHeader(res.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

func writeError(w http.ResponseWriter, e *rfError) {
	b, _ := json.Marshal(e.body())
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

// etagOf is a resource's entity tag: a hash of what GET shows, so a PATCH
// with If-Match applies only to the state the client saw.
func etagOf(b []byte) string {
	h := fnv.New64a()
	_, _ = h.Write(b)
	return fmt.Sprintf(`W/"%016x"`, h.Sum64())
}

// checkETag compares If-Match with the resource's current rendering; weak
// and strong forms of the same tag match, as do "*" and no header.
func checkETag(r *http.Request, current any) *rfError {
	im := r.Header.Get("If-Match")
	if im == "" || im == "*" {
		return nil
	}
	b, err := json.Marshal(current)
	if err != nil {
		return internal("encode the resource: %v", err)
	}
	want := strings.TrimPrefix(etagOf(b), "W/")
	for _, t := range strings.Split(im, ",") {
		if strings.TrimPrefix(strings.TrimSpace(t), "W/") == want {
			return nil
		}
	}
	return errorf(http.StatusPreconditionFailed, "PreconditionFailed", nil, nil,
		"The ETag supplied did not match the ETag required to change this resource.")
}

// readObject reads a JSON object body: empty is {} for actions (sushy's
// EjectMedia posts none), anything else must be one object.
func readObject(c *call, emptyOK bool) (map[string]json.RawMessage, *rfError) {
	b, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errorf(http.StatusRequestEntityTooLarge, "GeneralError", nil, nil, "The request body is larger than %d bytes.", maxBody)
		}
		return nil, errorf(http.StatusBadRequest, "GeneralError", nil, nil, "Reading the request body failed: %v.", err)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		if emptyOK {
			return map[string]json.RawMessage{}, nil
		}
		return nil, errorf(http.StatusBadRequest, "MalformedJSON", nil, nil, "The request needs a JSON object body.")
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil {
		return nil, malformedJSON(err)
	}
	if obj == nil {
		return nil, malformedJSON(errors.New("want a JSON object, got null"))
	}
	if dec.More() {
		return nil, malformedJSON(errors.New("more than one JSON value"))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, malformedJSON(errors.New("trailing data after the object"))
	}
	return obj, nil
}

// onlyKeys refuses properties outside allowed (odata annotations pass).
func onlyKeys(obj map[string]json.RawMessage, prefix string, allowed ...string) *rfError {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if strings.HasPrefix(k, "@odata.") || slices.Contains(allowed, k) {
			continue
		}
		return propertyUnknown(prefix+"/"+k, k)
	}
	return nil
}

// str reads a JSON string property.
func str(raw json.RawMessage, ptr, name string) (string, *rfError) {
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", propertyType(ptr, name, string(raw))
	}
	return v, nil
}

// machineCtx bounds a call into a machine: a client hanging up must not
// stop a power change halfway.
func (s *Service) machineCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), s.opts.MachineTimeout)
}

// authenticate accepts an X-Auth-Token of an open session or HTTP Basic
// credentials.
func (s *Service) authenticate(r *http.Request, f Faults) *rfError {
	if f.RefuseCredentials {
		return errorf(http.StatusUnauthorized, "ResourceAtUriUnauthorized", nil, []string{r.URL.Path},
			"While accessing the resource at %s, the service received an authorization error: credentials refused.", r.URL.Path)
	}
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		if s.sessions.touch(tok) {
			return nil
		}
		return errorf(http.StatusUnauthorized, "NoValidSession", nil, nil,
			"There is no valid session established with the implementation.")
	}
	if u, p, ok := r.BasicAuth(); ok {
		if s.credentialsOK(u, p) {
			return nil
		}
		return errorf(http.StatusUnauthorized, "ResourceAtUriUnauthorized", nil, []string{r.URL.Path},
			"While accessing the resource at %s, the service received an authorization error: wrong user name or password.", r.URL.Path)
	}
	return errorf(http.StatusUnauthorized, "NoValidSession", nil, nil,
		"There is no valid session established with the implementation: send HTTP Basic credentials or an X-Auth-Token.")
}

func (s *Service) credentialsOK(user, pass string) bool {
	c := s.opts.Credentials
	u := subtle.ConstantTimeCompare([]byte(user), []byte(c.Username))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(c.Password))
	return u&p == 1
}

// odata returns the @odata annotations of a resource.
func odata(id, typ string) map[string]any {
	ctxType := strings.TrimPrefix(typ, "#")
	if i := strings.Index(ctxType, "."); i > 0 {
		ctxType = ctxType[:i] + "." + ctxType[strings.LastIndex(ctxType, ".")+1:]
	}
	return map[string]any{
		"@odata.id":      id,
		"@odata.type":    typ,
		"@odata.context": "/redfish/v1/$metadata#" + ctxType,
	}
}

func link(id string) map[string]any { return map[string]any{"@odata.id": id} }

func collection(id, typ, name string, members []string) map[string]any {
	m := odata(id, typ)
	m["Name"] = name
	ms := make([]any, len(members))
	for i, p := range members {
		ms[i] = link(p)
	}
	m["Members"] = ms
	m["Members@odata.count"] = len(members)
	return m
}

var statusOK = map[string]any{"State": "Enabled", "Health": "OK"}
