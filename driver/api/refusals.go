package api

import (
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// The agent sees the status and error_message of a heartbeat or lookup
// the driver refuses (a wrong or missing token, a node in no state to take
// one, an unknown node, a malformed body); the driver's log says it too,
// one warning per node and kind at most every refusalEvery: an agent that
// heartbeats with a bad token every second would otherwise fill the log.
// The next line of that node says how many were not logged meanwhile.

// refusalEvery is how often one node's refusals (of one kind) are logged.
const refusalEvery = 10 * time.Second

// maxRefusalKeys bounds the nodes remembered (an agent may send any ident):
// past it, the nodes not yet remembered share one line per refusalEvery.
const maxRefusalKeys = 4096

// refusalNow is the refusal log's clock (tests set it).
var refusalNow = time.Now

// refusalReason is the gin context key of the error_message fail wrote.
const refusalReason = "ironlab.refusal"

// refusalNode is the gin context key of the node a legacy lookup asked for
// (its body's node_uuid or MACs), set by driverPassthru once it read them.
const refusalNode = "ironlab.refusal.node"

type refusalLog struct {
	log  *slog.Logger
	mu   sync.Mutex
	seen map[refusalKey]*refusalSeen
	// pruned is when seen was last pruned of the nodes not heard of for
	// a refusalEvery.
	pruned time.Time
}

type refusalKey struct{ kind, node string }

// refusalSeen is when a node's last refusal line was logged, and how many
// refusals since were not.
type refusalSeen struct {
	at         time.Time
	suppressed int
}

// refusals is the middleware that logs the heartbeats and lookups the
// handlers refused (any status from 400), after they answered.
func (s *Server) refusals(c *gin.Context) {
	c.Next()
	status := c.Writer.Status()
	if status < http.StatusBadRequest {
		return
	}
	kind, node := refusedCall(c)
	if kind == "" {
		return
	}
	reason := c.GetString(refusalReason)
	s.refused.refused(kind, node, status, reason, c.Request.RemoteAddr)
}

// refusedCall says whether c is an agent's heartbeat or lookup, and for
// which node (as the agent named it: an ident, a node_uuid or its MACs).
func refusedCall(c *gin.Context) (kind, node string) {
	method := c.Param("method")
	if method == "" {
		method = c.Query("method")
	}
	switch c.FullPath() {
	case "/v1/heartbeat/:ident":
		return "heartbeat", c.Param("ident")
	case "/v1/nodes/:ident/vendor_passthru", "/v1/nodes/:ident/vendor_passthru/:method":
		if method == "heartbeat" {
			return "heartbeat", c.Param("ident")
		}
	case "/v1/lookup":
		if id := c.Query("node_uuid"); id != "" {
			return "lookup", id
		}
		return "lookup", c.Query("addresses")
	case "/v1/drivers/:driver/vendor_passthru", "/v1/drivers/:driver/vendor_passthru/:method":
		if method == "lookup" {
			return "lookup", c.GetString(refusalNode)
		}
	}
	return "", ""
}

// refused logs one refusal, unless this node's last line of this kind is
// less than refusalEvery old: then it is counted for the next line.
func (l *refusalLog) refused(kind, node string, status int, reason, agent string) {
	now := refusalNow()
	key := refusalKey{kind, node}
	shared := false
	var dropped []refusalDropped
	l.mu.Lock()
	e := l.seen[key]
	if e == nil && len(l.seen) >= maxRefusalKeys && now.Sub(l.pruned) >= refusalEvery {
		// Forget the nodes whose last line is old (at most once a
		// refusalEvery: a flood of new idents does not scan the map each);
		// the refusals of theirs not logged yet are said now.
		l.pruned = now
		for k, x := range l.seen {
			if now.Sub(x.at) >= refusalEvery {
				if x.suppressed > 0 {
					dropped = append(dropped, refusalDropped{k, x.suppressed})
				}
				delete(l.seen, k)
			}
		}
	}
	if e == nil && len(l.seen) >= maxRefusalKeys {
		key, shared = refusalKey{kind, sharedRefusals}, true
		e = l.seen[key]
	}
	logIt := e == nil || now.Sub(e.at) >= refusalEvery
	suppressed := 0
	switch {
	case e == nil:
		if l.seen == nil {
			l.seen = make(map[refusalKey]*refusalSeen)
		}
		l.seen[key] = &refusalSeen{at: now}
	case logIt:
		suppressed, e.at, e.suppressed = e.suppressed, now, 0
	default:
		e.suppressed++
	}
	l.mu.Unlock()
	for _, d := range dropped {
		l.log.Warn(d.kind+" refusals not logged", refusalNodeAttr(d.node), "suppressed", d.suppressed)
	}
	if !logIt {
		return
	}
	attrs := []any{refusalNodeAttr(node), "status", status, "reason", strings.TrimSpace(reason), "agent", agent}
	if suppressed > 0 {
		// The refusals of this node (of this kind) not logged since its
		// last line.
		attrs = append(attrs, "suppressed", suppressed)
	}
	if shared {
		// Too many nodes refused at once: this line and its count stand
		// for all those not remembered.
		attrs = append(attrs, "suppressed_of", "other nodes")
	}
	l.log.Warn(kind+" refused", attrs...)
}

// sharedRefusals is the node of the key the nodes not remembered share.
const sharedRefusals = "\x00others"

type refusalDropped struct {
	refusalKey
	suppressed int
}

func refusalNodeAttr(node string) slog.Attr {
	switch node {
	case "":
		node = "(none given)"
	case sharedRefusals:
		node = "(other nodes)"
	}
	return slog.String("node", node)
}
