package scenarios

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// client is the small part of the Ironic API the runner speaks. Scenarios
// drive a driver only through it, so the same scenario can target the
// built-in driver or a real Ironic.
type client struct {
	base    string
	version string
	http    *http.Client
}

// apiNode is the part of a node the runner reads.
type apiNode struct {
	UUID                 string         `json:"uuid"`
	Name                 string         `json:"name"`
	Driver               string         `json:"driver"`
	ProvisionState       string         `json:"provision_state"`
	TargetProvisionState *string        `json:"target_provision_state"`
	PowerState           *string        `json:"power_state"`
	Maintenance          bool           `json:"maintenance"`
	MaintenanceReason    *string        `json:"maintenance_reason"`
	LastError            *string        `json:"last_error"`
	Reservation          *string        `json:"reservation"`
	DriverInfo           map[string]any `json:"driver_info"`
}

func (n apiNode) lastError() string {
	if n.LastError == nil {
		return ""
	}
	return *n.LastError
}

// lastHeartbeat is when the driver recorded the agent's last heartbeat.
func (n apiNode) lastHeartbeat() (time.Time, bool) {
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

func (n apiNode) maintenanceReason() string {
	if n.MaintenanceReason == nil {
		return ""
	}
	return *n.MaintenanceReason
}

func (n apiNode) power() string {
	if n.PowerState == nil {
		return ""
	}
	return *n.PowerState
}

func (n apiNode) settled() bool {
	return n.TargetProvisionState == nil || *n.TargetProvisionState == ""
}

// apiError is an error answer of the API.
type apiError struct {
	Status int
	Method string
	Path   string
	Msg    string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, e.Msg)
}

func newClient(ctx context.Context, base string) (*client, error) {
	c := &client{base: strings.TrimRight(base, "/"), version: "1.1", http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64},
	}}
	var root struct {
		Default struct {
			Version string `json:"version"`
		} `json:"default_version"`
	}
	if err := c.do(ctx, http.MethodGet, "/", nil, &root); err != nil {
		return nil, fmt.Errorf("driver API at %s: %w", base, err)
	}
	// Use the newest version both sides know, up to 1.78 (node history).
	c.version = minVersion(root.Default.Version, "1.78")
	return c, nil
}

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

func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("X-OpenStack-Ironic-API-Version", c.version)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return &apiError{Status: resp.StatusCode, Method: method, Path: path, Msg: errorMessage(b)}
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// errorMessage digs the faultstring out of Ironic's error body, whose
// error_message is itself a JSON string.
func errorMessage(b []byte) string {
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

func (c *client) createNode(ctx context.Context, body map[string]any) (apiNode, error) {
	var n apiNode
	err := c.do(ctx, http.MethodPost, "/v1/nodes", body, &n)
	return n, err
}

// drivers lists the names the driver API offers (GET /v1/drivers).
func (c *client) drivers(ctx context.Context) ([]string, error) {
	var out struct {
		Drivers []struct {
			Name string `json:"name"`
		} `json:"drivers"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/drivers", nil, &out); err != nil {
		return nil, err
	}
	var names []string
	for _, d := range out.Drivers {
		names = append(names, d.Name)
	}
	return names, nil
}

func (c *client) createPort(ctx context.Context, nodeUUID, mac string) error {
	return c.do(ctx, http.MethodPost, "/v1/ports", map[string]any{"node_uuid": nodeUUID, "address": mac}, nil)
}

func (c *client) node(ctx context.Context, ident string) (apiNode, error) {
	var n apiNode
	err := c.do(ctx, http.MethodGet, "/v1/nodes/"+ident, nil, &n)
	return n, err
}

func (c *client) nodes(ctx context.Context) ([]apiNode, error) {
	var out struct {
		Nodes []apiNode `json:"nodes"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/nodes/detail", nil, &out)
	return out.Nodes, err
}

func (c *client) patch(ctx context.Context, ident string, ops []map[string]any) error {
	return c.do(ctx, http.MethodPatch, "/v1/nodes/"+ident, ops, nil)
}

func (c *client) provisionBody(ctx context.Context, ident string, body map[string]any) error {
	return c.do(ctx, http.MethodPut, "/v1/nodes/"+ident+"/states/provision", body, nil)
}

// events reads a node's full event list (the lab's extension), falling back
// to Ironic's node history.
func (c *client) events(ctx context.Context, ident string) ([]json.RawMessage, error) {
	var out struct {
		Events  []json.RawMessage `json:"events"`
		History []json.RawMessage `json:"history"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/nodes/"+ident+"/events", nil, &out)
	if ae, ok := err.(*apiError); ok && ae.Status == http.StatusNotFound {
		err = c.do(ctx, http.MethodGet, "/v1/nodes/"+ident+"/history", nil, &out)
	}
	if out.Events == nil {
		out.Events = out.History
	}
	return out.Events, err
}

// process is the driver process's pid and CPU seconds (the lab extension
// GET /v1/lab/process).
func (c *client) process(ctx context.Context) (pid int, cpuSeconds float64, err error) {
	var out struct {
		PID        int     `json:"pid"`
		CPUSeconds float64 `json:"cpu_seconds"`
	}
	err = c.do(ctx, http.MethodGet, "/v1/lab/process", nil, &out)
	return out.PID, out.CPUSeconds, err
}
