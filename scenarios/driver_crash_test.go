package scenarios

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator/lab"
)

// A driver child process that dies on its own (here SIGKILLed from
// outside the runner, as the OOM killer would) ends the run at the step it
// died in, saying so, instead of leaving the wait to run out its 5 minutes
// against a closed port.
func TestDriverThatDiesEndsTheRun(t *testing.T) {
	s, err := Parse("crash.yaml", []byte(`name: crash
lab:
  backend: fake
  driver_process: true
  heartbeat_timeout: 4s
  automated_clean: false
  groups:
    - {name: n, count: 2, driver: fake_agent, disk_size: 8MiB}
  images:
    - {id: os, size: 1MiB}
steps:
  - enroll: {}
  - manage: {}
  - provide: {}
  - wait: {state: available, timeout: 60s}
  - fault: {agent: {hang_command: write_image}}
  - deploy: {image: os}
  - wait: {state: active, timeout: 5m}
`))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var pid int
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a guard, not a target
	defer cancel()
	res, err := Run(ctx, s, Options{
		ResultsDir: t.TempDir(), StateDir: t.TempDir(), DriverBinary: labtest.Binary(t), Out: &out,
		Started: func(driverURL string, _ *lab.Lab) {
			u, err := url.Parse(driverURL)
			if err != nil {
				t.Error(err)
				return
			}
			pid = driverPID(t, u.Host)
		},
		StepHook: func(i int, _, end time.Time) {
			if i == 6 && end.IsZero() { // the deploy's wait begins
				go func() {
					time.Sleep(500 * time.Millisecond)
					if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
						t.Error(err)
					}
				}()
			}
		},
	})
	if ctx.Err() != nil {
		t.Fatalf("the run went on for 2 minutes after its driver died:\n%s", out.String())
	}
	if err == nil || !strings.Contains(err.Error(), "crash.yaml:18: step 7: the driver (process ") ||
		!strings.Contains(err.Error(), "ended on its own: signal: killed (see ") {
		t.Errorf("run error: %v, want step 7's wait ended by the driver's death\n%s", err, out.String())
	}
	if res == nil || res.Passed || !strings.Contains(res.Error, "ended on its own") {
		t.Errorf("result: %+v, want failed with the driver's death", res)
	}
	if !strings.Contains(out.String(), "   !! the driver (process ") {
		t.Errorf("the progress does not say the driver died:\n%s", out.String())
	}
}

// driverPID finds the `ironlab driver` child listening on addr.
func driverPID(t *testing.T, addr string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		for i := range args {
			if args[i] == "--listen" && i+1 < len(args) && args[i+1] == addr && len(args) > 1 && args[1] == "driver" {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				return pid
			}
		}
	}
	t.Fatalf("no driver process listens on %s", addr)
	return 0
}

// The crash message quotes the log's panic with its line.
func TestCrashLineFindsThePanic(t *testing.T) {
	log := filepath.Join(t.TempDir(), "driver.log")
	os.WriteFile(log, []byte("time=... level=INFO msg=\"driver API listening\"\n"+
		"panic: runtime error: invalid memory address or nil pointer dereference\n"+
		"[signal SIGSEGV: segmentation violation code=0x1 addr=0x18 pc=0x54642d]\n\ngoroutine 1 [running]:\n"), 0o644)
	p := &driverProcess{log: log, name: "c1"}
	got := p.crash(42, nil).Error()
	want := "conductor c1 (process 42) ended on its own: exit status 0: panic: runtime error: invalid memory address or nil pointer dereference (" + log + ":2)"
	if got != want {
		t.Errorf("crash:\n got %s\nwant %s", got, want)
	}
	if line, n := crashLine(filepath.Join(t.TempDir(), "none.log")); line != "" || n != 0 {
		t.Errorf("crashLine of a missing log: %q, %d", line, n)
	}
}
