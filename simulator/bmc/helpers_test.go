package bmc

import (
	"github.com/ironlab/ironlab/simulator/bmc/bmctest"

	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// need finds an external conformance peer. Without it the test skips, except
// under CI=true, where a missing peer is a failure.
func need(t testing.TB, path, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (install %s): %v", path, pkg, err)
		}
		t.Skipf("%s not found; install %s to run this conformance test", path, pkg)
	}
	return p
}

// needPyghmi checks /usr/bin/python3 can import pyghmi.
func needPyghmi(t testing.TB) string {
	t.Helper()
	py := need(t, "/usr/bin/python3", "python3")
	if err := exec.Command(py, "-c", "import pyghmi.ipmi.command, pyghmi.ipmi.bmc").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3-pyghmi missing: %v", err)
		}
		t.Skipf("python3-pyghmi missing (apt-get install python3-pyghmi): %v", err)
	}
	return py
}

func startBMC(t testing.TB, m *bmctest.Machine, opts Options) *BMC {
	t.Helper()
	b, err := New(m, "127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Start(ctx)
	t.Cleanup(func() {
		cancel()
		if err := b.Close(); err != nil {
			t.Errorf("close BMC: %v", err)
		}
	})
	return b
}

// ipmitool runs the real binary against one BMC.
type ipmitool struct {
	path  string
	b     *BMC
	iface []string // "-I lanplus -C 17", ...
	user  string
	pass  string
	extra []string // -N/-R
}

func (c ipmitool) run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{}, c.iface...)
	full = append(full, "-H", c.b.Addr().Addr().String(), "-p", strconv.Itoa(int(c.b.Addr().Port())),
		"-L", "ADMINISTRATOR", "-U", c.user, "-P", c.pass)
	if c.extra != nil {
		full = append(full, c.extra...)
	} else {
		full = append(full, "-R", "3", "-N", "1")
	}
	full = append(full, args...)
	out, err := exec.CommandContext(ctx, c.path, full...).CombinedOutput()
	return string(out), err
}

func (c ipmitool) must(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.run(t, args...)
	if err != nil {
		t.Fatalf("ipmitool %s %s: %v\n%s", strings.Join(c.iface, " "), strings.Join(args, " "), err, out)
	}
	return out
}
