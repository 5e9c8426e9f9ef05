package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/scenarios/labtest"
)

// TestRealIronicClientDeploysThroughUp drives `ironlab up` with the real
// OpenStack client (python-ironicclient's `baremetal`, Debian's package),
// as someone testing their tooling against the lab would: baremetal create
// nodes.yaml, manage, provide, set instance_info, deploy --wait, rescue
// and unrescue. The disk on the lab host then holds the image.
func TestRealIronicClientDeploysThroughUp(t *testing.T) {
	bm := labtest.Require(t, "baremetal")
	labtest.Require(t, "ipmitool")
	dir := t.TempDir()
	cmd := exec.Command(labtest.Binary(t), "up", "--nodes", "1", "--state-dir", dir, "--listen", "127.0.0.1:0",
		"--bmc-base-port", "0", "--ipmi-min-interval", "500ms", "--heartbeat-timeout", "10s", "--image-size", "8MiB", "--disk-size", "16MiB")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	kill := time.AfterFunc(4*time.Minute, func() { cmd.Process.Kill() })
	defer kill.Stop()
	var api, image, sha string
	sc := bufio.NewScanner(stdout)
	imageRe := regexp.MustCompile(`^image:\s+(\S+)\s+\(sha256 ([0-9a-f]+)\)`)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "driver API:"); ok {
			api = strings.TrimSpace(v)
		}
		if m := imageRe.FindStringSubmatch(line); m != nil {
			image, sha = m[1], m[2]
		}
		if strings.Contains(line, "the lab runs until") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if api == "" || image == "" {
		t.Fatalf("ironlab up printed no driver API or image (api %q, image %q)", api, image)
	}
	run := func(args ...string) string {
		t.Helper()
		c := exec.Command(bm, append([]string{"--os-baremetal-api-version", "1.78"}, args...)...)
		c.Env = append(os.Environ(), "OS_AUTH_TYPE=none", "OS_ENDPOINT="+api)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("baremetal %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("create", filepath.Join(dir, "nodes.yaml"))
	run("node", "manage", "node-0", "--wait", "60")
	run("node", "provide", "node-0", "--wait", "120")
	run("node", "set", "node-0", "--instance-info", "image_source="+image,
		"--instance-info", "image_os_hash_algo=sha256", "--instance-info", "image_os_hash_value="+sha)
	run("node", "deploy", "node-0", "--wait", "180")
	if got := run("node", "show", "node-0", "-f", "value", "-c", "provision_state"); got != "active" {
		t.Fatalf("provision_state %q after deploy --wait", got)
	}
	if got := run("port", "list", "--node", "node-0", "-f", "value", "-c", "Address"); !strings.HasPrefix(got, "52:54:00:") {
		t.Errorf("ports of node-0: %q", got)
	}
	// Rescue and back, as the client's verbs send them (API 1.38+).
	run("node", "rescue", "node-0", "--rescue-password", "lab rescue pw", "--wait", "120")
	if got := run("node", "show", "node-0", "-f", "value", "-c", "provision_state"); got != "rescue" {
		t.Fatalf("provision_state %q after rescue --wait", got)
	}
	run("node", "unrescue", "node-0", "--wait", "120")
	if got := run("node", "show", "node-0", "-f", "value", "-c", "provision_state"); got != "active" {
		t.Fatalf("provision_state %q after unrescue --wait", got)
	}
	f, err := os.Open(filepath.Join(dir, "disks", "node-0.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if h, err := images.Verify(f); err != nil || h.ID != "demo-os" {
		t.Errorf("node-0's disk after a deploy through baremetal: %v (image %q)", err, h.ID)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("up after SIGTERM: %v", err)
	}
}
