package fakeagent

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

// Microversions IPA pins (reference §2): lookup at min(max, 1.62), heartbeat
// at min(max, 1.68); agent_version needs 1.36.
const (
	lookupMinor       = 62
	heartbeatMinor    = 68
	agentVersionMinor = 36
	ramdiskAPIMinor   = 22
)

const versionHeader = "X-OpenStack-Ironic-API-Version"

type lookupResult struct {
	uuid       string
	timeout    time.Duration
	token      string
	md5Allowed *bool
	permitted  []string
}

// apiError is a non-success answer from the driver API.
type apiError struct {
	method, url string
	status      int
	message     string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s %s: status %d: %s", e.method, e.url, e.status, e.message)
}

func (a *Agent) lookupOnce(ctx context.Context) (lookupResult, error) {
	if a.cfg.Dialect == DialectLegacy {
		return a.lookupLegacy(ctx)
	}
	return a.lookupV1(ctx)
}

func (a *Agent) lookupV1(ctx context.Context) (lookupResult, error) {
	if a.apiMinor == 0 {
		minor, err := a.maxAPIMinor(ctx)
		if err != nil {
			return lookupResult{}, err
		}
		a.apiMinor = minor
	}
	if a.cfg.Mux != nil {
		tlsOn := a.cfg.Mux.certificatePEM() != "" && a.tlsWanted(a.apiMinor)
		a.mu.Lock()
		a.muxTLS = tlsOn
		a.mu.Unlock()
	}
	if a.apiMinor < ramdiskAPIMinor {
		return lookupResult{}, fmt.Errorf("driver API %s supports up to 1.%d; /v1/lookup needs 1.%d", a.cfg.APIURL, a.apiMinor, ramdiskAPIMinor)
	}
	q := url.Values{}
	q.Set("addresses", strings.Join(a.Inventory().MACs(), ","))
	if a.cfg.NodeUUID != "" {
		q.Set("node_uuid", a.cfg.NodeUUID)
	}
	var body struct {
		Node struct {
			UUID string `json:"uuid"`
		} `json:"node"`
		HeartbeatTimeout *float64 `json:"heartbeat_timeout"`
		Config           struct {
			HeartbeatTimeout *float64 `json:"heartbeat_timeout"`
			AgentToken       string   `json:"agent_token"`
			MD5Enable        *bool    `json:"agent_md5_checksum_enable"`
			Permitted        []string `json:"permitted_image_formats"`
		} `json:"config"`
	}
	status, err := a.call(ctx, http.MethodGet, "/v1/lookup?"+q.Encode(), min(a.apiMinor, lookupMinor), nil, &body)
	if err != nil {
		return lookupResult{}, err
	}
	if status != http.StatusOK {
		return lookupResult{}, fmt.Errorf("lookup: unexpected status %d", status)
	}
	if body.Node.UUID == "" {
		return lookupResult{}, errors.New("lookup: the answer has no node.uuid")
	}
	res := lookupResult{uuid: body.Node.UUID, token: body.Config.AgentToken, md5Allowed: body.Config.MD5Enable, permitted: body.Config.Permitted}
	// IPA still accepts the pre-1.22 shape with heartbeat_timeout at the top.
	if t := body.Config.HeartbeatTimeout; t != nil {
		res.timeout = seconds(*t)
	} else if t := body.HeartbeatTimeout; t != nil {
		res.timeout = seconds(*t)
	}
	return res, nil
}

func (a *Agent) lookupLegacy(ctx context.Context) (lookupResult, error) {
	// IPA sent the version as the string "2"; Juno/Kilo Ironic compared it
	// with '2', and ironlab's driver takes either form.
	req := map[string]any{"version": "2", "inventory": a.Inventory()}
	if a.cfg.NodeUUID != "" {
		req["node_uuid"] = a.cfg.NodeUUID
	}
	var body struct {
		HeartbeatTimeout *float64 `json:"heartbeat_timeout"`
		Node             struct {
			UUID string `json:"uuid"`
		} `json:"node"`
	}
	path := "/v1/drivers/" + url.PathEscape(a.cfg.Driver) + "/vendor_passthru/lookup"
	if _, err := a.call(ctx, http.MethodPost, path, 0, req, &body); err != nil {
		return lookupResult{}, err
	}
	if body.Node.UUID == "" {
		return lookupResult{}, errors.New("lookup: the answer has no node.uuid")
	}
	res := lookupResult{uuid: body.Node.UUID}
	if body.HeartbeatTimeout != nil {
		res.timeout = seconds(*body.HeartbeatTimeout)
	}
	return res, nil
}

func (a *Agent) heartbeatOnce(ctx context.Context) error {
	a.mu.Lock()
	uuid, token, agentURL, ca := a.nodeUUID, a.token, a.agentURLLocked(), a.verifyCALocked()
	wrongCA := a.faults.WrongVerifyCA
	a.mu.Unlock()
	if wrongCA && ca != "" {
		decoy, err := a.decoyCertificate()
		if err != nil {
			return err
		}
		ca = decoy
	}
	var err error
	if a.cfg.Dialect == DialectLegacy {
		_, err = a.call(ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(uuid)+"/vendor_passthru/heartbeat", 0,
			map[string]string{"agent_url": agentURL}, nil)
	} else {
		v := min(a.apiMinor, heartbeatMinor)
		body := map[string]string{"callback_url": agentURL}
		if token != "" {
			body["agent_token"] = token
		}
		if v >= agentVersionMinor {
			body["agent_version"] = AgentVersion
		}
		if v >= autoTLSMinor && ca != "" {
			body["agent_verify_ca"] = ca
		}
		_, err = a.call(ctx, http.MethodPost, "/v1/heartbeat/"+url.PathEscape(uuid), v, body, nil)
	}
	var ae *apiError
	if errors.As(err, &ae) {
		if ae.status == http.StatusNotFound ||
			(ae.status == http.StatusBadRequest && strings.Contains(strings.ToLower(ae.message), "token")) {
			return fmt.Errorf("%w: %v", errNeedLookup, err)
		}
	}
	return err
}

// maxAPIMinor reads default_version.version from GET / (IPA does the same).
func (a *Agent) maxAPIMinor(ctx context.Context) (int, error) {
	var root struct {
		DefaultVersion struct {
			Version string `json:"version"`
		} `json:"default_version"`
	}
	if _, err := a.call(ctx, http.MethodGet, "/", 0, nil, &root); err != nil {
		return 0, fmt.Errorf("read the driver API's versions: %w", err)
	}
	v := root.DefaultVersion.Version
	major, minor, ok := strings.Cut(v, ".")
	n, err := strconv.Atoi(minor)
	if !ok || major != "1" || err != nil {
		return 0, fmt.Errorf("driver API %s: default_version.version %q is not 1.N", a.cfg.APIURL, v)
	}
	return n, nil
}

// call does one request to the driver API. minor > 0 sets the microversion
// header. A non-2xx answer is an *apiError with Ironic's faultstring.
func (a *Agent) call(ctx context.Context, method, path string, minor int, in, out any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	u := a.cfg.APIURL + path
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, u, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if minor > 0 {
		req.Header.Set(versionHeader, "1."+strconv.Itoa(minor))
	}
	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: read answer: %w", method, u, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, &apiError{method: method, url: u, status: resp.StatusCode, message: ironicFault(raw)}
	}
	if out != nil && len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", method, u, err)
		}
	}
	return resp.StatusCode, nil
}

// ironicFault extracts faultstring from Ironic's error body
// {"error_message": "<JSON string with faultstring>"}, else returns the body.
func ironicFault(raw []byte) string {
	var outer struct {
		ErrorMessage json.RawMessage `json:"error_message"`
	}
	if json.Unmarshal(raw, &outer) == nil && len(outer.ErrorMessage) > 0 {
		var s string
		if json.Unmarshal(outer.ErrorMessage, &s) == nil {
			var inner struct {
				Faultstring string `json:"faultstring"`
			}
			if json.Unmarshal([]byte(s), &inner) == nil && inner.Faultstring != "" {
				return inner.Faultstring
			}
			return s
		}
		var inner struct {
			Faultstring string `json:"faultstring"`
		}
		if json.Unmarshal(outer.ErrorMessage, &inner) == nil && inner.Faultstring != "" {
			return inner.Faultstring
		}
	}
	s := strings.TrimSpace(string(raw))
	if len(s) > 500 {
		s = s[:500] + "..."
	}
	return s
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
