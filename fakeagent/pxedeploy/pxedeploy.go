// Package pxedeploy is the deploy ramdisk of the mock PXE driver: the old
// model, before the agent. Booted with ironlab.mode=pxe-deploy on its kernel
// command line, it looks nothing up: it exposes the machine's disk for
// writing over HTTP and calls the conductor back once with
// POST /v1/nodes/{uuid}/vendor_passthru/pass_deploy_info {"address", "key"},
// retrying while the API is not ready. The conductor then streams the image
// onto the disk itself, asks for a hash of what was written, and reboots the
// machine through its power interface; the ramdisk never powers anything.
//
// The HTTP API, relative to the advertised address:
//
//	GET  /                         {"mode", "node_uuid", "disk_size"}
//	PUT  /disk[?offset=N]          the body is written at offset N (default 0); {"written": n}
//	GET  /disk/sha256?length=N     sha256 of the first N bytes (default: the whole disk); {"sha256", "length"}
//	POST /disk/erase               zeroes the whole disk; {"erased": n}
//
// Every /disk call carries the deploy key in the X-Ironlab-Deploy-Key header.
//
// In the fake backend the lab runs it in process (one Mux serves them all);
// in a VM the same static binary starts it from /proc/cmdline
// (ConfigFromCmdline, then ListenAndRun).
package pxedeploy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ironlab/ironlab/fakeagent"
)

// Kernel command line words.
const (
	// ModeWord selects what the ramdisk runs: ModePXEDeploy, or the agent.
	ModeWord = "ironlab.mode"
	// ModePXEDeploy is ModeWord's value that runs this deploy ramdisk.
	ModePXEDeploy = "pxe-deploy"
	// ModeAgent is ModeWord's value (or its absence) that runs the agent.
	ModeAgent = "agent"
	// KeyWord carries the one-time deploy key the conductor expects back.
	KeyWord = "ironlab.deploy-key"
)

// KeyHeader carries the deploy key on every /disk request.
const KeyHeader = "X-Ironlab-Deploy-Key"

// DefaultListen is where a standalone ramdisk listens (in a VM).
const DefaultListen = "0.0.0.0:9999"

// Mode returns the ironlab.mode word of a kernel command line: ModeAgent
// when it is absent.
func Mode(cmdline string) string {
	for _, w := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(w, ModeWord+"="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return ModeAgent
}

// Config is what one deploy ramdisk needs.
type Config struct {
	// APIURL is the driver API, e.g. http://127.0.0.1:6385 (ipa-api-url).
	APIURL string
	// NodeUUID is the node to call back for (ipa-node-uuid).
	NodeUUID string
	// DeployKey is sent back in pass_deploy_info (ironlab.deploy-key).
	DeployKey string
	// BootMAC is the MAC the machine booted from (BOOTIF), for logs.
	BootMAC string
	// AdvertiseURL is the address sent in pass_deploy_info: where the
	// conductor reaches this ramdisk's HTTP API. With a Mux, Mux.URL(uuid).
	AdvertiseURL string
	// Listen is the address ListenAndRun serves on (DefaultListen).
	Listen string
	// Disk is the machine's disk (a sparse file in fake mode, /dev/vda in a VM).
	Disk fakeagent.Disk
	// RetryInterval is the pause between call-back attempts (1 s).
	RetryInterval time.Duration
	// RequestTimeout bounds each call-back (30 s).
	RequestTimeout time.Duration
	// HTTPClient calls the API (default: one with loopback-friendly timeouts).
	HTTPClient *http.Client
	// Logger receives the ramdisk's logs (slog.Default()).
	Logger *slog.Logger
	// Console, when set, gets AcceptedLine once the conductor accepts the
	// call-back, as a real ramdisk prints its milestones on the machine's
	// console: the one trace of an accepted call-back whose conductor died
	// before recording it.
	Console io.Writer
}

// AcceptedMarker starts AcceptedLine.
const AcceptedMarker = "ironlab deploy ramdisk: pass_deploy_info accepted"

// AcceptedLine is the console line of a call-back the conductor accepted
// (202) on the given attempt; the ramdisk never calls again after it.
func AcceptedLine(attempt int) string {
	return fmt.Sprintf("%s (attempt %d)\n", AcceptedMarker, attempt)
}

// ConfigFromCmdline parses a kernel command line: ironlab.mode (must be
// pxe-deploy), ipa-api-url, ipa-node-uuid, ironlab.deploy-key, BOOTIF,
// ipa-advertise-host, ipa-advertise-port (9999) and ipa-advertise-protocol
// (http). Unknown words are ignored. Disk and logging are the caller's.
func ConfigFromCmdline(cmdline string) (Config, error) {
	var c Config
	if m := Mode(cmdline); m != ModePXEDeploy {
		return c, fmt.Errorf("kernel command line: %s=%s, not %s", ModeWord, m, ModePXEDeploy)
	}
	o, err := fakeagent.ParseIPAOptions(cmdline, func(key, val string) error {
		if key == KeyWord {
			c.DeployKey = val
		}
		return nil
	})
	if err != nil {
		return c, err
	}
	c.APIURL, c.NodeUUID, c.BootMAC = o.APIURL, o.NodeUUID, o.BootMAC
	if o.AdvertiseHost != "" {
		c.AdvertiseURL = o.AdvertiseURL()
		c.Listen = "0.0.0.0:" + o.AdvertisePort
	}
	return c, c.check(false)
}

func (c *Config) check(needDisk bool) error {
	switch {
	case c.APIURL == "":
		return errors.New("pxedeploy: ipa-api-url is missing")
	case c.NodeUUID == "":
		return errors.New("pxedeploy: ipa-node-uuid is missing")
	case c.DeployKey == "":
		return fmt.Errorf("pxedeploy: %s is missing", KeyWord)
	case needDisk && c.Disk == nil:
		return errors.New("pxedeploy: no disk")
	case needDisk && c.AdvertiseURL == "":
		return errors.New("pxedeploy: no advertise URL (ipa-advertise-host, or a Mux)")
	}
	if _, err := url.Parse(c.APIURL); err != nil {
		return fmt.Errorf("pxedeploy: ipa-api-url %q: %w", c.APIURL, err)
	}
	return nil
}

var sharedClient = &http.Client{Transport: &http.Transport{
	Proxy:                 nil, // loopback only; never a proxy
	DialContext:           (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	MaxIdleConnsPerHost:   64,
	ResponseHeaderTimeout: 30 * time.Second,
}}

// Ramdisk is one running deploy ramdisk.
type Ramdisk struct {
	cfg Config
	log *slog.Logger
	mu  sync.Mutex // one disk operation at a time
}

// New checks cfg and returns a ramdisk; Run calls back, ServeHTTP serves the disk.
func New(cfg Config) (*Ramdisk, error) {
	if err := cfg.check(true); err != nil {
		return nil, err
	}
	cfg.APIURL = strings.TrimRight(cfg.APIURL, "/")
	cfg.AdvertiseURL = strings.TrimRight(cfg.AdvertiseURL, "/")
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = sharedClient
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Ramdisk{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeUUID, "mode", ModePXEDeploy)}, nil
}

// NodeUUID is the node this ramdisk calls back for.
func (r *Ramdisk) NodeUUID() string { return r.cfg.NodeUUID }

// ErrRefused is wrapped when the API refuses the call-back for good (a 4xx
// other than 409: wrong key, unknown node, node not waiting).
var ErrRefused = errors.New("pass_deploy_info refused")

// Run calls the conductor back until it accepts (202), then serves until
// ctx ends (the machine powers off or resets) and returns nil. A refused
// call-back ends Run with ErrRefused; the ramdisk has nothing else to do.
func (r *Ramdisk) Run(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := r.callBack(ctx)
		if err == nil {
			r.log.Info("pass_deploy_info accepted", "address", r.cfg.AdvertiseURL, "attempt", attempt)
			if r.cfg.Console != nil {
				io.WriteString(r.cfg.Console, AcceptedLine(attempt))
			}
			break
		}
		if errors.Is(err, ErrRefused) {
			r.log.Error("pass_deploy_info refused", "err", err)
			return err
		}
		r.log.Debug("pass_deploy_info failed; retrying", "err", err, "attempt", attempt)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.cfg.RetryInterval):
		}
	}
	<-ctx.Done()
	return nil
}

func (r *Ramdisk) callBack(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	u := r.cfg.APIURL + "/v1/nodes/" + url.PathEscape(r.cfg.NodeUUID) + "/vendor_passthru/pass_deploy_info"
	body, _ := json.Marshal(map[string]string{"address": r.cfg.AdvertiseURL, "key": r.cfg.DeployKey})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", u, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK:
		return nil
	case resp.StatusCode == http.StatusConflict || resp.StatusCode >= 500:
		return fmt.Errorf("POST %s: status %d: %s", u, resp.StatusCode, bytes.TrimSpace(msg))
	default:
		return fmt.Errorf("POST %s: status %d: %s: %w", u, resp.StatusCode, bytes.TrimSpace(msg), ErrRefused)
	}
}

// ServeHTTP serves the ramdisk's API; paths are relative to its address.
func (r *Ramdisk) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.serve(w, req, req.URL.Path)
}

func (r *Ramdisk) serve(w http.ResponseWriter, req *http.Request, path string) {
	path = "/" + strings.Trim(path, "/")
	if path == "/" {
		if req.Method != http.MethodGet {
			writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": "use GET"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"mode": ModePXEDeploy, "node_uuid": r.cfg.NodeUUID, "disk_size": r.cfg.Disk.Size()})
		return
	}
	if req.Header.Get(KeyHeader) != r.cfg.DeployKey {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "wrong or missing " + KeyHeader})
		return
	}
	switch {
	case path == "/disk" && req.Method == http.MethodPut:
		r.write(w, req)
	case path == "/disk/sha256" && req.Method == http.MethodGet:
		r.hash(w, req)
	case path == "/disk/erase" && req.Method == http.MethodPost:
		r.erase(w, req)
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"error": fmt.Sprintf("no route %s %s", req.Method, path)})
	}
}

func intParam(req *http.Request, name string, def int64) (int64, error) {
	s := req.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s=%q is not a non-negative integer", name, s)
	}
	return n, nil
}

const chunk = 1 << 20

func (r *Ramdisk) write(w http.ResponseWriter, req *http.Request) {
	off, err := intParam(req, "offset", 0)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
		return
	}
	size := r.cfg.Disk.Size()
	if off > size || req.ContentLength > 0 && req.ContentLength > size-off { // no off+length: it may overflow
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"error": fmt.Sprintf("%d bytes at offset %d do not fit the disk (%d bytes)", req.ContentLength, off, size)})
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	buf := make([]byte, chunk)
	var written int64
	for {
		n, rerr := io.ReadFull(req.Body, buf)
		if n > 0 {
			if _, err := r.cfg.Disk.WriteAt(buf[:n], off+written); err != nil {
				writeJSON(w, http.StatusInsufficientStorage, map[string]any{"error": err.Error(), "written": written})
				return
			}
			written += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "read body: " + rerr.Error(), "written": written})
			return
		}
	}
	if err := r.cfg.Disk.Sync(); err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": "sync: " + err.Error(), "written": written})
		return
	}
	r.log.Info("disk written", "offset", off, "bytes", written)
	writeJSON(w, http.StatusOK, map[string]any{"written": written})
}

func (r *Ramdisk) hash(w http.ResponseWriter, req *http.Request) {
	size := r.cfg.Disk.Size()
	n, err := intParam(req, "length", size)
	if err == nil && n > size {
		err = fmt.Errorf("length %d is beyond the disk's %d bytes", n, size)
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, io.NewSectionReader(r.cfg.Disk, 0, n), make([]byte, chunk)); err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": "read disk: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sha256": hex.EncodeToString(h.Sum(nil)), "length": n})
}

// erase zeroes the disk: a hole punched through a sparse file, zeros
// written elsewhere (a block device).
func (r *Ramdisk) erase(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	size := r.cfg.Disk.Size()
	punched := false
	if p, ok := r.cfg.Disk.(interface{ PunchHole(off, length int64) error }); ok && p.PunchHole(0, size) == nil {
		punched = true
	}
	if !punched {
		zeros := make([]byte, chunk)
		for off := int64(0); off < size; off += chunk {
			if err := req.Context().Err(); err != nil {
				return
			}
			n := min(int64(chunk), size-off)
			if _, err := r.cfg.Disk.WriteAt(zeros[:n], off); err != nil {
				writeJSON(w, http.StatusInternalServerError, map[string]any{"error": err.Error()})
				return
			}
		}
	}
	if err := r.cfg.Disk.Sync(); err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": "sync: " + err.Error()})
		return
	}
	r.log.Info("disk erased", "bytes", size, "punched", punched)
	writeJSON(w, http.StatusOK, map[string]any{"erased": size})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ListenAndRun serves the ramdisk on cfg.Listen (DefaultListen) and runs
// it until ctx ends: the standalone form, inside a VM.
func ListenAndRun(ctx context.Context, cfg Config) error {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	rd, err := New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("pxedeploy: listen on %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{Handler: rd, ReadHeaderTimeout: 10 * time.Second}
	return fakeagent.ServeWhile(ctx, srv, ln, rd.Run)
}

// Mux serves many ramdisks on one listener, each under <base path>/<node-uuid>.
type Mux struct {
	base   string
	prefix string
	mu     sync.RWMutex
	m      map[string]*Ramdisk
}

// NewMux makes a Mux reachable at baseURL (e.g. http://127.0.0.1:9000/pxe);
// its path is stripped from requests before routing by node UUID.
func NewMux(baseURL string) *Mux {
	base := strings.TrimRight(baseURL, "/")
	prefix := ""
	if u, err := url.Parse(base); err == nil {
		prefix = strings.TrimRight(u.Path, "/")
	}
	return &Mux{base: base, prefix: prefix, m: map[string]*Ramdisk{}}
}

// URL is the advertised address of node uuid's ramdisk.
func (m *Mux) URL(uuid string) string { return m.base + "/" + uuid }

// Prefix is the path under which the Mux routes (e.g. "/pxe").
func (m *Mux) Prefix() string { return m.prefix }

// Add serves r under its node UUID, replacing any ramdisk there.
func (m *Mux) Add(r *Ramdisk) {
	m.mu.Lock()
	m.m[r.cfg.NodeUUID] = r
	m.mu.Unlock()
}

// Remove stops serving r (if it is still the one for its node).
func (m *Mux) Remove(r *Ramdisk) {
	m.mu.Lock()
	if m.m[r.cfg.NodeUUID] == r {
		delete(m.m, r.cfg.NodeUUID)
	}
	m.mu.Unlock()
}

// Len is the number of ramdisks served.
func (m *Mux) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.m)
}

// ServeHTTP routes <prefix>/<uuid>/... to that node's ramdisk.
func (m *Mux) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rest, ok := strings.CutPrefix(req.URL.Path, m.prefix+"/")
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "not under " + m.prefix})
		return
	}
	uuid, sub, _ := strings.Cut(rest, "/")
	m.mu.RLock()
	r, ok := m.m[uuid]
	m.mu.RUnlock()
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "no deploy ramdisk is running for node " + uuid})
		return
	}
	r.serve(w, req, "/"+sub)
}
