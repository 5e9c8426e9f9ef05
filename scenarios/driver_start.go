package scenarios

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// startDriver reaches the scenario's driver in one of three ways: the
// external API of opts.DriverURL (e.g. a real Ironic), the built-in driver
// as a child process (a scenario that kills its conductor), or the
// in-process driver that opts.StartDriver starts. It returns the API's URL.
func (r *runner) startDriver(ctx context.Context, stateDir string) (string, error) {
	if r.opts.DriverURL != "" {
		return r.opts.DriverURL, nil
	}
	cfg := r.driverConfig(stateDir)
	switch {
	case r.s.Lab.Store == "postgres":
		return r.startConductors(ctx, stateDir, cfg)
	case r.s.needsDriverProcess():
		if r.opts.DriverBinary == "" {
			return "", errors.New("this scenario runs the driver as a child process (lab.driver_process or a conductor fault): give the ironlab binary (ironlab run does)")
		}
		p, err := startDriverProcess(ctx, r.opts.DriverBinary, cfg, r.driverDied)
		if err != nil {
			return "", err
		}
		r.proc = p
		r.stopDriver = p.stop
		r.printf("   driver runs as process %d (log %s)\n", p.cmd.Process.Pid, p.log)
		return p.url, nil
	case r.opts.StartDriver != nil:
		url, stop, err := r.opts.StartDriver(ctx, cfg)
		if err != nil {
			return "", fmt.Errorf("start the driver: %w", err)
		}
		r.stopDriver = stop
		return url, nil
	default:
		return "", errors.New("no driver: give a driver URL or a built-in driver")
	}
}

// driverConfig is what the scenario's lab section asks of the built-in driver.
func (r *runner) driverConfig(stateDir string) DriverConfig {
	l := &r.s.Lab
	cfg := DriverConfig{
		StateDir: stateDir, HeartbeatTimeout: l.heartbeatTimeout, AutomatedClean: true,
		IPMIMinInterval: l.ipmiMinInterval, FastTrack: l.FastTrack,
		WatchdogAction: l.WatchdogAction, WatchdogMaxReboots: l.WatchdogMaxReboots,
		DeployCallbackTimeout: l.deployCallbackTimeout, CleanCallbackTimeout: l.cleanCallbackTimeout,
		RescueCallbackTimeout: l.rescueCallbackTimeout,
		LockRetryInterval:     200 * time.Millisecond, AgentPollInterval: 200 * time.Millisecond,
		PowerOffPollInterval: 250 * time.Millisecond, PowerPollInterval: 200 * time.Millisecond,
		IPMIRetryTimeout:    20 * time.Second,
		Logger:              r.log,
		CleanStepPriorities: r.opts.CleanStepPriorities,
		ConductorTimeout:    l.conductorTimeout,
	}
	if l.AutomatedClean != nil {
		cfg.AutomatedClean = *l.AutomatedClean
	}
	if cfg.WatchdogAction == "off" {
		cfg.WatchdogAction = ""
	}
	if cfg.WatchdogMaxReboots == 0 {
		cfg.WatchdogMaxReboots = 3
	}
	return cfg
}

// needsDriverProcess says whether the scenario kills the conductor.
func (s *Scenario) needsDriverProcess() bool {
	if s.Lab.DriverProcess {
		return true
	}
	for _, st := range s.Steps {
		if st.Fault != nil && st.Fault.Conductor != nil {
			return true
		}
	}
	return false
}
