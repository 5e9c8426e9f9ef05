package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
)

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func ts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format("2006-01-02T15:04:05.000000+00:00")
}

func emptyIfNil(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// masked copies m, hiding secrets as Ironic does in API answers.
func masked(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if strings.Contains(k, "password") || k == "agent_secret_token" || strings.HasSuffix(k, "_token") {
			v = "******"
		}
		out[k] = v
	}
	return out
}

// nodeDoc renders a node as Ironic does (detail = every field).
func (s *Server) nodeDoc(c *gin.Context, n *store.Node, detail bool) map[string]any {
	d := map[string]any{
		"uuid":            n.UUID,
		"name":            nullStr(n.Name),
		"instance_uuid":   nullStr(fmt.Sprint(emptyIfNil(n.InstanceInfo)["instance_uuid"])),
		"power_state":     nullStr(n.PowerState),
		"provision_state": n.ProvisionState,
		"maintenance":     n.Maintenance,
		"links":           links(c, "nodes", n.UUID),
	}
	if d["instance_uuid"] == "<nil>" {
		d["instance_uuid"] = nil
	}
	if !detail {
		return d
	}
	cl, _ := conductor.ClassOf(n.Driver)
	if ver(c).AtLeast(49) {
		// Ironic 1.49's conductor field: who services the node (the
		// owner on the hash ring, as the answering conductor sees it).
		d["conductor"] = s.c.Config().Host
		if s.owner != nil {
			d["conductor"] = nullStr(s.owner(n))
		}
	}
	for k, v := range map[string]any{
		"driver":                 n.Driver,
		"driver_info":            masked(n.DriverInfoView()),
		"driver_internal_info":   masked(n.DriverInternalInfoView()),
		"instance_info":          masked(emptyIfNil(n.InstanceInfo)),
		"properties":             emptyIfNil(n.Properties),
		"extra":                  emptyIfNil(n.Extra),
		"target_provision_state": nullStr(n.TargetProvisionState),
		"target_power_state":     nullStr(n.TargetPowerState),
		"maintenance_reason":     nullStr(n.MaintenanceReason),
		"fault":                  nullStr(n.Fault),
		"last_error":             nullStr(n.LastError),
		"reservation":            nullStr(n.Reservation),
		"clean_step":             store.StepView(n.CleanStep),
		"deploy_step":            store.StepView(n.DeployStep),
		"created_at":             ts(n.CreatedAt),
		"updated_at":             ts(n.UpdatedAt),
		"provision_updated_at":   ts(n.ProvisionUpdatedAt),
		"console_enabled":        false,
		"deploy_interface":       nullStr(cl.Deploy),
		"power_interface":        nullStr(cl.Power),
		"management_interface":   nullStr(cl.Power),
		"rescue_interface":       rescueInterface(cl),
		"ports":                  []map[string]string{{"href": baseURL(c) + "/v1/nodes/" + n.UUID + "/ports", "rel": "self"}},
		"states":                 []map[string]string{{"href": baseURL(c) + "/v1/nodes/" + n.UUID + "/states", "rel": "self"}},
	} {
		d[k] = v
	}
	return d
}

// rescueInterface names the class's rescue interface as Ironic does: the
// agent deploy rescues ("agent"), the PXE one does not ("no-rescue").
func rescueInterface(cl conductor.Class) string {
	if cl.Deploy == "agent" {
		return "agent"
	}
	return "no-rescue"
}

func (s *Server) node(c *gin.Context) (*store.Node, bool) {
	n, err := s.c.GetNode(c.Request.Context(), c.Param("ident"))
	if err != nil {
		failErr(c, err)
		return nil, false
	}
	return n, true
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9\-._~]+$`)

func validName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("Expected a logical name but received %q (letters, digits, '-', '.', '_', '~')", name)
	}
	if _, err := uuid.Parse(name); err == nil {
		return fmt.Errorf("Expected a logical name but received %q, which is a UUID", name)
	}
	return nil
}

type nodeCreate struct {
	UUID         *string        `json:"uuid"`
	Name         *string        `json:"name"`
	Driver       *string        `json:"driver"`
	DriverInfo   map[string]any `json:"driver_info"`
	InstanceInfo map[string]any `json:"instance_info"`
	Properties   map[string]any `json:"properties"`
	Extra        map[string]any `json:"extra"`
}

func (s *Server) createNode(c *gin.Context) {
	var req nodeCreate
	if !decode(c, &req, false) {
		return
	}
	if req.Driver == nil || *req.Driver == "" {
		fail(c, http.StatusBadRequest, "Mandatory field missing: driver")
		return
	}
	n := &store.Node{Driver: *req.Driver, DriverInfo: req.DriverInfo, InstanceInfo: req.InstanceInfo,
		Properties: req.Properties, Extra: req.Extra}
	if req.UUID != nil {
		u, err := uuid.Parse(*req.UUID)
		if err != nil {
			fail(c, http.StatusBadRequest, fmt.Sprintf("Invalid UUID for field \"uuid\": %q", *req.UUID))
			return
		}
		n.UUID = u.String()
	}
	if req.Name != nil {
		if err := validName(*req.Name); err != nil {
			fail(c, http.StatusBadRequest, "Invalid field \"name\": "+err.Error())
			return
		}
		n.Name = *req.Name
	}
	initial := states.Available // Ironic before API 1.11
	if ver(c).AtLeast(11) {
		initial = states.Enroll
	}
	if err := s.c.CreateNode(c.Request.Context(), n, initial); err != nil {
		if errors.Is(err, conductor.ErrDuplicate) {
			fail(c, http.StatusConflict, fmt.Sprintf("A node with UUID %s or name %q already exists.", n.UUID, n.Name))
			return
		}
		failErr(c, err)
		return
	}
	c.Header("Location", baseURL(c)+"/v1/nodes/"+n.UUID)
	c.JSON(http.StatusCreated, s.nodeDoc(c, n, true))
}

func (s *Server) listNodes(c *gin.Context) {
	detail := false
	if d := c.Query("detail"); d != "" {
		b, err := strconv.ParseBool(d)
		if err != nil {
			fail(c, http.StatusBadRequest, fmt.Sprintf("Invalid value for query parameter \"detail\": %q", d))
			return
		}
		detail = b
	}
	if _, ok := c.GetQuery("fields"); ok && detail {
		fail(c, http.StatusBadRequest, "Can not specify ?detail=True and fields in the same request.")
		return
	}
	fields, ok := s.queryFields(c)
	if !ok {
		return
	}
	s.listNodesAs(c, detail, fields)
}

// queryFields reads ?fields= (Ironic's, API 1.8): the node fields to
// answer, nil for all. A field no node has, or none named, is answered
// 400 here (ok false).
func (s *Server) queryFields(c *gin.Context) (fields []string, ok bool) {
	f, given := c.GetQuery("fields")
	if !given {
		return nil, true
	}
	for _, name := range strings.Split(f, ",") {
		if name = strings.TrimSpace(name); name != "" {
			fields = append(fields, name)
		}
	}
	if len(fields) == 0 {
		fail(c, http.StatusBadRequest, "Invalid value for query parameter \"fields\": no field named")
		return nil, false
	}
	// A column field is in every node's document; the whole document (of
	// an empty node: its keys depend on the API version) is built only to
	// check another name, not on every wait's poll or verb's check.
	var known map[string]any
	for _, name := range fields {
		if columnFields[name] != nil {
			continue
		}
		if known == nil {
			known = s.nodeDoc(c, &store.Node{}, true)
		}
		if _, ok := known[name]; !ok {
			fail(c, http.StatusBadRequest, fmt.Sprintf("Field(s) \"%s\" are not valid", name))
			return nil, false
		}
	}
	return fields, true
}

// nodeFields is node n's document with only fields: the columns' own
// values, the rest from the whole document.
func (s *Server) nodeFields(c *gin.Context, n *store.Node, fields []string) map[string]any {
	d := make(map[string]any, len(fields))
	var full map[string]any
	for _, name := range fields {
		if get := columnFields[name]; get != nil {
			d[name] = get(n)
			continue
		}
		if full == nil {
			full = s.nodeDoc(c, n, true)
		}
		d[name] = full[name]
	}
	return d
}

func (s *Server) listNodesDetail(c *gin.Context) { s.listNodesAs(c, true, nil) }

// columnFields are the node fields a list with ?fields= answers from the
// node's own columns: when every field asked for is one of them, the store
// skips the JSON columns (driver_info and the rest), which were most of the
// cost of the lab's polls of 1000s of nodes.
var columnFields = map[string]func(n *store.Node) any{
	"uuid":                   func(n *store.Node) any { return n.UUID },
	"name":                   func(n *store.Node) any { return nullStr(n.Name) },
	"driver":                 func(n *store.Node) any { return n.Driver },
	"provision_state":        func(n *store.Node) any { return n.ProvisionState },
	"target_provision_state": func(n *store.Node) any { return nullStr(n.TargetProvisionState) },
	"power_state":            func(n *store.Node) any { return nullStr(n.PowerState) },
	"target_power_state":     func(n *store.Node) any { return nullStr(n.TargetPowerState) },
	"maintenance":            func(n *store.Node) any { return n.Maintenance },
	"maintenance_reason":     func(n *store.Node) any { return nullStr(n.MaintenanceReason) },
	"fault":                  func(n *store.Node) any { return nullStr(n.Fault) },
	"last_error":             func(n *store.Node) any { return nullStr(n.LastError) },
	"reservation":            func(n *store.Node) any { return nullStr(n.Reservation) },
	"created_at":             func(n *store.Node) any { return ts(n.CreatedAt) },
	"updated_at":             func(n *store.Node) any { return ts(n.UpdatedAt) },
	"provision_updated_at":   func(n *store.Node) any { return ts(n.ProvisionUpdatedAt) },
}

// columnsJSON is the answer of a list whose fields are all columnFields
// (what every wait polls), written into one buffer: a map per node through
// encoding/json (reflection, its keys sorted) was a third of such a poll's
// cost in the driver. Each field is written once, in the order asked.
func columnsJSON(nodes []*store.Node, fields []string) []byte {
	var keys [][]byte
	var gets []func(*store.Node) any
	for i, name := range fields {
		if slices.Contains(fields[:i], name) {
			continue
		}
		keys = append(keys, append(appendJSONString(nil, name), ':'))
		gets = append(gets, columnFields[name])
	}
	b := make([]byte, 0, 16+len(nodes)*len(keys)*40)
	b = append(b, `{"nodes":[`...)
	for i, n := range nodes {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		for j, get := range gets {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(b, keys[j]...)
			b = appendJSONValue(b, get(n))
		}
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// appendJSONValue appends a columnFields value (nil, bool or string) as
// encoding/json writes it.
func appendJSONValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, v)
	case string:
		return appendJSONString(b, v)
	}
	j, err := json.Marshal(v)
	if err != nil {
		return append(b, "null"...)
	}
	return append(b, j...)
}

// appendJSONString appends s quoted: as is when every byte is printable
// ASCII that encoding/json leaves alone, else as encoding/json quotes it
// (escapes, HTML-safe, invalid UTF-8 replaced).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			j, _ := json.Marshal(s)
			return append(b, j...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// listNodesAs lists the nodes matching the query's filters: every field
// (detail), the short form, or only fields (Ironic's ?fields=, API 1.8).
func (s *Server) listNodesAs(c *gin.Context, detail bool, fields []string) {
	f := store.NodeFilter{ProvisionState: c.Query("provision_state"), Driver: c.Query("driver")}
	if m := c.Query("maintenance"); m != "" {
		b, err := strconv.ParseBool(m)
		if err != nil {
			fail(c, http.StatusBadRequest, fmt.Sprintf("Invalid value for query parameter \"maintenance\": %q", m))
			return
		}
		f.Maintenance = &b
	}
	f.ColumnsOnly = len(fields) > 0
	for _, name := range fields {
		if columnFields[name] == nil {
			f.ColumnsOnly = false
		}
	}
	nodes, err := s.c.Store().ListNodes(c.Request.Context(), f)
	if err != nil {
		failErr(c, err)
		return
	}
	if f.ColumnsOnly {
		c.Data(http.StatusOK, "application/json; charset=utf-8", columnsJSON(nodes, fields))
		return
	}
	out := make([]any, 0, len(nodes))
	for _, n := range nodes {
		if fields == nil {
			out = append(out, s.nodeDoc(c, n, detail))
			continue
		}
		out = append(out, s.nodeFields(c, n, fields))
	}
	c.JSON(http.StatusOK, gin.H{"nodes": out})
}

// getNode answers one node: every field, or only ?fields= (the lab's
// runner asks for the two states before each verb it sends).
func (s *Server) getNode(c *gin.Context) {
	fields, ok := s.queryFields(c)
	if !ok {
		return
	}
	n, ok := s.node(c)
	if !ok {
		return
	}
	if fields == nil {
		c.JSON(http.StatusOK, s.nodeDoc(c, n, true))
		return
	}
	c.JSON(http.StatusOK, s.nodeFields(c, n, fields))
}

func (s *Server) deleteNode(c *gin.Context) {
	if err := s.c.DeleteNode(c.Request.Context(), c.Param("ident")); err != nil {
		failErr(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (s *Server) getStates(c *gin.Context) {
	n, ok := s.node(c)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, gin.H{
		"power_state": nullStr(n.PowerState), "target_power_state": nullStr(n.TargetPowerState),
		"provision_state": n.ProvisionState, "target_provision_state": nullStr(n.TargetProvisionState),
		"provision_updated_at": ts(n.ProvisionUpdatedAt), "last_error": nullStr(n.LastError),
		"console_enabled": false, "raid_config": map[string]any{}, "target_raid_config": map[string]any{},
	})
}

type provisionReq struct {
	Target         *string          `json:"target"`
	CleanSteps     []map[string]any `json:"clean_steps"`
	Configdrive    any              `json:"configdrive"`
	RescuePassword *string          `json:"rescue_password"`
}

// rescueVersion is the microversion of the rescue and unrescue verbs (and
// of rescue_interface); below it Ironic answers 406.
const rescueVersion = 38

func (s *Server) setProvision(c *gin.Context) {
	var req provisionReq
	if !decode(c, &req, false) {
		return
	}
	if req.Target == nil {
		fail(c, http.StatusBadRequest, "Mandatory field missing: target")
		return
	}
	if (*req.Target == "rescue" || *req.Target == "unrescue") && !ver(c).AtLeast(rescueVersion) {
		fail(c, http.StatusNotAcceptable, fmt.Sprintf("Request not acceptable. The %q verb needs API version 1.%d or later.", *req.Target, rescueVersion))
		return
	}
	if req.Configdrive != nil {
		// Ironic keeps the config drive in instance_info.configdrive for the
		// deploy (a string: URL or gzipped base64 image; an object: built
		// into an ISO when the deploy writes the image).
		switch *req.Target {
		case "active", "rebuild":
		default:
			fail(c, http.StatusBadRequest, fmt.Sprintf("Adding a config drive is only supported when setting provision state to active or rebuild, not %s", *req.Target))
			return
		}
		switch req.Configdrive.(type) {
		case string, map[string]any:
		default:
			fail(c, http.StatusBadRequest, "Invalid configdrive: want a string (URL or gzipped, base64-encoded image) or an object with meta_data, user_data, network_data, vendor_data")
			return
		}
		if _, err := s.c.UpdateNode(c.Request.Context(), c.Param("ident"), func(n *store.Node) error {
			if n.InstanceInfo == nil {
				n.InstanceInfo = map[string]any{}
			}
			n.InstanceInfo["configdrive"] = req.Configdrive
			return nil
		}); err != nil {
			failErr(c, err)
			return
		}
	}
	if err := s.c.Provision(c.Request.Context(), c.Param("ident"), *req.Target,
		conductor.ProvisionArgs{CleanSteps: req.CleanSteps, RescuePassword: req.RescuePassword}); err != nil {
		failErr(c, err)
		return
	}
	c.Header("Location", baseURL(c)+"/v1/nodes/"+c.Param("ident")+"/states")
	c.Status(http.StatusAccepted)
}

type powerReq struct {
	Target  *string `json:"target"`
	Timeout *int    `json:"timeout"`
}

func (s *Server) setPower(c *gin.Context) {
	var req powerReq
	if !decode(c, &req, false) {
		return
	}
	if req.Target == nil {
		fail(c, http.StatusBadRequest, "Mandatory field missing: target")
		return
	}
	if err := s.c.PowerAction(c.Request.Context(), c.Param("ident"), *req.Target); err != nil {
		failErr(c, err)
		return
	}
	c.Header("Location", baseURL(c)+"/v1/nodes/"+c.Param("ident")+"/states")
	c.Status(http.StatusAccepted)
}

func (s *Server) setMaintenance(c *gin.Context) {
	var req struct {
		Reason *string `json:"reason"`
	}
	if !decode(c, &req, true) {
		return
	}
	reason := ""
	if req.Reason != nil {
		reason = *req.Reason
	}
	if err := s.c.SetMaintenance(c.Request.Context(), c.Param("ident"), true, reason); err != nil {
		failErr(c, err)
		return
	}
	c.Status(http.StatusAccepted)
}

func (s *Server) unsetMaintenance(c *gin.Context) {
	if err := s.c.SetMaintenance(c.Request.Context(), c.Param("ident"), false, ""); err != nil {
		failErr(c, err)
		return
	}
	c.Status(http.StatusAccepted)
}

// historyDoc renders an event as Ironic's node history entry.
func historyDoc(c *gin.Context, n string, e store.Event) map[string]any {
	sev := "INFO"
	if e.Kind == store.KindError || strings.Contains(strings.ToLower(e.Message), "error") || e.Event == states.EvFail {
		sev = "ERROR"
	}
	text := e.Message
	if text == "" {
		text = e.Event
		if e.FromState != e.ToState {
			text = fmt.Sprintf("%s: %s -> %s", e.Event, e.FromState, e.ToState)
		}
	}
	return map[string]any{
		"uuid": e.UUID, "created_at": ts(e.Time), "severity": sev, "event_type": e.Kind, "event": text,
		"conductor": nil, "user": nil,
		"links": []map[string]string{{"href": baseURL(c) + "/v1/nodes/" + n + "/history/" + e.UUID, "rel": "self"}},
	}
}

// history is Ironic's node history (API >= 1.78).
func (s *Server) history(c *gin.Context) {
	if !ver(c).AtLeast(78) {
		fail(c, http.StatusNotFound, "The resource could not be found (node history needs API version 1.78).")
		return
	}
	n, ok := s.node(c)
	if !ok {
		return
	}
	evs, err := s.c.Store().ListEvents(c.Request.Context(), n.UUID)
	if err != nil {
		failErr(c, err)
		return
	}
	out := make([]any, 0, len(evs))
	for _, e := range evs {
		out = append(out, historyDoc(c, n.UUID, e))
	}
	c.JSON(http.StatusOK, gin.H{"history": out})
}

func (s *Server) historyEvent(c *gin.Context) {
	if !ver(c).AtLeast(78) {
		fail(c, http.StatusNotFound, "The resource could not be found (node history needs API version 1.78).")
		return
	}
	n, ok := s.node(c)
	if !ok {
		return
	}
	evs, err := s.c.Store().ListEvents(c.Request.Context(), n.UUID)
	if err != nil {
		failErr(c, err)
		return
	}
	for _, e := range evs {
		if e.UUID == c.Param("event") {
			c.JSON(http.StatusOK, historyDoc(c, n.UUID, e))
			return
		}
	}
	fail(c, http.StatusNotFound, fmt.Sprintf("Node history record %s could not be found.", c.Param("event")))
}

// events is the lab extension: every stored event in full. It also serves
// deleted nodes by UUID, since their events stay.
func (s *Server) events(c *gin.Context) {
	id := c.Param("ident")
	if n, err := s.c.GetNode(c.Request.Context(), id); err == nil {
		id = n.UUID
	} else if _, perr := uuid.Parse(id); perr != nil {
		failErr(c, err)
		return
	}
	evs, err := s.c.Store().ListEvents(c.Request.Context(), id)
	if err != nil {
		failErr(c, err)
		return
	}
	if len(evs) == 0 {
		if _, err := s.c.GetNode(c.Request.Context(), id); err != nil {
			failErr(c, err)
			return
		}
	}
	c.JSON(http.StatusOK, gin.H{"events": evs})
}

// patchOp is one RFC 6902 operation.
type patchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value"`
	From  string          `json:"from"`
}

var patchable = map[string]bool{"name": true, "driver": true, "driver_info": true, "instance_info": true,
	"properties": true, "extra": true, "maintenance": true, "maintenance_reason": true}

var readOnly = map[string]bool{"uuid": true, "provision_state": true, "target_provision_state": true,
	"power_state": true, "target_power_state": true, "driver_internal_info": true, "reservation": true,
	"last_error": true, "created_at": true, "updated_at": true, "provision_updated_at": true,
	"clean_step": true, "deploy_step": true, "fault": true, "links": true, "ports": true, "states": true}

func (s *Server) patchNode(c *gin.Context) {
	var ops []patchOp
	if !decode(c, &ops, false) {
		return
	}
	if len(ops) == 0 {
		fail(c, http.StatusBadRequest, "The JSON patch is empty; expected a list of operations")
		return
	}
	var perr error
	n, err := s.c.UpdateNode(c.Request.Context(), c.Param("ident"), func(n *store.Node) error {
		perr = applyPatch(n, ops)
		return perr
	})
	if perr != nil {
		fail(c, http.StatusBadRequest, perr.Error())
		return
	}
	if err != nil {
		if errors.Is(err, conductor.ErrDuplicate) {
			fail(c, http.StatusConflict, "A node with that name already exists.")
			return
		}
		failErr(c, err)
		return
	}
	// Answer with the node as stored, not as the task held it (reserved,
	// updated_at not yet set), as Ironic does.
	if stored, err := s.c.GetNode(c, n.UUID); err == nil {
		n = stored
	}
	c.JSON(http.StatusOK, s.nodeDoc(c, n, true))
}

func pointer(path string) ([]string, error) {
	if !strings.HasPrefix(path, "/") || path == "/" {
		return nil, fmt.Errorf("Invalid patch path %q: must be a JSON pointer like /driver_info/ipmi_address", path)
	}
	parts := strings.Split(path[1:], "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(p, "~1", "/"), "~0", "~")
		if parts[i] == "" {
			return nil, fmt.Errorf("Invalid patch path %q: empty segment", path)
		}
	}
	return parts, nil
}

// applyPatch applies add/replace/remove operations to the patchable fields.
func applyPatch(n *store.Node, ops []patchOp) error {
	doc := map[string]any{
		"name": nullStr(n.Name), "driver": n.Driver, "driver_info": emptyIfNil(n.DriverInfo),
		"instance_info": emptyIfNil(n.InstanceInfo), "properties": emptyIfNil(n.Properties), "extra": emptyIfNil(n.Extra),
		"maintenance": n.Maintenance, "maintenance_reason": nullStr(n.MaintenanceReason),
	}
	for i, op := range ops {
		parts, err := pointer(op.Path)
		if err != nil {
			return err
		}
		top := parts[0]
		if readOnly[top] {
			return fmt.Errorf("'/%s' is an internal attribute and can not be updated", top)
		}
		if !patchable[top] {
			return fmt.Errorf("Unknown attribute for the node in patch path %q", op.Path)
		}
		var val any
		switch op.Op {
		case "add", "replace":
			if len(op.Value) == 0 {
				return fmt.Errorf("patch operation %d (%s %s) needs a \"value\"", i, op.Op, op.Path)
			}
			if err := json.Unmarshal(op.Value, &val); err != nil {
				return fmt.Errorf("patch operation %d: bad value: %v", i, err)
			}
		case "remove":
		default:
			return fmt.Errorf("patch operation %d: unsupported op %q (add, replace, remove)", i, op.Op)
		}
		parent := doc
		for _, p := range parts[:len(parts)-1] {
			next, ok := parent[p].(map[string]any)
			if !ok {
				return fmt.Errorf("patch path %q: %q is not an existing object", op.Path, p)
			}
			parent = next
		}
		key := parts[len(parts)-1]
		_, exists := parent[key]
		if len(parts) == 1 {
			exists = doc[key] != nil
		}
		switch op.Op {
		case "add":
			parent[key] = val
		case "replace":
			if !exists {
				return fmt.Errorf("can't replace %s: it does not exist", op.Path)
			}
			parent[key] = val
		case "remove":
			if !exists {
				return fmt.Errorf("can't remove %s: it does not exist", op.Path)
			}
			if len(parts) == 1 {
				switch key {
				case "driver_info", "instance_info", "properties", "extra":
					parent[key] = map[string]any{}
				case "driver", "maintenance":
					return fmt.Errorf("'/%s' is a mandatory attribute and can not be removed", key)
				default:
					parent[key] = nil
				}
			} else {
				delete(parent, key)
			}
		}
	}
	// Back from the document, checking types.
	str := func(k string, nullable bool) (string, error) {
		switch v := doc[k].(type) {
		case nil:
			if nullable {
				return "", nil
			}
		case string:
			return v, nil
		}
		return "", fmt.Errorf("Invalid type for field %q: expected a string", k)
	}
	obj := func(k string) (map[string]any, error) {
		m, ok := doc[k].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("Invalid type for field %q: expected an object", k)
		}
		return m, nil
	}
	var err error
	if n.Name, err = str("name", true); err != nil {
		return err
	}
	if n.Name != "" {
		if err := validName(n.Name); err != nil {
			return err
		}
	}
	if n.Driver, err = str("driver", false); err != nil {
		return err
	}
	if n.MaintenanceReason, err = str("maintenance_reason", true); err != nil {
		return err
	}
	m, ok := doc["maintenance"].(bool)
	if !ok {
		return fmt.Errorf("Invalid type for field \"maintenance\": expected a boolean")
	}
	n.Maintenance = m
	if !m {
		n.MaintenanceReason, n.Fault = "", ""
	}
	if n.DriverInfo, err = obj("driver_info"); err != nil {
		return err
	}
	if n.InstanceInfo, err = obj("instance_info"); err != nil {
		return err
	}
	if n.Properties, err = obj("properties"); err != nil {
		return err
	}
	if n.Extra, err = obj("extra"); err != nil {
		return err
	}
	return nil
}
