// Package minilab starts a mini lab for tests: the driver (in-process, or
// the real `ironlab driver` binary as a child process that a test can kill
// and restart), and a lab of fake nodes from simulator/lab (fake machines,
// virtual IPMI BMCs, the image server, the in-process agents the machines
// network-boot), all on loopback with free ports. Tests talk to the driver
// through its HTTP API only, as a user would.
//
//	l := minilab.Start(t, minilab.Options{Groups: []lab.GroupSpec{minilab.Class("n", 1, "agent_pyghmi")}})
//	id := l.Enroll(l.Nodes()[0], "disk")
//	l.Provision(id, "manage")
//	l.WaitState(id, "manageable")
//
// It lives apart from labtest because it imports the lab and the driver;
// a test that uses it must be in an external test package (package x_test).
package minilab

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver"
	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator/lab"
	"github.com/ironlab/ironlab/simulator/lab/enroll"
)

// Options say what lab to start. The zero value is one fake_agent node and
// one 1 MiB image "disk", driven by an in-process driver.
type Options struct {
	// Groups are the lab's nodes; default one fake_agent node "node-0".
	// Zero fields take small defaults (1 CPU, 1 GiB, a 4 MiB disk, bios);
	// the hardware's BMC and deploy follow from the enrollment's driver
	// class, or the class from the hardware (package enroll).
	Groups []lab.GroupSpec
	// Images the lab serves; default one 1 MiB image "disk".
	Images []images.Spec
	// HeartbeatTimeout is the driver's agent.heartbeat_timeout (2 s).
	HeartbeatTimeout time.Duration

	// Process runs the driver as `ironlab driver` (labtest.Binary; the
	// package's TestMain calls labtest.Main) so the test can KillDriver and
	// StartDriver. Flags are added to its command line; later flags win.
	Process bool
	Flags   []string
	// Config adjusts the in-process driver's configuration.
	Config func(*driver.Config)
}

// Lab is a running mini lab. Its methods fail the test that started it.
type Lab struct {
	*lab.Lab
	// URL is the driver API's base URL.
	URL string

	t    testing.TB
	opts Options
	addr string
	logs *labtest.SyncBuffer // the lab's (and the in-process driver's) log
	proc *process            // Process mode
	api  *ironic.Client      // the project's one Ironic client, at "latest"
}

// Class is a group of count nodes enrolled with a driver class, of the
// hardware the class drives.
func Class(name string, count int, class string) lab.GroupSpec {
	return lab.GroupSpec{Name: name, Count: count, Enrollment: lab.Enrollment{Driver: class}}
}

// Start builds and starts the lab and its driver; t.Cleanup stops them.
func Start(t testing.TB, o Options) *Lab {
	t.Helper()
	if len(o.Groups) == 0 {
		o.Groups = []lab.GroupSpec{Class("node", 1, "fake_agent")}
	}
	for i := range o.Groups {
		g := &o.Groups[i]
		if g.CPUs == 0 {
			g.CPUs = 1
		}
		if g.MemoryMB == 0 {
			g.MemoryMB = 1024
		}
		if g.DiskSize == 0 {
			g.DiskSize = 4 << 20
		}
		if g.Firmware == "" {
			g.Firmware = "bios"
		}
		if g.Enrollment.Dialect == "" {
			g.Enrollment.Dialect = "v1"
		}
		if err := enroll.Complete(g); err != nil {
			t.Fatalf("minilab: %v", err)
		}
	}
	if len(o.Images) == 0 {
		o.Images = []images.Spec{{ID: "disk", Size: 1 << 20}}
	}
	if o.HeartbeatTimeout == 0 {
		o.HeartbeatTimeout = 2 * time.Second
	}
	dir := t.TempDir()
	l := &Lab{t: t, opts: o, logs: &labtest.SyncBuffer{}}
	logger := slog.New(slog.NewTextHandler(l.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lab log (last lines):\n%s", LastLines(l.logs.String(), 80))
		}
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.addr = ln.Addr().String()
	l.URL = "http://" + l.addr
	l.api = ironic.Dial(l.URL, "latest", &http.Client{Timeout: 30 * time.Second})
	if o.Process {
		ln.Close() // the child binds the same port; restarts reuse it
		l.proc = &process{t: t, bin: labtest.Binary(t), addr: l.addr,
			db: filepath.Join(dir, "ironlab.db"), log: filepath.Join(dir, "driver.log"), flags: o.Flags}
		l.proc.start(l)
		t.Cleanup(func() {
			l.proc.kill()
			if t.Failed() {
				b, _ := os.ReadFile(l.proc.log)
				t.Logf("driver log (last lines):\n%s", LastLines(string(b), 80))
			}
		})
	} else {
		cfg := driver.DefaultConfig()
		cfg.DBPath = filepath.Join(dir, "ironlab.db")
		cfg.Host = "minilab-conductor"
		cfg.HeartbeatTimeout = o.HeartbeatTimeout
		cfg.CheckInterval = time.Hour // the watchdog runs when a test asks (Config)
		cfg.WatchdogAction = ""
		cfg.AgentPollInterval = 20 * time.Millisecond
		cfg.PowerRetryInterval = 50 * time.Millisecond
		cfg.PowerOffPollInterval = 50 * time.Millisecond
		cfg.PowerInterfaces = driver.StandardPowerInterfaces(driver.PowerOptions{PollInterval: 20 * time.Millisecond})
		cfg.Logger = logger.With("side", "driver")
		if o.Config != nil {
			o.Config(&cfg)
		}
		ctx, cancel := context.WithCancel(context.Background())
		d, err := driver.New(ctx, cfg)
		if err != nil {
			cancel()
			ln.Close()
			t.Fatalf("minilab: start the driver: %v", err)
		}
		served := make(chan error, 1)
		go func() { served <- d.Serve(ctx, ln) }()
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-served:
				if err != nil {
					t.Errorf("minilab: driver API: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("minilab: the driver API did not stop within 30s")
			}
			d.Close()
		})
	}

	spec := lab.Spec{
		Name: "minilab", Seed: 1, StateDir: filepath.Join(dir, "lab"), Backend: "fake",
		Groups: o.Groups, Images: o.Images, Logger: logger.With("side", "lab"),
		LookupInterval: 50 * time.Millisecond, HeartbeatErrorBackoff: 50 * time.Millisecond,
		ForcedHeartbeatGap: 50 * time.Millisecond,
	}
	lb, err := lab.New(spec)
	if err != nil {
		t.Fatalf("minilab: %v", err)
	}
	l.Lab = lb
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		if err := lb.Close(); err != nil {
			t.Logf("minilab: close the lab: %v", err)
		}
	})
	if err := lb.Start(ctx, l.URL); err != nil {
		t.Fatalf("minilab: start the lab: %v", err)
	}
	return l
}

// MustNode is the lab node with this name (e.g. "node-0").
func (l *Lab) MustNode(name string) *lab.Node {
	l.t.Helper()
	n, ok := l.Lab.Node(name)
	if !ok {
		l.t.Fatalf("minilab: no node %q", name)
	}
	return n
}

// Image is the URL and the sha256 of a served image, and its bytes.
func (l *Lab) Image(id string) (url, sha256 string, data []byte) {
	l.t.Helper()
	info, ok := l.Images.Info(id)
	if !ok {
		l.t.Fatalf("minilab: no image %q", id)
	}
	b, err := os.ReadFile(l.Images.Path(id))
	if err != nil {
		l.t.Fatal(err)
	}
	return l.Images.URL(id), info.SHA256, b
}

// Enroll creates n's node and ports through the API, as the scenario
// runner does, with image (if not empty) in its instance_info, and returns
// the node's UUID. The node is in enroll.
func (l *Lab) Enroll(n *lab.Node, image string) string {
	l.t.Helper()
	body := enroll.Node(n)
	delete(body, "uuid") // the driver gives it one
	if image != "" {
		url, sum, _ := l.Image(image)
		body["instance_info"] = map[string]any{"image_source": url, "image_os_hash_algo": "sha256", "image_os_hash_value": sum}
	}
	var out APINode
	l.API("POST", "/v1/nodes", body, &out)
	for _, mac := range n.MACs {
		l.API("POST", "/v1/ports", map[string]any{"node_uuid": out.UUID, "address": mac}, nil)
	}
	return out.UUID
}

// APINode is what the API says about a node.
type APINode struct {
	UUID               string         `json:"uuid"`
	Name               string         `json:"name"`
	ProvisionState     string         `json:"provision_state"`
	PowerState         string         `json:"power_state"`
	Reservation        *string        `json:"reservation"`
	LastError          *string        `json:"last_error"`
	Maintenance        bool           `json:"maintenance"`
	CleanStep          map[string]any `json:"clean_step"`
	DeployStep         map[string]any `json:"deploy_step"`
	DriverInfo         map[string]any `json:"driver_info"`
	DriverInternalInfo map[string]any `json:"driver_internal_info"`
}

// Error is last_error, or "".
func (n APINode) Error() string {
	if n.LastError == nil {
		return ""
	}
	return *n.LastError
}

// Reserved says whether a conductor holds the node's lock.
func (n APINode) Reserved() bool { return n.Reservation != nil && *n.Reservation != "" }

// Event is one entry of a node's history (GET /v1/nodes/{id}/events).
type Event struct {
	ID        int64  `json:"id"`
	Kind      string `json:"kind"`
	FromState string `json:"from_state"`
	ToState   string `json:"to_state"`
	Event     string `json:"event"`
	Message   string `json:"message"`
}

// API calls the driver and decodes a 2xx answer into out (if not nil); any
// other answer fails the test. It returns the status code.
func (l *Lab) API(method, path string, body, out any) int {
	l.t.Helper()
	code, raw := l.Call(method, path, body)
	if code >= 300 {
		l.t.Fatalf("%s %s: %d %s", method, path, code, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			l.t.Fatalf("%s %s: %v in %s", method, path, err, raw)
		}
	}
	return code
}

// Call calls the driver and returns the status and body, whatever they are.
func (l *Lab) Call(method, path string, body any) (int, []byte) {
	l.t.Helper()
	code, raw, err := l.api.Raw(context.Background(), method, path, body)
	if err != nil {
		l.t.Fatalf("%s %s: %v", method, path, err)
	}
	return code, raw
}

// Get is the API's view of node id.
func (l *Lab) Get(id string) APINode {
	l.t.Helper()
	var n APINode
	l.API("GET", "/v1/nodes/"+id, nil, &n)
	return n
}

// Events is node id's history.
func (l *Lab) Events(id string) []Event {
	l.t.Helper()
	var out struct {
		Events []Event `json:"events"`
	}
	l.API("GET", "/v1/nodes/"+id+"/events", nil, &out)
	return out.Events
}

// Provision asks for a provision state change (target: manage, provide,
// active, deleted, clean...); body fields such as clean_steps go in extra.
func (l *Lab) Provision(id, target string, extra ...map[string]any) {
	l.t.Helper()
	body := map[string]any{"target": target}
	for _, e := range extra {
		for k, v := range e {
			body[k] = v
		}
	}
	l.API("PUT", "/v1/nodes/"+id+"/states/provision", body, nil)
}

// WaitTimeout bounds every wait of the lab: generous, since the suite runs
// on two shared cores; a healthy flow takes a fraction of it.
const WaitTimeout = 90 * time.Second

// WaitFor polls node id until ok holds; a failed or error state ends the
// wait with a failure (the node will not get there without help).
func (l *Lab) WaitFor(id, what string, ok func(APINode) bool) APINode {
	l.t.Helper()
	var n APINode
	for deadline := time.Now().Add(WaitTimeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		n = l.Get(id)
		if ok(n) {
			return n
		}
		if strings.HasSuffix(n.ProvisionState, "failed") || n.ProvisionState == states.Error {
			break
		}
	}
	l.t.Fatalf("node %s: waiting for %s, it is in %q (last_error %q)", id, what, n.ProvisionState, n.Error())
	return n
}

// WaitState waits for node id to reach state.
func (l *Lab) WaitState(id, state string) APINode {
	l.t.Helper()
	return l.WaitFor(id, strconv.Quote(state), func(n APINode) bool { return n.ProvisionState == state })
}

// ToAvailable takes an enrolled node through manage and provide
// (automated cleaning, if the driver runs it) to available.
func (l *Lab) ToAvailable(id string) {
	l.t.Helper()
	l.Provision(id, "manage")
	l.WaitState(id, states.Manageable)
	l.Provision(id, "provide")
	l.WaitState(id, states.Available)
}

// CheckHistory checks node id's history: ids increase and every provision
// state transition starts where the previous one ended. It returns the
// states the node went through.
func (l *Lab) CheckHistory(id string) []string {
	l.t.Helper()
	var last int64
	prev := ""
	var path []string
	for i, e := range l.Events(id) {
		if e.ID <= last {
			l.t.Errorf("event %d: id %d after %d", i, e.ID, last)
		}
		last = e.ID
		if e.Kind != "provision" || e.FromState == e.ToState {
			continue
		}
		if e.FromState != prev {
			l.t.Errorf("history gap before event %d (%s): from %q, but the previous transition ended in %q; path so far %v",
				e.ID, e.Event, e.FromState, prev, path)
		}
		prev = e.ToState
		path = append(path, e.ToState)
	}
	return path
}

var bootLine = regexp.MustCompile(`(?m)^ironlab fake BIOS: boot #\d+ from (\S+)$`)

// BootsFrom lists the devices a fake node booted from, in order, as its
// console log shows them ("network", "disk").
func BootsFrom(n *lab.Node) []string {
	log, err := n.Machine.ConsoleLog()
	if err != nil {
		return nil
	}
	var devs []string
	for _, m := range bootLine.FindAllStringSubmatch(log, -1) {
		devs = append(devs, m[1])
	}
	return devs
}

// KillDriver sends SIGKILL to the driver process (Process mode) and waits
// for it to be gone: nothing is flushed, no lock released.
func (l *Lab) KillDriver() {
	l.t.Helper()
	if l.proc == nil {
		l.t.Fatal("minilab: KillDriver needs Options.Process")
	}
	l.proc.kill()
}

// StartDriver starts the driver process again, on the same address and
// database, and waits for its API.
func (l *Lab) StartDriver() {
	l.t.Helper()
	if l.proc == nil {
		l.t.Fatal("minilab: StartDriver needs Options.Process")
	}
	l.proc.start(l)
}

// process is one `ironlab driver` child; restarts reuse address and database.
type process struct {
	t      testing.TB
	bin    string
	addr   string
	db     string
	log    string
	flags  []string
	cmd    *exec.Cmd
	exited chan struct{}
}

func (p *process) start(l *Lab) {
	t := p.t
	t.Helper()
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logf, "---- start\n")
	p.cmd = exec.Command(p.bin, "driver", "-v", "--listen", p.addr, "--db", p.db,
		"--heartbeat-timeout", l.opts.HeartbeatTimeout.String(), "--check-interval", "1h", "--watchdog-action=",
		"--ipmi-min-interval", "0s", "--agent-poll-interval", "20ms",
		"--power-off-poll-interval", "50ms")
	p.cmd.Args = append(p.cmd.Args, p.flags...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	exited := make(chan struct{})
	p.exited = exited
	cmd := p.cmd
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	for deadline := time.Now().Add(WaitTimeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			b, _ := os.ReadFile(p.log)
			t.Fatalf("ironlab driver exited at start:\n%s", LastLines(string(b), 40))
		default:
		}
		if _, _, err := l.api.Raw(context.Background(), http.MethodGet, "/v1", nil); err == nil {
			return
		}
	}
	p.kill()
	t.Fatalf("ironlab driver did not answer within %s", WaitTimeout)
}

func (p *process) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.t.Errorf("ironlab driver (pid %d) still running 30s after SIGKILL", p.cmd.Process.Pid)
	}
}

// LastLines is the last n lines of s.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
