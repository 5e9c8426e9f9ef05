package redfish

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ironlab/ironlab/simulator"
)

// A firmware image for a lab BMC is a file whose first line is
// "ironlab-firmware <version>"; SimpleUpdate fetches it and the target's
// version becomes <version>. Anything else fails the update task.
const firmwareMagic = "ironlab-firmware "

var versionRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)

// maxTasks bounds the tasks kept; older finished ones are forgotten.
const maxTasks = 1000

type task struct {
	id       string
	sys      *System
	state    string // New, Running, Completed, Exception
	percent  int
	messages []map[string]any
	start    time.Time
	end      time.Time
}

type taskStore struct {
	mu    sync.Mutex
	next  int
	tasks map[string]*task
	order []string
}

func (ts *taskStore) init() { ts.tasks = map[string]*task{} }

func (ts *taskStore) add(sys *System) *task {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.next++
	t := &task{id: strconv.Itoa(ts.next), sys: sys, state: "Running", start: time.Now().UTC()}
	ts.tasks[t.id] = t
	ts.order = append(ts.order, t.id)
	for len(ts.order) > maxTasks {
		old := ts.tasks[ts.order[0]]
		if old.state == "Running" {
			break
		}
		delete(ts.tasks, ts.order[0])
		ts.order = ts.order[1:]
	}
	return t
}

func (ts *taskStore) get(id string) (task, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t, ok := ts.tasks[id]
	if !ok {
		return task{}, false
	}
	c := *t
	c.messages = slices.Clone(t.messages)
	return c, true
}

func (ts *taskStore) finish(t *task, state, msgID, msg string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t.state, t.end = state, time.Now().UTC()
	t.percent = 100
	t.messages = append(t.messages, map[string]any{"MessageId": msgID, "Message": msg, "Severity": severity(state)})
}

func severity(state string) string {
	if state == "Exception" {
		return "Critical"
	}
	return "OK"
}

func (ts *taskStore) ids() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.order)
}

func taskView(t task) map[string]any {
	v := odata("/redfish/v1/TaskService/Tasks/"+t.id, "#Task.v1_4_3.Task")
	v["Id"] = t.id
	v["Name"] = "Firmware update of " + t.sys.m.Name()
	v["TaskState"] = t.state
	status := "OK"
	if t.state == "Exception" {
		status = "Critical"
	}
	v["TaskStatus"] = status
	v["PercentComplete"] = t.percent
	v["StartTime"] = t.start.Format(time.RFC3339)
	if !t.end.IsZero() {
		v["EndTime"] = t.end.Format(time.RFC3339)
	}
	v["TaskMonitor"] = "/redfish/v1/TaskService/TaskMonitors/" + t.id
	msgs := make([]any, len(t.messages))
	for i, m := range t.messages {
		msgs[i] = m
	}
	v["Messages"] = msgs
	return v
}

func (s *Service) getTaskService(c *call) (*result, *rfError) {
	v := odata("/redfish/v1/TaskService", "#TaskService.v1_1_4.TaskService")
	v["Id"] = "TaskService"
	v["Name"] = "Task Service"
	v["ServiceEnabled"] = true
	v["CompletedTaskOverWritePolicy"] = "Oldest"
	v["Status"] = statusOK
	v["Tasks"] = link("/redfish/v1/TaskService/Tasks")
	return ok(v)
}

func (s *Service) getTasks(c *call) (*result, *rfError) {
	ids := s.tasks.ids()
	for i, id := range ids {
		ids[i] = "/redfish/v1/TaskService/Tasks/" + id
	}
	return ok(collection("/redfish/v1/TaskService/Tasks", "#TaskCollection.TaskCollection", "Task Collection", ids))
}

func (s *Service) getTask(c *call) (*result, *rfError) {
	t, found := s.tasks.get(c.r.PathValue("task"))
	if !found {
		return nil, notFound(c.r.URL.Path)
	}
	return ok(taskView(t))
}

// getTaskMonitor answers 202 with the task while it runs and 200 once it
// ended, as sushy's TaskMonitor expects.
func (s *Service) getTaskMonitor(c *call) (*result, *rfError) {
	t, found := s.tasks.get(c.r.PathValue("task"))
	if !found {
		return nil, notFound(c.r.URL.Path)
	}
	if t.state == "Running" || t.state == "New" {
		return &result{status: http.StatusAccepted, body: taskView(t), header: map[string]string{
			"Location": "/redfish/v1/TaskService/TaskMonitors/" + t.id, "Retry-After": "1"}}, nil
	}
	return ok(taskView(t))
}

func (s *Service) getUpdateService(c *call) (*result, *rfError) {
	v := odata("/redfish/v1/UpdateService", "#UpdateService.v1_2_0.UpdateService")
	v["Id"] = "UpdateService"
	v["Name"] = "Update Service"
	v["ServiceEnabled"] = true
	v["Status"] = statusOK
	v["FirmwareInventory"] = link("/redfish/v1/UpdateService/FirmwareInventory")
	v["Actions"] = map[string]any{"#UpdateService.SimpleUpdate": map[string]any{
		"target": "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
		"TransferProtocol@Redfish.AllowableValues": []string{"HTTP", "HTTPS"},
	}}
	return ok(v)
}

func (s *Service) getFirmwareInventory(c *call) (*result, *rfError) {
	ids := s.systemIDs()
	members := make([]string, 0, 2*len(ids))
	for _, id := range ids {
		members = append(members, "/redfish/v1/UpdateService/FirmwareInventory/BIOS-"+id,
			"/redfish/v1/UpdateService/FirmwareInventory/BMC-"+id)
	}
	return ok(collection("/redfish/v1/UpdateService/FirmwareInventory", "#SoftwareInventoryCollection.SoftwareInventoryCollection", "Firmware Inventory", members))
}

func (s *Service) getFirmware(c *call) (*result, *rfError) {
	fid := c.r.PathValue("fw")
	kind, id, _ := strings.Cut(fid, "-")
	sys := s.System(id)
	if sys == nil || (kind != "BIOS" && kind != "BMC") {
		return nil, notFound(c.r.URL.Path)
	}
	biosV, bmcV := sys.FirmwareVersions()
	v := odata("/redfish/v1/UpdateService/FirmwareInventory/"+fid, "#SoftwareInventory.v1_2_0.SoftwareInventory")
	v["Id"] = fid
	v["Updateable"] = true
	v["Status"] = statusOK
	if kind == "BIOS" {
		v["Name"] = "System BIOS of " + sys.m.Name()
		v["Version"] = biosV
		v["RelatedItem"] = []any{link(sys.Path())}
	} else {
		v["Name"] = "BMC firmware of " + sys.m.Name()
		v["Version"] = bmcV
		v["RelatedItem"] = []any{link("/redfish/v1/Managers/" + sys.id)}
	}
	return ok(v)
}

// updateTarget is what a Targets entry names: a system's BIOS or its BMC.
func (s *Service) updateTarget(target string) (*System, string) {
	for _, pre := range []struct{ prefix, kind string }{
		{"/redfish/v1/Systems/", "BIOS"},
		{"/redfish/v1/Managers/", "BMC"},
		{"/redfish/v1/UpdateService/FirmwareInventory/BIOS-", "BIOS"},
		{"/redfish/v1/UpdateService/FirmwareInventory/BMC-", "BMC"},
	} {
		if id, ok := strings.CutPrefix(strings.TrimRight(target, "/"), pre.prefix); ok {
			if sys := s.System(id); sys != nil {
				return sys, pre.kind
			}
		}
	}
	return nil, ""
}

// simpleUpdate starts a task that fetches ImageURI and, if it is a lab
// firmware image, sets the target's version. Without Targets the service
// must hold exactly one system: that system's BIOS is updated.
func (s *Service) simpleUpdate(c *call) (*result, *rfError) {
	const action = "UpdateService.SimpleUpdate"
	obj, e := readObject(c, false)
	if e != nil {
		return nil, e
	}
	if e := onlyKeysAction(obj, action, "ImageURI", "TransferProtocol", "Targets", "Username", "Password"); e != nil {
		return nil, e
	}
	raw, ok := obj["ImageURI"]
	if !ok {
		return nil, paramMissing(action, "ImageURI")
	}
	var image string
	if err := json.Unmarshal(raw, &image); err != nil {
		return nil, paramFormat(action, "ImageURI", string(raw))
	}
	u, err := url.Parse(image)
	if err != nil || u.Host == "" {
		return nil, paramFormat(action, "ImageURI", strconv.Quote(image))
	}
	if raw, ok := obj["TransferProtocol"]; ok {
		var p string
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, paramFormat(action, "TransferProtocol", string(raw))
		}
		if p != "HTTP" && p != "HTTPS" {
			return nil, paramValueNotInList(action, "TransferProtocol", p)
		}
		if !strings.EqualFold(p, u.Scheme) {
			return nil, paramValueNotInList(action, "TransferProtocol", p)
		}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, paramFormat(action, "ImageURI", strconv.Quote(image))
	}
	if err := loopbackHost(u); err != nil {
		// Refused here rather than in the task: the lab fetches from the
		// host's loopback only, and a 400 tells the caller at once.
		return nil, errorf(http.StatusBadRequest, "ActionParameterValueError", []string{"#/ImageURI"}, []string{"ImageURI", action},
			"The value for the parameter ImageURI in the action %s is invalid: %v; the lab fetches firmware from loopback addresses only.", action, err)
	}
	for _, k := range []string{"Username", "Password"} {
		if raw, ok := obj[k]; ok {
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, paramFormat(action, k, string(raw))
			}
		}
	}
	var targets []string
	if raw, ok := obj["Targets"]; ok {
		if err := json.Unmarshal(raw, &targets); err != nil {
			return nil, paramFormat(action, "Targets", string(raw))
		}
	}
	var sys *System
	kind := "BIOS"
	switch len(targets) {
	case 0:
		ids := s.systemIDs()
		if len(ids) != 1 {
			return nil, paramMissing(action, "Targets")
		}
		sys = s.System(ids[0])
	case 1:
		sys, kind = s.updateTarget(targets[0])
		if sys == nil {
			return nil, paramValueNotInList(action, "Targets", targets[0])
		}
	default:
		return nil, errorf(http.StatusBadRequest, "ActionParameterValueError", []string{"#/Targets"}, []string{"Targets", action},
			"The value for the parameter Targets in the action %s is invalid: one target per update.", action)
	}
	f := merge(s.faults.get(), sys.faults.get())
	t := s.tasks.add(sys)
	snap, _ := s.tasks.get(t.id) // the answer shows the task as started, whatever runs next
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.runUpdate(t, sys, kind, image, f.FailTasks)
	}()
	return &result{status: http.StatusAccepted, body: taskView(snap), header: map[string]string{
		"Location": "/redfish/v1/TaskService/TaskMonitors/" + t.id, "Retry-After": "1"}}, nil
}

func (s *Service) runUpdate(t *task, sys *System, kind, image string, fail bool) {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Minute)
	defer cancel()
	if fail {
		s.tasks.finish(t, "Exception", "Update.1.0.ApplyFailed", "Injected fault: the update task failed.")
		return
	}
	version, err := fetchFirmware(ctx, image)
	if err != nil {
		s.tasks.finish(t, "Exception", "Update.1.0.TransferFailed", fmt.Sprintf("Fetching %s failed: %v.", image, err))
		return
	}
	if kind == "BIOS" {
		if hu, ok := sys.m.(hardwareUpdater); ok {
			if err := hu.UpdateHardware(func(hw *simulator.Hardware) { hw.BIOSVersion = version }); err != nil {
				s.tasks.finish(t, "Exception", "Update.1.0.ApplyFailed", fmt.Sprintf("Applying BIOS %s failed: %v.", version, err))
				return
			}
		}
	}
	sys.mu.Lock()
	if kind == "BIOS" {
		sys.biosVersion = version
	} else {
		sys.bmcVersion = version
	}
	sys.mu.Unlock()
	s.tasks.finish(t, "Completed", "Update.1.0.UpdateSuccessful", fmt.Sprintf("The %s firmware of %s is now %s.", kind, sys.m.Name(), version))
}

// loopbackHost accepts localhost and loopback addresses only.
func loopbackHost(u *url.URL) error {
	h := u.Hostname()
	if h == "localhost" {
		return nil
	}
	if a, err := netip.ParseAddr(h); err == nil && a.IsLoopback() {
		return nil
	}
	return fmt.Errorf("host %q is not a loopback address", h)
}

// fetchFirmware GETs a firmware image (loopback only: the lab sends nothing
// elsewhere) and reads its version line.
func fetchFirmware(ctx context.Context, image string) (string, error) {
	u, err := url.Parse(image)
	if err != nil {
		return "", err
	}
	if err := loopbackHost(u); err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, image, nil)
	if err != nil {
		return "", err
	}
	c := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // lab image servers are self-signed, loopback only
		DialContext:     (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %s", resp.Status)
	}
	line, err := bufio.NewReader(io.LimitReader(resp.Body, 4096)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), firmwareMagic)
	v = strings.TrimSpace(v)
	if !ok || !versionRe.MatchString(v) {
		return "", fmt.Errorf("not an ironlab firmware image (want a first line %q)", firmwareMagic+"<version>")
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<30))
	return v, nil
}
