package agent

import (
	"bytes"
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Command statuses the agent reports.
const (
	StatusRunning         = "RUNNING"
	StatusSucceeded       = "SUCCEEDED"
	StatusFailed          = "FAILED"
	StatusVersionMismatch = "CLEAN_VERSION_MISMATCH"
)

// Errors from the agent's API.
var (
	// ErrAgentBusy: 409, the previous command is still RUNNING.
	ErrAgentBusy = errors.New("agent is busy")
	// ErrTokenInvalid: 401, the agent refused our token.
	ErrTokenInvalid = errors.New("agent refused the token")
	// ErrUnreachable: no HTTP answer at all (connection refused, reset,
	// timeout), after the retries: Ironic's AgentConnectionFailed.
	ErrUnreachable = errors.New("agent unreachable")
)

// Command is one command result, as the agent's /v1/commands returns it.
type Command struct {
	ID     string `json:"id"`
	Name   string `json:"command_name"`
	Status string `json:"command_status"`
	Error  any    `json:"command_error"`
	Result any    `json:"command_result"`
	Params any    `json:"command_params,omitempty"`
}

// ErrorText is the agent's error message for a FAILED command: the
// RESTError's message (and details), or the raw value.
func (c *Command) ErrorText() string {
	switch e := c.Error.(type) {
	case nil:
		return ""
	case string:
		return e
	case map[string]any:
		msg, _ := e["message"].(string)
		det, _ := e["details"].(string)
		switch {
		case msg != "" && det != "" && det != msg:
			return msg + ": " + det
		case msg != "":
			return msg
		case det != "":
			return det
		}
	}
	b, _ := json.Marshal(c.Error)
	return string(b)
}

// ResultMap is command_result as an object (nil if it is not one).
func (c *Command) ResultMap() map[string]any {
	m, _ := c.Result.(map[string]any)
	return m
}

// Client calls an agent's REST API, as Ironic's agent_client does.
type Client struct {
	// HTTP is the client used; its Timeout is [agent]command_timeout (60 s).
	// An https agent is verified against the system's roots, or against
	// the certificate of ForCA.
	HTTP *http.Client
	// Retries is how many times a connection error is retried (3).
	Retries int
	// RetryInterval separates those retries (1 s).
	RetryInterval time.Duration

	cas *caClients // ForCA's clients, shared by copies; nil = not cached
}

// agentConnsPerHost caps the connections to one agent address, and keeps
// that many open between commands; agentIdleConns caps the idle ones of all
// agents. A real agent is an address of its own; the lab's thousands of
// agents share one listener, and with 64 kept a deploy of 10,000 nodes
// (hundreds of commands in flight) closed most connections after one
// command: a new TLS handshake each, 29 CPU-seconds of driver and lab.
const (
	agentConnsPerHost = 256
	agentIdleConns    = 1024
)

// caClients keeps one HTTP client per agent certificate, so that the
// thousands of agents behind one lab listener (one certificate) share a
// connection pool and a TLS session cache. A VM's agent makes a new
// certificate each boot, so the cache keeps only the maxCAClients last used
// (as requests' pools are urllib3's ten most recently used for Ironic's
// client): an evicted client's idle connections are closed, and its
// certificate, seen again, gets a new client.
type caClients struct {
	mu    sync.Mutex
	max   int
	m     map[string]*list.Element // of *caClient
	order list.List                // most recently used first
	// front is order's first client, read without the lock: the lab's
	// agents all send one certificate, and every agent call looks it up.
	front atomic.Pointer[caClient]
}

type caClient struct {
	pem string
	hc  *http.Client
}

// maxCAClients bounds the agent certificates whose clients are kept. Each
// holds its parsed certificate, TLS sessions and idle connections.
const maxCAClients = 256

func newCAClients(max int) *caClients {
	return &caClients{max: max, m: map[string]*list.Element{}}
}

// get returns caPEM's client (nil: none), now the most recently used.
func (cc *caClients) get(caPEM string) *http.Client {
	if f := cc.front.Load(); f != nil && f.pem == caPEM {
		return f.hc // already the most recently used
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	e := cc.m[caPEM]
	if e == nil {
		return nil
	}
	return cc.use(e).hc
}

// use makes e the most recently used client; cc.mu is held.
func (cc *caClients) use(e *list.Element) *caClient {
	cc.order.MoveToFront(e)
	f := e.Value.(*caClient)
	cc.front.Store(f)
	return f
}

// add keeps hc as caPEM's client, unless another caller kept one first:
// the kept one is returned. The least recently used client beyond max is
// dropped and its idle connections closed (one still in use finishes its
// request; its connection then idles out).
func (cc *caClients) add(caPEM string, hc *http.Client) *http.Client {
	cc.mu.Lock()
	if e := cc.m[caPEM]; e != nil {
		hc = cc.use(e).hc
		cc.mu.Unlock()
		return hc
	}
	e := cc.order.PushFront(&caClient{pem: caPEM, hc: hc})
	cc.m[caPEM] = e
	cc.use(e)
	var evicted *http.Client
	if cc.order.Len() > cc.max {
		old := cc.order.Remove(cc.order.Back()).(*caClient)
		delete(cc.m, old.pem)
		evicted = old.hc
	}
	cc.mu.Unlock()
	if evicted != nil {
		evicted.CloseIdleConnections()
	}
	return hc
}

// len is how many clients are kept.
func (cc *caClients) len() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return len(cc.m)
}

// NewClient returns a Client with Ironic's defaults.
func NewClient() *Client {
	return &Client{HTTP: &http.Client{Timeout: 60 * time.Second}, Retries: 3, RetryInterval: time.Second,
		cas: newCAClients(maxCAClients)}
}

// ForCA returns a Client that verifies https agents against the PEM
// certificate(s) caPEM only, as Ironic uses the agent_verify_ca a node's
// agent sent; "" returns c itself.
func (c *Client) ForCA(caPEM string) (*Client, error) {
	if strings.TrimSpace(caPEM) == "" {
		return c, nil
	}
	var hc *http.Client
	if c.cas != nil {
		hc = c.cas.get(caPEM)
	}
	if hc == nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, errors.New("agent_verify_ca holds no PEM certificate")
		}
		timeout := 60 * time.Second
		if c.HTTP != nil {
			timeout = c.HTTP.Timeout
		}
		hc = &http.Client{Timeout: timeout, Transport: &http.Transport{
			Proxy:       nil,
			DialContext: (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			// A new connection resumes a TLS session (no certificate to
			// parse and verify again; still this certificate's: the cache
			// is this client's).
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12,
				ClientSessionCache: tls.NewLRUClientSessionCache(64)},
			TLSHandshakeTimeout:   10 * time.Second,
			MaxIdleConns:          agentIdleConns,
			MaxIdleConnsPerHost:   agentConnsPerHost,
			MaxConnsPerHost:       agentConnsPerHost,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: timeout,
		}}
		if c.cas != nil {
			hc = c.cas.add(caPEM, hc)
		}
	}
	cp := *c
	cp.HTTP = hc
	return &cp, nil
}

func commandsURL(agentURL string, legacy bool) string {
	base := strings.TrimRight(agentURL, "/")
	if legacy {
		return base + "/v1/commands" // Juno's client: no trailing slash, no token
	}
	return base + "/v1/commands/"
}

func (c *Client) do(ctx context.Context, method, u string, body []byte) (*http.Response, []byte, error) {
	var lastErr error
	for i := 0; i <= c.Retries; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			case <-time.After(c.RetryInterval):
			}
		}
		req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
		if err != nil {
			return nil, nil, err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Accept", "application/json")
		resp, err := c.HTTP.Do(req)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				break
			}
			continue // connection errors are retried
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		if err != nil {
			return nil, nil, err
		}
		return resp, b, nil
	}
	return nil, nil, fmt.Errorf("%w: %w", ErrUnreachable, lastErr)
}

func statusError(resp *http.Response, b []byte, what string) error {
	text := strings.TrimSpace(string(b))
	var fault struct {
		Faultstring string `json:"faultstring"`
		Message     string `json:"message"`
	}
	if json.Unmarshal(b, &fault) == nil {
		if fault.Faultstring != "" {
			text = fault.Faultstring
		} else if fault.Message != "" {
			text = fault.Message
		}
	}
	switch {
	case resp.StatusCode == http.StatusConflict || strings.Contains(strings.ToLower(text), "agent is busy"):
		return fmt.Errorf("%s: %s: %w", what, text, ErrAgentBusy)
	case resp.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("%s: %s: %w", what, text, ErrTokenInvalid)
	}
	return fmt.Errorf("%s: agent answered %d: %s", what, resp.StatusCode, text)
}

// Execute posts a command: POST {agent_url}/v1/commands/?wait=...&agent_token=T
// with {"name", "params"}. A FAILED result is returned, not an error.
func (c *Client) Execute(ctx context.Context, agentURL, token, name string, params map[string]any, wait, legacy bool) (*Command, error) {
	if params == nil {
		params = map[string]any{}
	}
	body, err := json.Marshal(map[string]any{"name": name, "params": params})
	if err != nil {
		return nil, fmt.Errorf("encode command %s: %w", name, err)
	}
	q := url.Values{}
	q.Set("wait", fmt.Sprint(wait))
	if token != "" && !legacy {
		q.Set("agent_token", token)
	}
	u := commandsURL(agentURL, legacy) + "?" + q.Encode()
	what := fmt.Sprintf("run %s on agent %s", name, agentURL)
	resp, b, err := c.do(ctx, http.MethodPost, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp, b, what)
	}
	var cmd Command
	if err := json.Unmarshal(b, &cmd); err != nil {
		return nil, fmt.Errorf("%s: bad answer %q: %w", what, truncate(b), err)
	}
	return &cmd, nil
}

// Commands lists the agent's command results in execution order:
// GET {agent_url}/v1/commands/.
func (c *Client) Commands(ctx context.Context, agentURL, token string, legacy bool) ([]Command, error) {
	u := commandsURL(agentURL, legacy)
	if token != "" && !legacy {
		u += "?" + url.Values{"agent_token": {token}}.Encode()
	}
	what := fmt.Sprintf("list commands of agent %s", agentURL)
	resp, b, err := c.do(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp, b, what)
	}
	var out struct {
		Commands []Command `json:"commands"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("%s: bad answer %q: %w", what, truncate(b), err)
	}
	return out.Commands, nil
}

// Status asks the agent whether it is up: GET {agent_url}/v1/status, which
// needs no token. It is tried once, within timeout.
func (c *Client) Status(ctx context.Context, agentURL string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := strings.TrimRight(agentURL, "/") + "/v1/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("status of agent %s: %w: %w", agentURL, ErrUnreachable, err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(resp, b, "status of agent "+agentURL)
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// lastNamed returns the last command with the short name, or nil.
func lastNamed(cmds []Command, name string) *Command {
	for i := len(cmds) - 1; i >= 0; i-- {
		// Reference IPA reports the short name; accept "ext.name" as well.
		if cmds[i].Name == name || strings.HasSuffix(cmds[i].Name, "."+name) {
			return &cmds[i]
		}
	}
	return nil
}
