// Package ironic is ironlab's one client of the Ironic API: the part of it
// that the scenario runner, the ironlab command and the tests speak to a
// driver, the built-in one or a real Ironic alike. It sits on the lab's
// side of the API seam (the driver never imports it; its own tests may).
package ironic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxVersion is the newest API microversion the client asks for (1.78:
// node history); it settles on the older of this and the server's default.
const MaxVersion = "1.78"

// Client calls one Ironic API.
type Client struct {
	base    string
	version string
	http    *http.Client
	// lockRetries and lockRetryInterval: a request refused because the node
	// is locked (409 "... is locked by host ...") is sent again, as
	// python-ironicclient does (5 tries, 2 s apart): Ironic's conductor keeps
	// a node locked for a moment after a state change (a Redfish node's BIOS
	// settings are cached after manage) and during periodic tasks.
	lockRetries       int
	lockRetryInterval time.Duration
}

// Defaults of python-ironicclient (ironicclient/common/http.py).
const (
	defaultLockRetries       = 5
	defaultLockRetryInterval = 2 * time.Second
)

// SetLockRetries changes how often and how far apart a request refused for
// a locked node is retried (tries 1: never).
func (c *Client) SetLockRetries(tries int, interval time.Duration) {
	c.lockRetries, c.lockRetryInterval = tries, interval
}

// Node is the part of a node the lab reads.
type Node struct {
	UUID                 string  `json:"uuid"`
	Name                 string  `json:"name"`
	Driver               string  `json:"driver"`
	ProvisionState       string  `json:"provision_state"`
	TargetProvisionState *string `json:"target_provision_state"`
	PowerState           *string `json:"power_state"`
	Maintenance          bool    `json:"maintenance"`
	MaintenanceReason    *string `json:"maintenance_reason"`
	LastError            *string `json:"last_error"`
	Reservation          *string `json:"reservation"`
	// Conductor is who services the node (API 1.49+): its owner on the
	// conductors' hash ring.
	Conductor  *string        `json:"conductor"`
	DriverInfo map[string]any `json:"driver_info"`
}

// Error is last_error, or "".
func (n Node) Error() string { return deref(n.LastError) }

// Power is power_state, or "".
func (n Node) Power() string { return deref(n.PowerState) }

// Reason is maintenance_reason, or "".
func (n Node) Reason() string { return deref(n.MaintenanceReason) }

// Settled says the node has no target provision state: nothing under way.
//
// A failed state is settled too: Ironic keeps the target of a timed-out or
// failed rescue ("rescue failed" -> "rescue"; keep_target_state), though
// no work goes on.
func (n Node) Settled() bool {
	return deref(n.TargetProvisionState) == "" || strings.HasSuffix(n.ProvisionState, " failed")
}

// LastHeartbeat is when the driver recorded the agent's last heartbeat
// (driver_info.agent_last_heartbeat: Unix seconds or RFC 3339).
func (n Node) LastHeartbeat() (time.Time, bool) {
	switch v := n.DriverInfo["agent_last_heartbeat"].(type) {
	case float64:
		return time.Unix(int64(v), 0), true
	case string:
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Error is an error answer of the API: its status and Ironic's faultstring.
type Error struct {
	Status int
	Method string
	Path   string
	Msg    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, e.Msg)
}

// IsStatus says whether err is an API answer with that HTTP status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// New connects to the API at base (e.g. http://127.0.0.1:6385): it reads
// the version document and settles on a microversion both sides know.
// httpClient may be nil: then one with a 30 s timeout and no proxy (the
// lab is on loopback).
func New(ctx context.Context, base string, httpClient *http.Client) (*Client, error) {
	if httpClient == nil {
		httpClient = &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64},
		}
	}
	c := &Client{base: strings.TrimRight(base, "/"), version: "1.1", http: httpClient,
		lockRetries: defaultLockRetries, lockRetryInterval: defaultLockRetryInterval}
	var root struct {
		Default struct {
			Version string `json:"version"`
		} `json:"default_version"`
	}
	if err := c.Do(ctx, http.MethodGet, "/", nil, &root); err != nil {
		return nil, fmt.Errorf("driver API at %s: %w", base, err)
	}
	c.version = minVersion(root.Default.Version, MaxVersion)
	return c, nil
}

// Dial is a client of the API at base that sends a fixed microversion
// ("latest", "1.62") without asking the server first: for tests that
// check the API's answers themselves.
func Dial(base, version string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	}
	return &Client{base: strings.TrimRight(base, "/"), version: version, http: httpClient,
		lockRetries: defaultLockRetries, lockRetryInterval: defaultLockRetryInterval}
}

// URL is the API's base URL; Version the microversion the client sends.
func (c *Client) URL() string     { return c.base }
func (c *Client) Version() string { return c.version }

func minVersion(a, b string) string {
	if a == "" {
		return b
	}
	pa, pb := splitVersion(a), splitVersion(b)
	if pa[0] < pb[0] || pa[0] == pb[0] && pa[1] < pb[1] {
		return a
	}
	return b
}

func splitVersion(v string) [2]int {
	maj, min, _ := strings.Cut(v, ".")
	a, _ := strconv.Atoi(maj)
	b, _ := strconv.Atoi(min)
	return [2]int{a, b}
}

// Do sends body (JSON, when not nil) and decodes a 2xx answer into out
// (when not nil); another status is an *Error.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	status, b, err := c.Raw(ctx, method, path, body)
	for try := 1; err == nil && try < c.lockRetries && isNodeLocked(status, b); try++ {
		t := time.NewTimer(c.lockRetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s %s: %d %s (waiting to retry: %w)", method, path, status, ErrorMessage(b), ctx.Err())
		case <-t.C:
		}
		status, b, err = c.Raw(ctx, method, path, body)
	}
	if err != nil {
		return err
	}
	if status >= 300 {
		return &Error{Status: status, Method: method, Path: path, Msg: ErrorMessage(b)}
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// Raw sends body (JSON, when not nil) and returns the answer's status and
// body, whatever they are; err is for a request that got no answer.
func (c *Client) Raw(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, fmt.Errorf("%s %s: encode the request: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("X-OpenStack-Ironic-API-Version", c.version)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	return resp.StatusCode, b, nil
}

// isNodeLocked says whether an answer is Ironic's NodeLocked refusal (409
// "Node <uuid> is locked by host <host>, please retry ...").
func isNodeLocked(status int, body []byte) bool {
	return status == http.StatusConflict && strings.Contains(ErrorMessage(body), " is locked by host ")
}

// ErrorMessage digs the faultstring out of Ironic's error body, whose
// error_message is itself a JSON string.
func ErrorMessage(b []byte) string {
	var e struct {
		ErrorMessage string `json:"error_message"`
	}
	if json.Unmarshal(b, &e) != nil || e.ErrorMessage == "" {
		return strings.TrimSpace(string(b))
	}
	var inner struct {
		Faultstring string `json:"faultstring"`
	}
	if json.Unmarshal([]byte(e.ErrorMessage), &inner) == nil && inner.Faultstring != "" {
		return inner.Faultstring
	}
	return e.ErrorMessage
}

// CreateNode enrolls a node (POST /v1/nodes) and returns it as created.
func (c *Client) CreateNode(ctx context.Context, body map[string]any) (Node, error) {
	var n Node
	err := c.Do(ctx, http.MethodPost, "/v1/nodes", body, &n)
	return n, err
}

// Drivers lists the driver names the API offers (GET /v1/drivers).
func (c *Client) Drivers(ctx context.Context) ([]string, error) {
	var out struct {
		Drivers []struct {
			Name string `json:"name"`
		} `json:"drivers"`
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/drivers", nil, &out); err != nil {
		return nil, err
	}
	var names []string
	for _, d := range out.Drivers {
		names = append(names, d.Name)
	}
	return names, nil
}

// CreatePort adds a port with MAC address mac to a node.
func (c *Client) CreatePort(ctx context.Context, nodeUUID, mac string) error {
	return c.Do(ctx, http.MethodPost, "/v1/ports", map[string]any{"node_uuid": nodeUUID, "address": mac}, nil)
}

// Node reads one node by UUID or name.
func (c *Client) Node(ctx context.Context, ident string) (Node, error) {
	var n Node
	err := c.Do(ctx, http.MethodGet, "/v1/nodes/"+ident, nil, &n)
	return n, err
}

// NodeFields reads only fields of one node (GET /v1/nodes/{ident}?fields=,
// API 1.8): the rest of the Node is left empty.
func (c *Client) NodeFields(ctx context.Context, ident string, fields ...string) (Node, error) {
	var n Node
	err := c.Do(ctx, http.MethodGet, "/v1/nodes/"+ident+"?fields="+url.QueryEscape(strings.Join(fields, ",")), nil, &n)
	return n, err
}

// Nodes reads every node (GET /v1/nodes/detail).
func (c *Client) Nodes(ctx context.Context) ([]Node, error) {
	var out struct {
		Nodes []Node `json:"nodes"`
	}
	err := c.Do(ctx, http.MethodGet, "/v1/nodes/detail", nil, &out)
	return out.Nodes, err
}

// StateFields are the fields NodeStates asks for.
const StateFields = "uuid,name,provision_state,target_provision_state,power_state,maintenance,maintenance_reason,last_error,reservation"

// NodeStates reads every node's states and errors, no more (GET
// /v1/nodes?fields=, API 1.8): what a wait polls, for a fraction of the
// driver's cost of /v1/nodes/detail (its JSON columns). Driver and
// DriverInfo stay empty.
func (c *Client) NodeStates(ctx context.Context) ([]Node, error) {
	var out struct {
		Nodes []Node `json:"nodes"`
	}
	err := c.Do(ctx, http.MethodGet, "/v1/nodes?fields="+StateFields, nil, &out)
	return out.Nodes, err
}

// Patch applies JSON-patch operations to a node.
func (c *Client) Patch(ctx context.Context, ident string, ops []map[string]any) error {
	return c.Do(ctx, http.MethodPatch, "/v1/nodes/"+ident, ops, nil)
}

// Provision asks for a provision state change: body holds "target" and,
// for some verbs, more (clean_steps).
func (c *Client) Provision(ctx context.Context, ident string, body map[string]any) error {
	return c.Do(ctx, http.MethodPut, "/v1/nodes/"+ident+"/states/provision", body, nil)
}

// SetPower asks for a power change: "power on", "power off", "rebooting",
// "soft power off".
func (c *Client) SetPower(ctx context.Context, ident, target string) error {
	return c.Do(ctx, http.MethodPut, "/v1/nodes/"+ident+"/states/power", map[string]any{"target": target}, nil)
}

// Events reads a node's full event list (the lab extension
// /v1/nodes/{id}/events), falling back to Ironic's node history.
func (c *Client) Events(ctx context.Context, ident string) ([]json.RawMessage, error) {
	var out struct {
		Events  []json.RawMessage `json:"events"`
		History []json.RawMessage `json:"history"`
	}
	err := c.Do(ctx, http.MethodGet, "/v1/nodes/"+ident+"/events", nil, &out)
	if IsStatus(err, http.StatusNotFound) {
		err = c.Do(ctx, http.MethodGet, "/v1/nodes/"+ident+"/history", nil, &out)
	}
	if out.Events == nil {
		out.Events = out.History
	}
	return out.Events, err
}

// ProfilePiece ends the driver's CPU profile piece and begins one named
// name (the lab extension PUT /v1/lab/profile of a driver started with
// --cpuprofile; others answer 404), returning the file it writes.
func (c *Client) ProfilePiece(ctx context.Context, name string) (file string, err error) {
	var out struct {
		File string `json:"file"`
	}
	err = c.Do(ctx, http.MethodPut, "/v1/lab/profile", map[string]string{"name": name}, &out)
	return out.File, err
}

// Process is the driver process's pid and CPU seconds (the lab extension
// GET /v1/lab/process; a real Ironic answers 404).
func (c *Client) Process(ctx context.Context) (pid int, cpuSeconds float64, err error) {
	var out struct {
		PID        int     `json:"pid"`
		CPUSeconds float64 `json:"cpu_seconds"`
	}
	err = c.Do(ctx, http.MethodGet, "/v1/lab/process", nil, &out)
	return out.PID, out.CPUSeconds, err
}
