package conductor

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
)

// Agent dialects, recorded as the node's Agent.Dialect (shown as
// driver_internal_info.agent_dialect).
const (
	DialectLegacy = "legacy" // Juno/Kilo vendor_passthru lookup + heartbeat
	DialectV1     = "v1"     // /v1/lookup + /v1/heartbeat (Newton+)
)

// MaskedToken is what lookup returns when a token was already issued.
const MaskedToken = "******"

// lookupStates are the states a restricted lookup accepts (Ironic's
// LOOKUP_ALLOWED_STATES, the subset this lab has).
var lookupStates = map[string]bool{
	states.Deploying: true, states.DeployWait: true, states.Cleaning: true, states.CleanWait: true,
	states.Rescuing: true, states.RescueWait: true,
}

var fastTrackStates = map[string]bool{states.Enroll: true, states.Manageable: true, states.Available: true}

// LookupQuery is an agent's lookup.
type LookupQuery struct {
	MACs     []string // normalised
	NodeUUID string
	Dialect  string
	// Restrict applies restrict_lookup (modern API only).
	Restrict bool
	// IssueToken creates the agent token (API >= 1.62).
	IssueToken bool
}

// Lookup finds the node an agent runs on. It returns the node and, when
// asked, the token (MaskedToken if one exists). ErrNotFound covers no match,
// several nodes, and a state that restrict_lookup refuses; ErrNodeLocked a
// locked node that needs a token.
func (c *Conductor) Lookup(ctx context.Context, q LookupQuery) (*store.Node, string, error) {
	var n *store.Node
	var err error
	if q.NodeUUID != "" {
		n, err = c.store.GetNode(ctx, q.NodeUUID)
		if err != nil {
			return nil, "", fmt.Errorf("node %s could not be found: %w", q.NodeUUID, ErrNotFound)
		}
	} else {
		found := map[string]bool{}
		var id string
		for _, mac := range q.MACs {
			ps, err := c.store.ListPorts(ctx, store.PortFilter{Address: mac})
			if err != nil {
				return nil, "", err
			}
			for _, p := range ps {
				found[p.NodeUUID] = true
				id = p.NodeUUID
			}
		}
		switch {
		case len(found) == 0:
			return nil, "", fmt.Errorf("no node has a port with any of the addresses %s: %w", strings.Join(q.MACs, ", "), ErrNotFound)
		case len(found) > 1:
			return nil, "", fmt.Errorf("addresses %s belong to more than one node: %w", strings.Join(q.MACs, ", "), ErrNotFound)
		}
		if n, err = c.store.GetNode(ctx, id); err != nil {
			return nil, "", err
		}
	}
	if q.Restrict && c.cfg.RestrictLookup && !lookupStates[n.ProvisionState] && !(c.cfg.FastTrack && fastTrackStates[n.ProvisionState]) {
		return nil, "", fmt.Errorf("node %s is in state %q where lookup is not allowed: %w", n.UUID, n.ProvisionState, ErrNotFound)
	}
	token := ""
	if q.IssueToken {
		if n.Agent.Token != "" {
			token = MaskedToken
		} else {
			var err error
			if n, token, err = c.issueToken(ctx, q, n); err != nil {
				return nil, "", err
			}
		}
	}
	c.record(ctx, n, store.KindLookup, n.ProvisionState, n.ProvisionState, "lookup", "",
		map[string]any{"dialect": q.Dialect, "addresses": q.MACs, "node_uuid": q.NodeUUID, "token_issued": token != "" && token != MaskedToken})
	return n, token, nil
}

// issueToken gives the agent of n (read without the lock, no token) its
// token. Not while a task of this conductor holds the node (it may be about
// to power it off and forget the agent); another conductor's reservation
// the store checks in the same write. As Ironic's get_node_with_token
// (upgrade_lock: 3 attempts, 1 s apart), a held node is waited for
// (LookupLockWait), and taken as its task ends: an agent that boots while
// the task that powered it on still holds the node (a lab machine boots at
// once) looks up once, not again after its lookup interval. It returns the node as the token
// left it, and the token (MaskedToken when another lookup issued one).
func (c *Conductor) issueToken(ctx context.Context, q LookupQuery, n *store.Node) (*store.Node, string, error) {
	m := c.nodeMu(n.UUID)
	if !m.tryLock() {
		if !m.lockWithin(ctx, c.cfg.LookupLockWait) {
			if err := ctx.Err(); err != nil {
				return nil, "", err
			}
			return nil, "", fmt.Errorf("node %s is locked by host %s, please retry after the current operation is completed: %w", n.UUID, c.cfg.Host, ErrNodeLocked)
		}
		defer m.unlock()
		// The task changed the node: look at it as it is now.
		fresh, err := c.store.GetNode(ctx, n.UUID)
		if err != nil {
			return nil, "", err
		}
		n = fresh
		if q.Restrict && c.cfg.RestrictLookup && !lookupStates[n.ProvisionState] && !(c.cfg.FastTrack && fastTrackStates[n.ProvisionState]) {
			return nil, "", fmt.Errorf("node %s is in state %q where lookup is not allowed: %w", n.UUID, n.ProvisionState, ErrNotFound)
		}
		if n.Agent.Token != "" {
			return n, MaskedToken, nil
		}
	} else {
		defer m.unlock()
	}
	token := newToken()
	issued, err := c.store.IssueAgentToken(ctx, n.UUID, token)
	switch {
	case err == nil && issued:
		// The write changed the token only (where none was): the node as
		// read has it now, without a second read.
		n.Agent.Token = token
	case err == nil:
		// Another lookup issued one first: read the node as it is.
		token = MaskedToken
		n, err = c.store.GetNode(ctx, n.UUID)
	}
	if errors.Is(err, store.ErrLocked) {
		return nil, "", fmt.Errorf("%v, please retry after the current operation is completed: %w", err, ErrNodeLocked)
	}
	if err != nil {
		return nil, "", err
	}
	return n, token, nil
}

func newToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b) // 43 characters, as secrets.token_urlsafe()
}

// Heartbeat is an agent's heartbeat.
type Heartbeat struct {
	Ident        string
	AgentURL     string
	AgentVersion string
	AgentToken   string
	Dialect      string
	// AgentVerifyCA is the PEM of the agent's auto-TLS certificate (API >=
	// 1.68); stored in driver_internal_info.agent_verify_ca, the agent's
	// https API is verified against it.
	AgentVerifyCA string
}

// Heartbeat records an agent's heartbeat and, after returning, runs the
// call-back in the background. Legacy heartbeats take the node's lock with
// retries (ErrNodeLocked after them) as Ironic's vendor passthru did; modern
// ones only try the lock in the background and skip the work if it is held.
func (c *Conductor) Heartbeat(ctx context.Context, hb Heartbeat) error {
	hb.AgentURL = strings.TrimRight(hb.AgentURL, "/")
	if hb.Dialect == DialectLegacy {
		n, err := c.GetNode(ctx, hb.Ident)
		if err != nil {
			return err
		}
		return c.legacyHeartbeat(ctx, n.UUID, hb)
	}
	// The certificate is parsed before the write; the checks on the node run
	// inside it (store.Heartbeat.Check), on the row the heartbeat writes:
	// no read of the whole node (that read was as costly as the write).
	caOK := hb.AgentVerifyCA == "" || c.validCA(hb.AgentVerifyCA)
	check := func(stored *store.Node) error { return c.checkHeartbeat(stored, hb, caOK) }
	n, first, err := c.recordHeartbeat(ctx, hb.Ident, nil, hb, check)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("node %s could not be found: %w", hb.Ident, ErrNotFound)
	}
	if err != nil {
		return err
	}
	if first {
		c.record(ctx, n, store.KindHeartbeat, n.ProvisionState, n.ProvisionState, "heartbeat", "agent registered",
			map[string]any{"agent_url": hb.AgentURL, "agent_version": hb.AgentVersion, "dialect": hb.Dialect})
	}
	if !wantsCallback(n) {
		return nil
	}
	c.goWork(func(ctx context.Context) {
		t, err := c.acquire(ctx, n.UUID, false)
		if err != nil {
			c.log.Debug("heartbeat skipped: node locked", "node", n.UUID)
			return
		}
		defer t.release()
		c.callback(ctx, t)
	})
	return nil
}

// validCA reports whether pem holds a certificate. An agent sends its
// certificate with every heartbeat (and the lab's agents share one): the
// ones that parsed are remembered (up to maxCAs, then forgotten all at
// once), so a heartbeat parses only a certificate it has not seen.
func (c *Conductor) validCA(pem string) bool {
	c.caMu.Lock()
	ok := c.cas[pem]
	c.caMu.Unlock()
	if ok {
		return true
	}
	if !x509.NewCertPool().AppendCertsFromPEM([]byte(pem)) {
		return false
	}
	c.caMu.Lock()
	if len(c.cas) >= maxCAs {
		clear(c.cas)
	}
	c.cas[pem] = true
	c.caMu.Unlock()
	return true
}

// maxCAs bounds the certificates validCA remembers.
const maxCAs = 4096

// checkHeartbeat is what a modern heartbeat must pass, in Ironic's order
// and words: the callback_url's scheme, the token, [agent]require_tls, a
// certificate that changed or a callback_url that changed, a node locked
// before its agent registered.
func (c *Conductor) checkHeartbeat(n *store.Node, hb Heartbeat, caOK bool) error {
	if !strings.Contains(strings.SplitN(hb.AgentURL, "://", 2)[0], "http") || !strings.Contains(hb.AgentURL, "://") {
		return fmt.Errorf("callback_url %q of node %s is not an http(s) URL: %w", hb.AgentURL, n.UUID, ErrInvalidParameter)
	}
	stored := n.Agent.Token
	if hb.AgentToken == "" {
		if c.cfg.AgentTokenRequired || stored != "" {
			return fmt.Errorf("agent_token is required for heartbeats of node %s: %w", n.UUID, ErrInvalidAgentToken)
		}
	} else if hb.AgentToken != stored {
		return fmt.Errorf("invalid or missing agent token received for node %s: %w", n.UUID, ErrInvalidAgentToken)
	}
	if c.cfg.RequireTLS && !strings.HasPrefix(hb.AgentURL, "https://") {
		c.log.Error("rejecting a callback_url that does not use TLS", "node", n.UUID, "callback_url", hb.AgentURL)
		return fmt.Errorf("TLS is required by configuration: %w", ErrInvalidParameter)
	}
	if !caOK {
		return fmt.Errorf("agent_verify_ca of node %s is not a PEM certificate: %w", n.UUID, ErrInvalidParameter)
	}
	if ca := n.Agent.VerifyCA; ca != "" && hb.AgentVerifyCA != "" && strings.TrimSpace(ca) != strings.TrimSpace(hb.AgentVerifyCA) {
		return fmt.Errorf("Detected change in ramdisk provided \"agent_verify_ca\": %w", ErrInvalidParameter)
	}
	if url := n.Agent.URL; url != "" && url != hb.AgentURL {
		return fmt.Errorf("detected change in ramdisk provided \"callback_url\" for node %s (stored %s, got %s): %w", n.UUID, url, hb.AgentURL, ErrInvalidParameter)
	}
	if n.Reservation != "" && n.Agent.URL == "" {
		return fmt.Errorf("node %s is locked by host %s and has no agent_url yet: %w", n.UUID, n.Reservation, ErrNodeLocked)
	}
	return nil
}

func wantsCallback(n *store.Node) bool {
	switch n.ProvisionState {
	case states.DeployWait, states.CleanWait, states.RescueWait:
		return !n.Maintenance
	}
	return false
}

func (c *Conductor) legacyHeartbeat(ctx context.Context, id string, hb Heartbeat) error {
	t, err := c.acquire(ctx, id, true)
	if err != nil {
		return err
	}
	n, first, err := c.recordHeartbeat(ctx, t.node.UUID, t.node, hb, nil)
	if err != nil {
		t.release()
		return err
	}
	t.node = n
	if first {
		c.record(ctx, n, store.KindHeartbeat, n.ProvisionState, n.ProvisionState, "heartbeat", "agent registered",
			map[string]any{"agent_url": hb.AgentURL, "dialect": hb.Dialect})
	}
	c.goWork(func(ctx context.Context) {
		defer t.release()
		if wantsCallback(t.node) {
			c.callback(ctx, t)
		}
	})
	return nil
}

// recordHeartbeat records the agent's URL, version, dialect and the time
// (Unix seconds, as Ironic's agent_last_heartbeat) in one small write of
// the node's agent fields, resets the watchdog's count and touches
// provision_updated_at of waiting nodes; the API shows them in driver_info
// (the spec's data model) and driver_internal_info (modern Ironic). It
// returns n (read before the write) with what the write changed, without
// reading the node again (that read was a third of a heartbeat's cost; the
// call-back re-reads the node under its lock); first is true when the
// agent_url is new. Without n (nil), check must set n: it runs in the write
// on the node as stored (store.Heartbeat.Check), its error returned as is.
func (c *Conductor) recordHeartbeat(ctx context.Context, ident string, n *store.Node, hb Heartbeat, check func(*store.Node) error) (*store.Node, bool, error) {
	url := strings.TrimRight(hb.AgentURL, "/")
	at := time.Unix(time.Now().Unix(), 0).UTC()
	touch := []string{states.DeployWait, states.CleanWait}
	var stored *store.Node
	var checkStored func(*store.Node) error
	if check != nil {
		checkStored = func(s *store.Node) error {
			stored = s
			return check(s)
		}
	}
	prev, err := c.store.RecordHeartbeat(ctx, ident, store.Heartbeat{URL: url, Version: hb.AgentVersion, VerifyCA: hb.AgentVerifyCA, Dialect: hb.Dialect,
		At: at, TouchStates: touch, Check: checkStored})
	if err != nil {
		return nil, false, err
	}
	if n == nil {
		n = stored
	}
	first, reboots := prev.URL != url, prev.WatchdogReboots
	cur := *n
	cur.Agent = prev
	cur.Agent.URL, cur.Agent.Dialect, cur.Agent.LastHeartbeat = url, hb.Dialect, at
	if hb.AgentVersion != "" {
		cur.Agent.Version = hb.AgentVersion
	}
	if hb.AgentVerifyCA != "" {
		cur.Agent.VerifyCA = hb.AgentVerifyCA
	}
	cur.Agent.WatchdogReboots, cur.Agent.WatchdogLastAction = 0, time.Time{}
	if slices.Contains(touch, cur.ProvisionState) && at.After(cur.ProvisionUpdatedAt) {
		cur.ProvisionUpdatedAt = at
	}
	if reboots > 0 {
		// The counter resets: the agent is back after the watchdog's reboots.
		c.record(ctx, &cur, store.KindHeartbeat, cur.ProvisionState, cur.ProvisionState, EventWatchdogRecovered,
			fmt.Sprintf("agent heartbeats again after %d watchdog reboot(s)", reboots), map[string]any{"reboots": reboots, "agent_url": hb.AgentURL})
	}
	return &cur, first, nil
}

// callback runs the deploy interface's Continue for a waiting node.
func (c *Conductor) callback(ctx context.Context, t *task) {
	if !wantsCallback(t.node) || t.dep == nil {
		return
	}
	state := t.node.ProvisionState
	// Written with the release when Continue changes nothing (the common
	// heartbeat: the agent is still busy), else before the first write.
	t.Record(ctx, store.KindHeartbeat, "call-back", "heartbeat continues the "+state+" node", nil)
	out, err := t.dep.Continue(ctx, t)
	c.drive(ctx, t, out, err, func(err error) {
		if state == states.RescueWait {
			// Ironic's _heartbeat_rescue_wait: rescuing_error_handler.
			switch t.node.ProvisionState {
			case states.RescueWait, states.Rescuing:
				c.failRescue(ctx, t, fmt.Sprintf("Node failed to perform rescue operation: %v", err), true)
			default:
				t.log.Error("heartbeat call-back", "err", err)
			}
			return
		}
		what := "deploy"
		if state == states.CleanWait || state == states.Cleaning {
			what = "clean"
		}
		msg := fmt.Sprintf("Asynchronous exception for node %s: Node failed to %s. Exception: %v", t.node.UUID, what, err)
		switch t.node.ProvisionState {
		case states.DeployWait, states.Deploying, states.CleanWait, states.Cleaning:
			c.fail(ctx, t, msg)
		default:
			t.log.Error("heartbeat call-back", "err", err)
		}
	})
}
