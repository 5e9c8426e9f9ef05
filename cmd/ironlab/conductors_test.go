package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ironlab/ironlab/driver"
	"github.com/ironlab/ironlab/driver/store/postgres"
	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/scenarios/labtest/pgtest"
)

type conductorProc struct {
	name, url string
	cmd       *exec.Cmd
	exited    chan struct{}
}

func startConductor(t *testing.T, dsn, name string) *conductorProc {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(labtest.Binary(t), "driver", "--db", dsn, "--host", name, "--listen", addr,
		"--conductor-heartbeat-interval", "200ms", "--conductor-timeout", "2s", "--automated-clean=false", "--check-interval", "1h")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &conductorProc{name: name, url: "http://" + addr, cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		labtest.Recv(t, p.exited, "exit of conductor "+name)
		if t.Failed() {
			t.Logf("conductor %s output:\n%s", name, logs.String())
		}
	})
	return p
}

type reply struct {
	code      int
	conductor string
	body      map[string]any
}

func api(t *testing.T, method, url, body string) reply {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("X-OpenStack-Ironic-API-Version", "latest")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{code: -1}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{code: resp.StatusCode, conductor: resp.Header.Get(driver.HeaderConductor)}
	_ = json.Unmarshal(b, &r.body)
	return r
}

// eventually polls cond (a read of the API) until it holds, for at most
// labtest.Patience: the conductors act on their own heartbeat clock.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(labtest.Patience)
	tk := time.NewTicker(50 * time.Millisecond)
	defer tk.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, labtest.Patience)
		}
		<-tk.C
	}
}

func alive(t *testing.T, url string) map[string]bool {
	r := api(t, "GET", url+"/v1/conductors", "")
	out := map[string]bool{}
	list, _ := r.body["conductors"].([]any)
	for _, v := range list {
		m := v.(map[string]any)
		out[m["hostname"].(string)] = m["alive"].(bool)
	}
	return out
}

// TestConductorsTakeOverAfterKill: three `ironlab driver` processes on one
// PostgreSQL share 30 nodes on the hash ring (with 12, the ring once gave
// one of them a single node, too few for the test). Deploys sent to c1 are
// forwarded to each node's owner and wait for their agent. One conductor
// is SIGKILLed while one of its nodes is in a deploy step (deploying,
// reserved by it): after its heartbeat timeout the others drop it, the
// deploying node fails with a reason naming the takeover, no reservation
// is left behind, its waiting nodes stay in wait call-back, and actions on
// them now reach a live conductor.
func TestConductorsTakeOverAfterKill(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	procs := map[string]*conductorProc{}
	for _, n := range []string{"c1", "c2", "c3"} {
		procs[n] = startConductor(t, dsn, n)
	}
	c1 := procs["c1"].url
	for _, p := range procs {
		eventually(t, "conductor "+p.name+" answers", func() bool { return api(t, "GET", p.url+"/v1/nodes", "").code == 200 })
	}
	eventually(t, "c1 sees 3 live conductors", func() bool {
		a := alive(t, c1)
		return a["c1"] && a["c2"] && a["c3"]
	})
	var names []string
	for i := 0; i < 30; i++ {
		name := fmt.Sprintf("node-%02d", i)
		names = append(names, name)
		r := api(t, "POST", c1+"/v1/nodes", `{"name": "`+name+`", "driver": "fake_agent",
			"instance_info": {"image_source": "http://127.0.0.1:1/disk.raw", "image_checksum": "abc"}}`)
		if r.code != 201 {
			t.Fatalf("create %s: %d %v", name, r.code, r.body)
		}
	}
	state := func(url, name string) string {
		s, _ := api(t, "GET", url+"/v1/nodes/"+name, "").body["provision_state"].(string)
		return s
	}
	for _, verb := range []struct{ target, state string }{{"manage", "manageable"}, {"provide", "available"}} {
		for _, name := range names {
			eventually(t, verb.target+" "+name, func() bool {
				return api(t, "PUT", c1+"/v1/nodes/"+name+"/states/provision", `{"target": "`+verb.target+`"}`).code == 202
			})
		}
		for _, name := range names {
			eventually(t, name+" "+verb.state, func() bool { return state(c1, name) == verb.state })
		}
	}
	owner := map[string]string{}
	byOwner := map[string][]string{}
	for _, name := range names {
		var r reply
		// 409: the owner may still hold the lock of the provide it just finished.
		eventually(t, "deploy "+name, func() bool {
			r = api(t, "PUT", c1+"/v1/nodes/"+name+"/states/provision", `{"target": "active"}`)
			return r.code != 409
		})
		if r.code != 202 || r.conductor == "" {
			t.Fatalf("deploy %s through c1: %d (handled by %q) %v", name, r.code, r.conductor, r.body)
		}
		owner[name] = r.conductor
		byOwner[r.conductor] = append(byOwner[r.conductor], name)
	}
	// The node's conductor field (API 1.49) names the owner, from any API.
	for _, name := range names {
		if got := api(t, "GET", procs["c3"].url+"/v1/nodes/"+name, "").body["conductor"]; got != owner[name] {
			t.Errorf("%s: conductor %v through c3, want %s (who handled its deploy)", name, got, owner[name])
		}
	}
	if len(byOwner) < 2 {
		t.Fatalf("30 deploys were all handled by %v: the ring did not spread them", byOwner)
	}
	for _, name := range names {
		eventually(t, name+" in wait call-back", func() bool { return state(c1, name) == "wait call-back" })
	}
	victim := "c2"
	if len(byOwner["c2"]) < len(byOwner["c3"]) {
		victim = "c3"
	}
	mine := byOwner[victim]
	if len(mine) < 2 {
		t.Fatalf("victim %s owns %v; the test needs 2 of its nodes", victim, mine)
	}
	// The victim is in a deploy step on its first node: deploying, reserved.
	ctx := context.Background()
	st, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := st.GetNodeByName(ctx, mine[0])
	if err != nil {
		t.Fatal(err)
	}
	n.ProvisionState = "deploying"
	if err := st.UpdateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := st.Reserve(ctx, n.UUID, victim); err != nil {
		t.Fatal(err)
	}
	procs[victim].cmd.Process.Kill()
	labtest.Recv(t, procs[victim].exited, "exit of the killed conductor")

	eventually(t, "c1 sees "+victim+" dead", func() bool { return !alive(t, c1)[victim] })
	eventually(t, mine[0]+" failed by the takeover", func() bool { return state(c1, mine[0]) == "deploy failed" })
	r := api(t, "GET", c1+"/v1/nodes/"+mine[0], "")
	msg, _ := r.body["last_error"].(string)
	if !strings.Contains(msg, "conductor "+victim) || !strings.Contains(msg, "took the node over") {
		t.Errorf("last_error of %s = %q, want the takeover from %s named", mine[0], msg, victim)
	}
	for _, name := range names {
		r := api(t, "GET", c1+"/v1/nodes/"+name, "")
		if res, _ := r.body["reservation"].(string); res != "" {
			t.Errorf("%s still reserved by %s after the takeover", name, res)
		}
		if c := r.body["conductor"]; c == victim || c == nil {
			t.Errorf("%s: conductor %v after the kill of %s, want a live one", name, c, victim)
		}
		if name != mine[0] && r.body["provision_state"] != "wait call-back" {
			t.Errorf("%s: %v, want wait call-back (carried on)", name, r.body["provision_state"])
		}
	}
	// An action on the victim's waiting node reaches a live conductor.
	r = api(t, "PUT", c1+"/v1/nodes/"+mine[1]+"/states/provision", `{"target": "deleted"}`)
	if r.code != 202 || r.conductor == victim || r.conductor == "" {
		t.Errorf("undeploy %s after the kill: %d handled by %q, want 202 by a live conductor", mine[1], r.code, r.conductor)
	}
}

// TestUpConductors: `ironlab up --conductors 3` starts a PostgreSQL of the
// lab's own and three conductors whose APIs it prints; any of them lists
// all three alive and answers for every node, naming its conductor; on
// SIGTERM up stops them and the PostgreSQL.
func TestUpConductors(t *testing.T) {
	pgtest.Require(t)
	t.Run("own PostgreSQL", func(t *testing.T) { upConductors(t, "") })
	// --db: an existing PostgreSQL; up starts none.
	t.Run("--db", func(t *testing.T) { upConductors(t, pgtest.Start(t).NewDatabase(t)) })
}

func upConductors(t *testing.T, dsn string) {
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} { // as root, PostgreSQL runs as postgres
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"up", "--conductors", "3", "--nodes", "3", "--driver-class", "fake_agent",
		"--state-dir", dir, "--listen", "127.0.0.1:0", "--conductor-heartbeat-interval", "200ms", "--conductor-timeout", "2s"}
	if dsn != "" {
		args = append(args, "--db", dsn)
	}
	cmd := exec.Command(labtest.Binary(t), args...)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()
	deadline := time.AfterFunc(labtest.Patience, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	sc := bufio.NewScanner(stdout)
	urls := map[string]string{}
	pgPort := ""
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "PostgreSQL on 127.0.0.1:"); ok {
			pgPort, _, _ = strings.Cut(rest, " ")
		}
		if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[0], "c") && strings.HasPrefix(f[1], "http://127.0.0.1:") {
			urls[f[0]] = f[1]
		}
		if strings.HasPrefix(line, "try:  curl") && strings.Contains(line, "/v1/conductors") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if len(urls) != 3 || (pgPort == "") != (dsn != "") {
		t.Fatalf("printed conductors %v, PostgreSQL port %q: want c1..c3, and the port of the lab's own PostgreSQL without --db", urls, pgPort)
	}
	eventually(t, "c2 sees 3 live conductors", func() bool {
		a := alive(t, urls["c2"])
		return a["c1"] && a["c2"] && a["c3"]
	})
	r := api(t, "POST", urls["c3"]+"/v1/nodes", `{"name": "extra", "driver": "fake_agent"}`)
	if r.code != 201 {
		t.Fatalf("create a node through c3: %d %v", r.code, r.body)
	}
	for name, u := range urls {
		got := api(t, "GET", u+"/v1/nodes/extra", "").body["conductor"]
		if c, _ := got.(string); urls[c] == "" {
			t.Errorf("node extra through %s: conductor %v, want one of c1..c3", name, got)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := <-exited; err != nil {
		t.Errorf("up after SIGTERM: %v", err)
	}
	if pgPort == "" {
		return
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+pgPort, time.Second); err == nil {
		c.Close()
		t.Errorf("PostgreSQL on port %s still answers after up stopped", pgPort)
	}
}

// Bad --conductors/--store combinations are refused with the reason, exit 2.
func TestUpConductorFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--conductors", "3", "--store", "sqlite"}, "--conductors 3 share one database: want --store postgres"},
		{[]string{"--conductors", "0"}, "--conductors must be 1 to 16, got 0"},
		{[]string{"--store", "mysql"}, `--store "mysql": want sqlite or postgres`},
		{[]string{"--store", "postgres", "--db", "/tmp/x.db"}, `--db "/tmp/x.db" is not a postgres:// DSN`},
		{[]string{"--conductors", "2", "--driver-url", "http://127.0.0.1:1"}, "--driver-url starts no built-in driver"},
	} {
		cmd := exec.Command(labtest.Binary(t), append([]string{"up", "--state-dir", t.TempDir()}, tc.args...)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), tc.want) {
			t.Errorf("up %v: %v\n%s\nwant exit 2 saying %q", tc.args, err, out, tc.want)
		}
	}
}
