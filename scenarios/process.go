package scenarios

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// driverProcess is the built-in driver run as a child process
// (`ironlab driver`), so that a conductor fault can SIGKILL it: nothing is
// flushed, no lock released, exactly as when a real conductor dies.
type driverProcess struct {
	name   string // the conductor's --host, when the lab names its conductors
	binary string
	args   []string
	url    string
	log    string
	cmd    *exec.Cmd
	exited chan struct{}
	// died is told when the process exits on its own, not by kill or stop
	// (nil: no one is told).
	died func(error)
	// ending is set while kill or stop ends the process.
	ending atomic.Bool
}

// startDriverProcess starts `ironlab driver` for cfg; died, if not nil, is
// told when it exits on its own (a crash), with what its log says.
func startDriverProcess(ctx context.Context, binary string, cfg DriverConfig, died func(error)) (*driverProcess, error) {
	// The port stays the same across restarts: the agents were told the
	// API's URL at boot, as real agents are.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	watchdog := cfg.WatchdogAction
	db, logName := filepath.Join(cfg.StateDir, "ironlab.db"), "driver.log"
	if cfg.DB != "" {
		db = cfg.DB
	}
	if cfg.Host != "" {
		logName = "driver-" + cfg.Host + ".log"
	}
	p := &driverProcess{binary: binary, name: cfg.Host, url: "http://" + addr, log: filepath.Join(cfg.StateDir, logName), died: died, args: []string{
		"driver", "-v",
		"--listen", addr,
		"--db", db,
		// The lab's boot folder (lab.Lab.BootDir), where the PXE deploy writes.
		"--boot-dir", filepath.Join(cfg.StateDir, "boot"),
		"--heartbeat-timeout", cfg.HeartbeatTimeout.String(),
		"--check-interval", cfg.CheckInterval().String(),
		"--deploy-callback-timeout", cfg.DeployCallbackTimeout.String(),
		"--clean-callback-timeout", cfg.CleanCallbackTimeout.String(),
		"--rescue-callback-timeout", cfg.RescueCallbackTimeout.String(),
		"--watchdog-action=" + watchdog,
		"--watchdog-max-reboots", strconv.Itoa(cfg.WatchdogMaxReboots),
		"--ipmi-min-interval", cfg.IPMIInterval().String(),
		"--automated-clean=" + strconv.FormatBool(cfg.AutomatedClean),
		"--fast-track=" + strconv.FormatBool(cfg.FastTrack),
		"--lock-retry-interval", cfg.LockRetryInterval.String(),
		"--agent-poll-interval", cfg.AgentPollInterval.String(),
		"--power-off-poll-interval", cfg.PowerOffPollInterval.String(),
	}}
	if cfg.APIURL != "" {
		p.args = append(p.args, "--api-url", cfg.APIURL)
	}
	if cfg.Host != "" {
		p.args = append(p.args, "--host", cfg.Host,
			"--conductor-heartbeat-interval", (cfg.ConductorTimeout / 5).String(),
			"--conductor-timeout", cfg.ConductorTimeout.String())
	}
	for _, step := range []string{"erase_devices", "erase_devices_metadata"} {
		if prio, ok := cfg.CleanStepPriorities[step]; ok {
			p.args = append(p.args, "--"+strings.ReplaceAll(step, "_", "-")+"-priority", strconv.Itoa(prio))
		}
	}
	if err := p.start(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *driverProcess) start(ctx context.Context) error {
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.binary, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	p.ending.Store(false)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s driver: %w", p.binary, err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func() {
		werr := cmd.Wait()
		logf.Close()
		if p.died != nil && !p.ending.Load() {
			p.died(p.crash(cmd.Process.Pid, werr))
		}
		close(p.exited)
	}()
	// Ready when the API answers.
	hc := &http.Client{Timeout: time.Second}
	exited := false
	err = poll(ctx, 50*time.Millisecond, 20*time.Second, func(ctx context.Context) bool {
		select {
		case <-p.exited:
			exited = true
			return true
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/", nil)
		if err != nil {
			return false
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	switch {
	case exited:
		return fmt.Errorf("driver process exited at start (see %s)", p.log)
	case errors.Is(err, errTimedOut):
		p.kill()
		return fmt.Errorf("driver process did not answer on %s within 20s (see %s)", p.url, p.log)
	}
	return err
}

// kill ends the driver with SIGKILL and waits for it.
func (p *driverProcess) kill() error {
	if p.cmd == nil {
		return errors.New("driver process not running")
	}
	p.ending.Store(true)
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	return nil
}

// crash says how the process ended on its own: its exit, and the line of
// its log that says why (a Go panic or fatal error), if any.
func (p *driverProcess) crash(pid int, werr error) error {
	what := "exit status 0"
	if werr != nil {
		what = werr.Error()
	}
	name := "the driver"
	if p.name != "" {
		name = "conductor " + p.name
	}
	err := fmt.Errorf("%s (process %d) ended on its own: %s", name, pid, what)
	if line, n := crashLine(p.log); line != "" {
		return fmt.Errorf("%w: %s (%s:%d)", err, line, p.log, n)
	}
	return fmt.Errorf("%w (see %s)", err, p.log)
}

// crashLine finds the last Go panic or fatal error in the log at path and
// its line number.
func crashLine(path string) (string, int) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	var last string
	at := 0
	for n := 1; sc.Scan(); n++ {
		if l := sc.Text(); strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") {
			last, at = l, n
		}
	}
	return last, at
}

// signal sends sig to the running driver.
func (p *driverProcess) signal(sig syscall.Signal) error {
	if p.cmd == nil {
		return errors.New("driver process not running")
	}
	select {
	case <-p.exited:
		return fmt.Errorf("driver process %d has exited", p.cmd.Process.Pid)
	default:
	}
	return p.cmd.Process.Signal(sig)
}

// running says whether the process is alive (it may be stopped).
func (p *driverProcess) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop ends the driver with SIGTERM (a clean shutdown), then SIGKILL; a
// stopped (paused) one is let go on first, or it could not stop.
func (p *driverProcess) stop() error {
	if p.cmd == nil {
		return nil
	}
	p.ending.Store(true)
	p.cmd.Process.Signal(syscall.SIGCONT)
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.kill()
	}
	return nil
}

// ProcessDriver is a StartDriver that runs the built-in driver as a child
// process of binary (`ironlab driver`), for callers that link no driver
// (the runner never does: cmd/ironlab wires the in-process one).
func ProcessDriver(binary string) StartDriver {
	return func(ctx context.Context, cfg DriverConfig) (string, func() error, error) {
		p, err := startDriverProcess(ctx, binary, cfg, nil)
		if err != nil {
			return "", nil, err
		}
		return p.url, p.stop, nil
	}
}
