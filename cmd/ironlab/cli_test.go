package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

// The tests run the real binary, built once (labtest.Binary).
func TestMain(m *testing.M) { labtest.Main(m) }

func ironlab(t *testing.T, dir string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(labtest.Binary(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func TestEveryCommandHasHelp(t *testing.T) {
	for name := range commands {
		t.Run(name, func(t *testing.T) {
			out, code := ironlab(t, t.TempDir(), name, "--help")
			if code != 0 || !strings.Contains(out, "Usage: ironlab "+name) {
				t.Errorf("ironlab %s --help: exit %d\n%s", name, code, out)
			}
		})
	}
	out, code := ironlab(t, t.TempDir())
	if code != 2 || !strings.Contains(out, "Commands:") {
		t.Errorf("ironlab with no command: exit %d\n%s", code, out)
	}
}

func TestRunExitStatus(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	good := write("good.yaml", `name: good
lab:
  heartbeat_timeout: 4s
  automated_clean: false
  images: [{id: a, size: 1MiB}]
  groups: [{name: g, count: 2, driver: fake_agent, disk_size: 4MiB}]
steps:
  - enroll: {}
  - manage: {}
  - provide: {}
  - deploy: {image: a}
  - wait: {state: active, timeout: 60s}
  - expect: {disk_image: a}
`)
	failing := write("failing.yaml", strings.Replace(strings.Replace(readFile(t, good), "name: good", "name: failing", 1), "expect: {disk_image: a}", "expect: {state: available}", 1))
	broken := write("broken.yaml", "name: broken\nlab:\n  groups: [{name: g, count: two}]\n")

	out, code := ironlab(t, dir, "run", "--results", filepath.Join(dir, "res"), good)
	if code != 0 || !strings.Contains(out, "good PASSED") {
		t.Errorf("good scenario: exit %d\n%s", code, out)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "res", "*", "junit.xml")); len(m) != 1 {
		t.Errorf("no junit.xml under --results: %v", m)
	}
	out, code = ironlab(t, dir, "run", "--results", filepath.Join(dir, "res"), failing)
	if code != 1 || !strings.Contains(out, "FAIL step 6: expect state available") {
		t.Errorf("failing scenario: exit %d\n%s", code, out)
	}
	out, code = ironlab(t, dir, "run", broken)
	if code != 2 || !strings.Contains(out, "broken.yaml:3:") {
		t.Errorf("broken scenario: exit %d, want 2 and file:line\n%s", code, out)
	}
	out, code = ironlab(t, dir, "run", "no-such-scenario")
	if code != 2 || !strings.Contains(out, "built-in: ") {
		t.Errorf("unknown scenario: exit %d\n%s", code, out)
	}
}

func readFile(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ironlab up writes nodes.yaml, serves BMCs that ipmitool drives, and shuts
// down cleanly on SIGTERM.
func TestUp(t *testing.T) {
	dir := t.TempDir()
	base := labtest.FreeUDPPorts(t, 2)
	cmd := exec.Command(labtest.Binary(t), "up", "--nodes", "2", "--state-dir", dir, "--listen", "127.0.0.1:0", "--bmc-base-port", strconv.Itoa(base))
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stdout)
	var try, dashboard string
	deadline := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	for sc.Scan() {
		line := sc.Text()
		if u, ok := strings.CutPrefix(line, "dashboard: "); ok {
			dashboard = u
		}
		if strings.HasPrefix(line, "try:") {
			try = strings.TrimSpace(strings.TrimPrefix(line, "try:"))
		}
		if strings.Contains(line, "the lab runs until") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	nodes := readFile(t, filepath.Join(dir, "nodes.yaml"))
	for _, want := range []string{"name: node-0", "name: node-1", fmt.Sprintf("ipmi_port: %d", base+1), "driver: agent_ipmitool", "address: 52:54:00:"} {
		if !strings.Contains(nodes, want) {
			t.Errorf("nodes.yaml lacks %q:\n%s", want, nodes)
		}
	}
	if !strings.Contains(try, fmt.Sprintf("ipmitool -I lanplus -H 127.0.0.1 -p %d -U admin -P password power status", base)) {
		t.Errorf("printed ipmitool line %q", try)
	}
	if _, err := exec.LookPath("ipmitool"); err == nil {
		out, err := exec.Command("sh", "-c", try).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "Chassis Power is off" {
			t.Errorf("pasted ipmitool line: %v: %s", err, out)
		}
	} else {
		labtest.Reduced(t, "ipmitool is not installed (%s): the printed ipmitool line was not run", labtest.InstallCommand("ipmitool"))
	}
	checkDashboard(t, dashboard)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("up after SIGTERM: %v", err)
	}
}

// ironlab up --bmc redfish serves the nodes from one https Redfish service,
// writes Ironic's redfish_* driver_info to nodes.yaml and prints a curl
// line that works when pasted.
func TestUpRedfish(t *testing.T) {
	curl := labtest.Require(t, "curl")
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(labtest.Binary(t), "up", "--nodes", "2", "--bmc", "redfish", "--redfish-port", strconv.Itoa(port),
		"--state-dir", dir, "--listen", "127.0.0.1:0")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	sc := bufio.NewScanner(stdout)
	var try string
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "try:") {
			try = strings.TrimSpace(strings.TrimPrefix(line, "try:"))
		}
		if strings.Contains(line, "the lab runs until") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	nodes := readFile(t, filepath.Join(dir, "nodes.yaml"))
	for _, want := range []string{"driver: agent_redfish", fmt.Sprintf("redfish_address: https://127.0.0.1:%d", port),
		"redfish_system_id: /redfish/v1/Systems/", "redfish_username: admin", "redfish_password: password",
		"redfish_verify_ca: " + filepath.Join(dir, "redfish", "node-ca.pem")} {
		if !strings.Contains(nodes, want) {
			t.Errorf("nodes.yaml lacks %q:\n%s", want, nodes)
		}
	}
	if !strings.HasPrefix(try, "curl -s --cacert ") {
		t.Fatalf("printed curl line %q", try)
	}
	out, err := exec.Command("sh", "-c", strings.Replace(try, "curl", curl, 1)).Output()
	if err != nil {
		t.Fatalf("pasted curl line %q: %v", try, err)
	}
	var sys struct{ PowerState, Name string }
	if err := json.Unmarshal(out, &sys); err != nil || sys.PowerState != "Off" || sys.Name != "node-0" {
		t.Fatalf("curl printed %s (%v)", out, err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("up after SIGTERM: %v", err)
	}
}

// ironlab up --bmc redfish --redfish-listen per-node gives every node its
// own https listener: nodes.yaml's redfish_address differs per node, each
// with its own CA file, and the printed curl line and one made from the
// second node's nodes.yaml entry both work; a reset on one node's address
// changes that node alone.
func TestUpRedfishPerNode(t *testing.T) {
	curl := labtest.Require(t, "curl")
	dir := t.TempDir()
	cmd := exec.Command(labtest.Binary(t), "up", "--nodes", "2", "--bmc", "redfish", "--redfish-listen", "per-node", "--redfish-port", "0",
		"--state-dir", dir, "--listen", "127.0.0.1:0")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	sc := bufio.NewScanner(stdout)
	var try string
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "try:") {
			try = strings.TrimSpace(strings.TrimPrefix(line, "try:"))
		}
		if strings.Contains(line, "the lab runs until") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	var nf struct {
		Nodes []struct {
			Name       string            `yaml:"name"`
			DriverInfo map[string]string `yaml:"driver_info"`
		} `yaml:"nodes"`
	}
	if err := yaml.Unmarshal([]byte(readFile(t, filepath.Join(dir, "nodes.yaml"))), &nf); err != nil || len(nf.Nodes) != 2 {
		t.Fatalf("nodes.yaml: %d nodes, %v", len(nf.Nodes), err)
	}
	a, b := nf.Nodes[0].DriverInfo, nf.Nodes[1].DriverInfo
	if a["redfish_address"] == b["redfish_address"] || !strings.HasPrefix(b["redfish_address"], "https://127.0.0.1:") {
		t.Fatalf("redfish_address %q and %q: want one https listener per node", a["redfish_address"], b["redfish_address"])
	}
	if a["redfish_verify_ca"] == b["redfish_verify_ca"] || b["redfish_verify_ca"] != filepath.Join(dir, "redfish", "nodes", "node-1-ca.pem") {
		t.Errorf("redfish_verify_ca %q and %q", a["redfish_verify_ca"], b["redfish_verify_ca"])
	}
	if !strings.HasPrefix(try, "curl -s --cacert "+a["redfish_verify_ca"]) || !strings.Contains(try, a["redfish_address"]+a["redfish_system_id"]) {
		t.Fatalf("printed curl line %q: want node-0's address and CA", try)
	}
	get := func(cmdline string) (sys struct{ PowerState, Name string }) {
		t.Helper()
		out, err := exec.Command("sh", "-c", strings.Replace(cmdline, "curl", curl, 1)).Output()
		if err != nil {
			t.Fatalf("%q: %v", cmdline, err)
		}
		if err := json.Unmarshal(out, &sys); err != nil {
			t.Fatalf("%q printed %s (%v)", cmdline, out, err)
		}
		return sys
	}
	if sys := get(try); sys.PowerState != "Off" || sys.Name != "node-0" {
		t.Fatalf("pasted curl line: %+v", sys)
	}
	curlB := fmt.Sprintf("curl -sf --cacert %s -u %s:%s %s%s", b["redfish_verify_ca"], b["redfish_username"], b["redfish_password"],
		b["redfish_address"], b["redfish_system_id"])
	reset := curlB + `/Actions/ComputerSystem.Reset -H 'Content-Type: application/json' -d '{"ResetType": "On"}'`
	if out, err := exec.Command("sh", "-c", strings.Replace(reset, "curl", curl, 1)).CombinedOutput(); err != nil {
		t.Fatalf("%q: %v\n%s", reset, err, out)
	}
	if sys := get(curlB); sys.PowerState != "On" || sys.Name != "node-1" {
		t.Errorf("node-1 after its Reset On: %+v", sys)
	}
	if sys := get(try); sys.PowerState != "Off" {
		t.Errorf("node-0 after node-1's Reset On: %+v", sys)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("up after SIGTERM: %v", err)
	}
}

// --redfish-http serves plain http: nodes.yaml's address is http, with no
// CA to verify, and the printed curl line works without one.
func TestUpRedfishHTTP(t *testing.T) {
	curl := labtest.Require(t, "curl")
	dir := t.TempDir()
	cmd := exec.Command(labtest.Binary(t), "up", "--nodes", "1", "--bmc", "redfish", "--redfish-http", "--redfish-port", "0",
		"--state-dir", dir, "--listen", "127.0.0.1:0")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	sc := bufio.NewScanner(stdout)
	var try string
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "try:"); ok {
			try = strings.TrimSpace(rest)
		}
		if strings.Contains(line, "the lab runs until") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	nodes := readFile(t, filepath.Join(dir, "nodes.yaml"))
	if !strings.Contains(nodes, "redfish_address: http://127.0.0.1:") || strings.Contains(nodes, "redfish_verify_ca") {
		t.Errorf("nodes.yaml:\n%s", nodes)
	}
	if !strings.HasPrefix(try, "curl -s -u admin:password http://127.0.0.1:") {
		t.Fatalf("printed curl line %q", try)
	}
	out, err := exec.Command("sh", "-c", strings.Replace(try, "curl", curl, 1)).Output()
	var sys struct{ PowerState string }
	if err != nil || json.Unmarshal(out, &sys) != nil || sys.PowerState != "Off" {
		t.Fatalf("pasted curl line %q: %v: %s", try, err, out)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("up after SIGTERM: %v", err)
	}
}
