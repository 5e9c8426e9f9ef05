package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ory/dockertest/v3"
	"github.com/ory/dockertest/v3/docker"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/scenarios/labtest/minilab"
	"github.com/ironlab/ironlab/scenarios/labtest/pgtest"
	"github.com/ironlab/ironlab/simulator/lab"
	"github.com/ironlab/ironlab/simulator/lab/enroll"
)

const dockerInstall = "apt-get install docker.io, then start dockerd --bridge=none --iptables=false"

// Labels of what the container tests create, so that a later run removes
// what a killed run (go test -timeout, SIGKILL) left behind.
const (
	labelTest = "ironlab.test"
	labelPID  = "ironlab.test.pid"
	imageRepo = "ironlab-conductor-test"
)

// dockerPool connects to the Docker engine, or skips (fails under CI).
func dockerPool(t *testing.T) *dockertest.Pool {
	t.Helper()
	var pool *dockertest.Pool
	labtest.RequireFunc(t, "a Docker engine", dockerInstall, func() error {
		var err error
		if pool, err = dockertest.NewPool(""); err != nil {
			return err
		}
		return pool.Client.Ping()
	})
	pool.MaxWait = labtest.Patience
	sweepLeftovers(t, pool)
	return pool
}

// sweepLeftovers removes the containers and images of earlier runs whose
// test process is gone.
func sweepLeftovers(t *testing.T, pool *dockertest.Pool) {
	gone := func(labels map[string]string) bool {
		pid, err := strconv.Atoi(labels[labelPID])
		return err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH
	}
	cs, err := pool.Client.ListContainers(docker.ListContainersOptions{All: true, Filters: map[string][]string{"label": {labelTest}}})
	if err != nil {
		t.Logf("list leftover containers: %v", err)
	}
	for _, c := range cs {
		if gone(c.Labels) {
			t.Logf("removing container %s left by an earlier run", strings.Join(c.Names, ","))
			_ = pool.Client.RemoveContainer(docker.RemoveContainerOptions{ID: c.ID, Force: true, RemoveVolumes: true})
		}
	}
	imgs, err := pool.Client.ListImages(docker.ListImagesOptions{Filters: map[string][]string{"label": {labelTest}}})
	if err != nil {
		t.Logf("list leftover images: %v", err)
	}
	for _, im := range imgs {
		if gone(im.Labels) {
			t.Logf("removing image %v left by an earlier run", im.RepoTags)
			_ = pool.Client.RemoveImageExtended(im.ID, docker.RemoveImageOptions{Force: true})
		}
	}
}

// conductorImage builds an image FROM scratch holding the static ironlab
// binary: no registry is needed, nothing is pulled. t.Cleanup removes it.
func conductorImage(t *testing.T, pool *dockertest.Pool) (repo, tag string) {
	t.Helper()
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "ironlab"), "github.com/ironlab/ironlab/cmd/ironlab")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	dockerfile := fmt.Sprintf("FROM scratch\nLABEL %s=conductor %s=%d\nCOPY ironlab /ironlab\nENTRYPOINT [\"/ironlab\"]\n",
		labelTest, labelPID, os.Getpid())
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	repo, tag = imageRepo, fmt.Sprintf("p%d", os.Getpid())
	var out strings.Builder
	t.Cleanup(func() {
		if err := pool.Client.RemoveImageExtended(repo+":"+tag, docker.RemoveImageOptions{Force: true}); err != nil && !strings.Contains(err.Error(), "No such image") {
			t.Errorf("remove image %s:%s: %v", repo, tag, err)
		}
	})
	if err := pool.Client.BuildImage(docker.BuildImageOptions{Name: repo + ":" + tag, ContextDir: dir, Dockerfile: "Dockerfile",
		OutputStream: &out, NetworkMode: "host", RmTmpContainer: true, ForceRmTmpContainer: true}); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out.String())
	}
	return repo, tag
}

// conductorBox is one `ironlab driver` in a container.
type conductorBox struct {
	name, url string
	res       *dockertest.Resource
}

// holdAddr reserves a free loopback TCP port until the container that is
// to listen there starts (startConductorBox closes it): the lab's own
// listeners, opened meanwhile, cannot take it.
func holdAddr(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// startConductorBox runs `ironlab driver` on the store dsn in a container
// with host networking, its API on held's address; t.Cleanup removes the container,
// after logging its output if the test failed.
func startConductorBox(t *testing.T, pool *dockertest.Pool, repo, tag, dsn, name string, held net.Listener) *conductorBox {
	t.Helper()
	addr := held.Addr().String()
	held.Close()
	res, err := pool.RunWithOptions(&dockertest.RunOptions{Repository: repo, Tag: tag,
		Name:   fmt.Sprintf("ironlab-test-%d-%s", os.Getpid(), name),
		Labels: map[string]string{labelTest: "conductor", labelPID: strconv.Itoa(os.Getpid())},
		Cmd: []string{"driver", "--db", dsn, "--host", name, "--listen", addr,
			"--conductor-heartbeat-interval", "200ms", "--conductor-timeout", "2s",
			"--automated-clean=false", "--check-interval", "1h", "--watchdog-action=",
			"--heartbeat-timeout", "2s", "--ipmi-min-interval", "0s", "--agent-poll-interval", "20ms",
			"--power-off-poll-interval", "50ms", "--lock-retry-interval", "200ms"},
	}, func(hc *docker.HostConfig) {
		hc.NetworkMode = "host"
		hc.AutoRemove = false // its output is wanted when the test fails
	})
	if err != nil {
		t.Fatalf("run conductor %s: %v", name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			state := ""
			if c, err := pool.Client.InspectContainer(res.Container.ID); err == nil {
				state = fmt.Sprintf("running %v, paused %v, exit code %d", c.State.Running, c.State.Paused, c.State.ExitCode)
			}
			t.Logf("conductor container %s (%s), last lines of its output:\n%s", name, state, minilab.LastLines(containerLogs(pool, res), 60))
		}
		if err := pool.Purge(res); err != nil {
			t.Errorf("remove conductor container %s: %v", name, err)
		}
	})
	return &conductorBox{name: name, url: "http://" + addr, res: res}
}

// containerLogs is a container's output so far.
func containerLogs(pool *dockertest.Pool, res *dockertest.Resource) string {
	var logs strings.Builder
	_ = pool.Client.Logs(docker.LogsOptions{Container: res.Container.ID, OutputStream: &logs, ErrorStream: &logs, Stdout: true, Stderr: true})
	return logs.String()
}

// containerLab is a lab of fake nodes (IPMI BMCs, in-process agents, the
// image server) on loopback whose agents call back to driverURL.
func containerLab(t *testing.T, driverURL string, groups []lab.GroupSpec, image images.Spec) *lab.Lab {
	t.Helper()
	for i := range groups {
		g := &groups[i]
		g.CPUs, g.MemoryMB, g.DiskSize, g.Firmware = 1, 1024, 4<<20, "bios"
		g.Enrollment.Dialect = "v1"
		if err := enroll.Complete(g); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "lab.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("lab log, last lines:\n%s", minilab.LastLines(string(b), 60))
		}
	})
	lb, err := lab.New(lab.Spec{Name: "dockertest", Seed: 1, StateDir: filepath.Join(dir, "lab"), Backend: "fake",
		Groups: groups, Images: []images.Spec{image}, Logger: slog.New(slog.NewTextHandler(logf, nil)),
		LookupInterval: 50 * time.Millisecond, HeartbeatErrorBackoff: 50 * time.Millisecond, ForcedHeartbeatGap: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		if err := lb.Close(); err != nil {
			t.Logf("close the lab: %v", err)
		}
	})
	if err := lb.Start(ctx, driverURL); err != nil {
		t.Fatalf("start the lab: %v", err)
	}
	return lb
}

// writeImageRuns counts the write_image deploy steps an agent ran.
func writeImageRuns(a *fakeagent.Agent) (done, running int) {
	if a == nil {
		return 0, 0
	}
	for _, c := range a.Commands() {
		if !strings.HasSuffix(c.CommandName, "execute_deploy_step") {
			continue
		}
		if c.CommandStatus == "RUNNING" {
			running++ // the step is not in the result yet; only write_image hangs here
			continue
		}
		b, _ := json.Marshal(c.CommandResult)
		var r struct {
			DeployStep struct {
				Step string `json:"step"`
			} `json:"deploy_step"`
		}
		if json.Unmarshal(b, &r) == nil && r.DeployStep.Step == "write_image" {
			done++
		}
	}
	return done, running
}

// TestConductorContainersFailover: three `ironlab driver` conductors, each
// in its own FROM-scratch container (host networking, loopback only), share
// a PostgreSQL on the host and deploy 18 nodes of a lab (IPMI BMCs and
// no-BMC nodes, in-process agents that call back through c1's API). While
// every node is in wait call-back with its image write running on the
// agent, and one node each of c2 and c3 is in its last deploy step under
// its conductor's lock, c3 is killed (docker kill: SIGKILL) and c2 paused
// (docker pause: a hung conductor that stops heartbeating); c2 is resumed
// after c1 took their nodes over, then the writes finish. Checked as a user
// would: every node ends active, or deploy failed with a reason naming the
// takeover (the two locked nodes must); c2's late write of the node it hung
// on is refused (the lock is no longer its); at least one of c2's and c3's
// waiting nodes is carried on to active by a live conductor; no reservation
// is left; every node's events end in its state without a gap; each image
// was written once (one write_image and one deploy boot per node, the image
// server served each image once) and the active nodes' disks hold it.
func TestConductorContainersFailover(t *testing.T) {
	pool := dockerPool(t)
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	repo, tag := conductorImage(t, pool)
	// The lab first, so that it closes last: the conductors stop talking
	// to its agents before they go. Its agents look up through c1.
	addrs := map[string]net.Listener{"c1": holdAddr(t), "c2": holdAddr(t), "c3": holdAddr(t)}
	c1 := "http://" + addrs["c1"].Addr().String()
	img := images.Spec{ID: "disk", Size: 1 << 20}
	lb := containerLab(t, c1, []lab.GroupSpec{minilab.Class("ipmi", 12, "agent_pyghmi"), minilab.Class("nobmc", 6, "fake_agent")}, img)
	box := map[string]*conductorBox{}
	for _, name := range []string{"c1", "c2", "c3"} {
		box[name] = startConductorBox(t, pool, repo, tag, dsn, name, addrs[name])
	}
	for _, b := range box {
		eventually(t, "conductor container "+b.name+" answers", func() bool { return api(t, "GET", b.url+"/v1/nodes", "").code == 200 })
	}
	eventually(t, "c1 sees c1, c2 and c3 alive", func() bool { a := alive(t, c1); return a["c1"] && a["c2"] && a["c3"] })

	imgInfo, _ := lb.Images.Info(img.ID)
	imgData, err := os.ReadFile(lb.Images.Path(img.ID))
	if err != nil {
		t.Fatal(err)
	}
	hang := fakeagent.Faults{HangCommand: "write_image"}
	var names []string
	for _, n := range lb.Nodes() {
		if err := n.SetAgentFaults(hang, true); err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		body := enroll.Node(n) // with the lab's UUID: the ring's split is the same every run
		body["instance_info"] = map[string]any{"image_source": lb.Images.URL(img.ID), "image_os_hash_algo": "sha256", "image_os_hash_value": imgInfo.SHA256}
		b, _ := json.Marshal(body)
		if r := api(t, "POST", c1+"/v1/nodes", string(b)); r.code != 201 {
			t.Fatalf("create %s: %d %v", n.Name, r.code, r.body)
		}
		for _, mac := range n.MACs {
			if r := api(t, "POST", c1+"/v1/ports", `{"node_uuid": "`+n.UUID+`", "address": "`+mac+`"}`); r.code != 201 {
				t.Fatalf("port %s of %s: %d %v", mac, n.Name, r.code, r.body)
			}
		}
		names = append(names, n.Name)
	}
	node := func(name string) map[string]any { return api(t, "GET", c1+"/v1/nodes/"+name, "").body }
	state := func(name string) string { s, _ := node(name)["provision_state"].(string); return s }
	owner := map[string]string{}
	byOwner := map[string][]string{}
	for _, verb := range []struct{ target, state string }{{"manage", "manageable"}, {"provide", "available"}, {"active", "wait call-back"}} {
		for _, name := range names {
			var r reply
			// 409: the owner may still hold the lock of the step it just finished.
			eventually(t, verb.target+" "+name, func() bool {
				r = api(t, "PUT", c1+"/v1/nodes/"+name+"/states/provision", `{"target": "`+verb.target+`"}`)
				return r.code != 409
			})
			if r.code != 202 {
				t.Fatalf("%s %s: %d %v", verb.target, name, r.code, r.body)
			}
			if verb.target == "active" {
				owner[name] = r.conductor
				byOwner[r.conductor] = append(byOwner[r.conductor], name)
			}
		}
		for _, name := range names {
			eventually(t, name+" "+verb.state, func() bool { return state(name) == verb.state })
		}
	}
	if len(byOwner["c1"]) == 0 || len(byOwner["c2"]) == 0 || len(byOwner["c3"]) == 0 {
		t.Fatalf("deploys handled by %v: want nodes on each of c1, c2, c3", byOwner)
	}
	// Mid-deploy: every agent runs its image write (hung by the fault).
	agents := map[string]*fakeagent.Agent{}
	for _, n := range lb.Nodes() {
		eventually(t, n.Name+"'s agent runs write_image", func() bool { _, run := writeImageRuns(n.Agent()); return run == 1 })
		agents[n.Name] = n.Agent()
	}
	// One node with a BMC of c3 and one of c2 go on past their image write
	// into the deploy's last step, where their conductor holds the lock
	// while it waits for the agent's answer to get_partition_uuids (hung
	// by the fault; the conductor waits up to its 60 s command timeout): c3
	// dies and c2 hangs in that step, and the takeover must fail those
	// nodes; c2, resumed, must not undo it.
	inStep := map[string]*lab.Node{}
	for _, c := range []string{"c2", "c3"} {
		for _, name := range byOwner[c] {
			if n, _ := lb.Node(name); n.BMC != nil {
				inStep[c] = n
				break
			}
		}
		n := inStep[c]
		if n == nil {
			t.Fatalf("%s owns no node with a BMC: %v", c, byOwner[c])
		}
		if err := n.SetAgentFaults(fakeagent.Faults{HangCommand: "get_partition_uuids"}, true); err != nil {
			t.Fatal(err)
		}
	}
	for c, n := range inStep {
		eventually(t, n.Name+" in its last deploy step, locked by "+c, func() bool {
			b := node(n.Name)
			return b["provision_state"] == "deploying" && b["reservation"] == c
		})
	}

	if err := pool.Client.KillContainer(docker.KillContainerOptions{ID: box["c3"].res.Container.ID}); err != nil {
		t.Fatalf("docker kill c3: %v", err)
	}
	if err := pool.Client.PauseContainer(box["c2"].res.Container.ID); err != nil {
		t.Fatalf("docker pause c2: %v", err)
	}
	eventually(t, "c1 sees the killed c3 and the paused c2 dead", func() bool { a := alive(t, c1); return !a["c2"] && !a["c3"] })
	// Taken over: each node waits for its agent (carried on) or failed,
	// and c2 and c3 hold no lock. (The new owner holds the lock of a node
	// it takes over while it fails it: deploying, reserved by c1, for a
	// moment.)
	for _, name := range names {
		last := ""
		deadline := time.Now().Add(labtest.Patience)
		for {
			b := node(name)
			st, _ := b["provision_state"].(string)
			res, _ := b["reservation"].(string)
			if (st == "wait call-back" || st == "deploy failed") && res != "c2" && res != "c3" {
				break
			}
			last = fmt.Sprintf("%s, reserved by %q", st, res)
			if time.Now().After(deadline) {
				t.Fatalf("%s after the takeover: %s; want wait call-back (carried on) or deploy failed, no lock of c2 or c3", name, last)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	if err := pool.Client.UnpauseContainer(box["c2"].res.Container.ID); err != nil {
		t.Fatalf("docker unpause c2: %v", err)
	}
	eventually(t, "c2 heartbeats again and rejoins", func() bool { return alive(t, c1)["c2"] })
	for _, n := range lb.Nodes() {
		if err := n.SetAgentFaults(fakeagent.Faults{}, true); err != nil {
			t.Fatalf("%s: clear the faults: %v", n.Name, err)
		}
	}
	for _, name := range names {
		eventually(t, name+" active or deploy failed", func() bool { s := state(name); return s == "active" || s == "deploy failed" })
	}
	// Resumed, c2 goes on with the step it hung in (the agent's power off
	// answers, it reboots the node) and tries to save its outcome: wait for
	// its refusal in its log (store.ErrNotHeld), or for the node to change.
	stale := inStep["c2"]
	eventually(t, "c2's late write of "+stale.Name+" refused", func() bool {
		return strings.Contains(containerLogs(pool, box["c2"].res), "node lock no longer held") || state(stale.Name) != "deploy failed"
	})

	for c, n := range inStep {
		if s := state(n.Name); s != "deploy failed" {
			t.Errorf("%s, in a deploy step of %s when it died: %s, want deploy failed by the takeover", n.Name, c, s)
		}
	}
	writes, carried := 0, 0
	for _, n := range lb.Nodes() {
		name := n.Name
		body := node(name)
		st, _ := body["provision_state"].(string)
		msg, _ := body["last_error"].(string)
		if st == "deploy failed" && !strings.Contains(msg, "took the node over") {
			t.Errorf("%s: deploy failed with %q, want only failures by the takeover, named", name, msg)
		}
		if st == "active" && (owner[name] == "c2" || owner[name] == "c3") {
			carried++
		}
		if res, _ := body["reservation"].(string); res != "" {
			t.Errorf("%s still reserved by %s", name, res)
		}
		evs := api(t, "GET", c1+"/v1/nodes/"+name+"/events", "")
		list, _ := evs.body["events"].([]any)
		prev, reached := "", false
		for _, v := range list {
			e, _ := v.(map[string]any)
			from, _ := e["from_state"].(string)
			to, _ := e["to_state"].(string)
			if e["kind"] != "provision" || from == to {
				continue
			}
			if prev != "" && from != prev {
				t.Errorf("%s: history gap: %s -> %s after a transition to %s", name, from, to, prev)
			}
			prev, reached = to, reached || to == st
		}
		if !reached || prev != st {
			t.Errorf("%s is %s, but its %d events end in %q", name, st, len(list), prev)
		}
		done, running := writeImageRuns(agents[name])
		if running != 0 || (st == "active" && done != 1) || done > 1 {
			t.Errorf("%s (%s): its deploy agent ran write_image %d times (%d still running), want once", name, st, done, running)
		}
		writes += done
		if now := n.Agent(); now != nil && now != agents[name] {
			t.Errorf("%s booted another agent after the takeover: deployed again", name)
		}
		if n.BMC != nil {
			boots := 0
			for _, d := range minilab.BootsFrom(n) {
				if d == "network" {
					boots++
				}
			}
			if boots != 1 {
				t.Errorf("%s: %d network boots (%v), want one deploy boot", name, boots, minilab.BootsFrom(n))
			}
		}
		if st == "active" {
			disk, err := os.ReadFile(n.DiskPath())
			if err != nil || !bytes.Equal(disk[:min(len(disk), len(imgData))], imgData) {
				t.Errorf("%s is active, but its disk does not hold the image (%v)", name, err)
			}
		}
	}
	if carried == 0 {
		t.Errorf("none of c2's and c3's nodes (%v, %v) ended active: nothing was carried on by a new owner", byOwner["c2"], byOwner["c3"])
	}
	if got, want := lb.Images.BytesServed(), int64(writes)*imgInfo.Size; got != want {
		t.Errorf("the image server served %d bytes for %d image writes of %d bytes: an image was fetched twice", got, writes, imgInfo.Size)
	}
	t.Logf("deploys first handled by %v; %d of c2's and c3's nodes carried on to active", byOwner, carried)
}
