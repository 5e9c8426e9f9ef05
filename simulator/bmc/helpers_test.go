package bmc

import (
	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator/bmc/bmctest"

	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// needPyghmi checks /usr/bin/python3 can import pyghmi (Debian's module,
// the conformance peer of the native IPMI tests).
func needPyghmi(t testing.TB) string {
	t.Helper()
	py := labtest.Require(t, "/usr/bin/python3")
	labtest.RequireFunc(t, "python3-pyghmi", "apt-get install python3-pyghmi", func() error {
		return exec.Command(py, "-c", "import pyghmi.ipmi.command, pyghmi.ipmi.bmc").Run()
	})
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
