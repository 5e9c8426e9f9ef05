// Package labtest is the harness of ironlab's test tiers, modelled on
// u-root's vmtest: one CI policy for what a tier needs from the machine, and
// the ironlab binary built once per test process. Its sub-package minilab
// starts a mini lab (driver API, conductor and in-process fake nodes on
// loopback) for tests that need the whole flow.
//
// The policy: a test states what it needs (Require, RequireFunc). Where it is
// missing the test skips and says how to install it; under CI=true (where
// scripts/test-deps.sh must have installed everything) it fails. A test that
// runs but with less than it should (Reduced) logs it, and fails under CI.
//
// labtest imports nothing of ironlab, so the internal tests of any package
// (simulator/bmc, images/ramdisk, ...) can use it without an import cycle.
// It is test support: reading CI from the environment is its job.
package labtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// CI reports whether the tests run under CI (CI=true), where a missing
// requirement is a failure instead of a skip.
func CI() bool { return os.Getenv("CI") == "true" }

// Install is how the tools the tiers use get onto a Debian machine; every
// one of them is in scripts/test-deps.sh (or scripts/vm-deps.sh).
var install = map[string]string{
	"ipmitool":           "apt-get install ipmitool",
	"baremetal":          "apt-get install python3-ironicclient",
	"redfishtool":        "apt-get install redfishtool",
	"curl":               "apt-get install curl",
	"qemu-system-x86_64": "apt-get install qemu-system-x86",
	"qemu-img":           "apt-get install qemu-utils",
	"genisoimage":        "apt-get install genisoimage",
	"virsh":              "apt-get install libvirt-clients",
	"lz4":                "apt-get install lz4",
	"ssh":                "apt-get install openssh-client",
	"postgres":           "apt-get install postgresql",
	"/usr/bin/python3":   "apt-get install python3",
	"ironic-api":         "scripts/ironic.sh install",
	"ironic-conductor":   "scripts/ironic.sh install",
	"ironic-dbsync":      "scripts/ironic.sh install",
	"apt-get":            "a Debian system (apt)",
	"apt-cache":          "a Debian system (apt)",
	"dpkg":               "a Debian system (dpkg)",
}

// InstallCommand is the command that installs tool, e.g. "apt-get install
// ipmitool"; empty for a tool the harness does not know.
func InstallCommand(tool string) string { return install[tool] }

// Missing ends the test for a requirement the machine lacks: a skip that
// says how to get it (install), or under CI=true a failure.
func Missing(t testing.TB, what, install string) {
	t.Helper()
	if CI() {
		t.Fatalf("%s is missing under CI=true; scripts/test-deps.sh should have installed it (%s)", what, install)
	}
	t.Skipf("%s is missing; to run this test: %s (or run scripts/test-deps.sh as root)", what, install)
}

// Require finds tool (a name on PATH or an absolute path) and returns its
// path; without it the test skips with the install command, or fails under
// CI=true. A tool the harness has no install command for is a bug in the
// test: add it to the table in this package.
func Require(t testing.TB, tool string) string {
	t.Helper()
	cmd, ok := install[tool]
	if !ok {
		t.Fatalf("labtest.Require(%q): no install command known for this tool; add it to labtest's table (known: %s)", tool, strings.Join(known(), ", "))
	}
	p, err := exec.LookPath(tool)
	if err != nil {
		Missing(t, tool, cmd)
	}
	return p
}

func known() []string {
	var k []string
	for tool := range install {
		k = append(k, tool)
	}
	sort.Strings(k)
	return k
}

// RequireFunc applies the policy to a requirement that is not one binary
// (a Python module, a running libvirtd): check says what is wrong, if
// anything; install says how to fix it.
func RequireFunc(t testing.TB, what, install string, check func() error) {
	t.Helper()
	if err := check(); err != nil {
		Missing(t, fmt.Sprintf("%s (%v)", what, err), install)
	}
}

// Reduced is for a test that runs with less than it should, e.g. a
// scenario whose runner left out a group for a missing tool: under CI=true
// it fails, elsewhere it says so in the test log, so that a pass with less
// coverage is never silent.
func Reduced(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("reduced test under CI=true: %s", msg)
	}
	t.Logf("REDUCED: %s (this machine lacks a tool; scripts/test-deps.sh installs it)", msg)
}

// The binary is built once per test process, into a folder Main removes.
var bin struct {
	mu   sync.Mutex
	main bool // Main runs this process's tests
	dir  string
	once sync.Once
	path string
	err  error
}

// Main runs the package's tests and then removes what the harness built.
// A package whose tests call Binary calls it from TestMain:
//
//	func TestMain(m *testing.M) { labtest.Main(m) }
func Main(m *testing.M) {
	bin.mu.Lock()
	bin.main = true
	bin.mu.Unlock()
	code := m.Run()
	bin.mu.Lock()
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
	}
	bin.mu.Unlock()
	os.Exit(code)
}

// Binary is the path of the ironlab binary (./cmd/ironlab), built on first
// use with the go tool that runs the tests (go test puts it first on PATH).
func Binary(t testing.TB) string {
	t.Helper()
	bin.mu.Lock()
	main := bin.main
	bin.mu.Unlock()
	if !main {
		t.Fatal("labtest.Binary: the package's TestMain must call labtest.Main(m), which removes the built binary")
	}
	bin.once.Do(func() {
		dir, err := os.MkdirTemp("", "ironlab-labtest-")
		if err != nil {
			bin.err = err
			return
		}
		bin.mu.Lock()
		bin.dir = dir
		bin.mu.Unlock()
		p := filepath.Join(dir, "ironlab")
		out, err := exec.Command("go", "build", "-o", p, "github.com/ironlab/ironlab/cmd/ironlab").CombinedOutput()
		if err != nil {
			bin.err = fmt.Errorf("go build ./cmd/ironlab: %w\n%s", err, out)
			return
		}
		bin.path = p
	})
	if bin.err != nil {
		t.Fatal(bin.err)
	}
	return bin.path
}

// FreeUDPPorts returns a base port p such that the n UDP ports p..p+n-1 on
// 127.0.0.1 are free right now, for a command that takes a base port
// (`ironlab up --bmc-base-port`). They are released before it returns, so
// a test passes them on at once; a fixed port would collide with another
// test or lab on the machine.
func FreeUDPPorts(t testing.TB, n int) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		first, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free UDP port: %v", err)
		}
		base := first.LocalAddr().(*net.UDPAddr).Port
		held := []net.PacketConn{first}
		ok := base+n-1 <= 65535
		for i := 1; ok && i < n; i++ {
			c, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", base+i))
			if err != nil {
				ok = false
				break
			}
			held = append(held, c)
		}
		for _, c := range held {
			c.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatalf("no %d consecutive free UDP ports on 127.0.0.1 after 50 tries", n)
	return 0
}

// Patience bounds a wait that only a broken test would exhaust: it keeps a
// hung test from hanging the suite, and asserts nothing about speed (the
// suite runs on two shared cores).
const Patience = 60 * time.Second

// Recv receives from ch, or fails the test after Patience, naming what it
// waited for.
func Recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(Patience)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("no %s within %s", what, Patience)
		var zero T
		return zero
	}
}

// SyncBuffer is a log sink many goroutines write to (a slog handler's, a
// process's output) while the test reads what was written so far.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
