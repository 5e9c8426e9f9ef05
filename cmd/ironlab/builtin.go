package main

import (
	"context"
	"errors"
	"net"
	"path/filepath"

	"github.com/ironlab/ironlab/driver"
	"github.com/ironlab/ironlab/scenarios"
)

// builtinDriver is the scenarios' StartDriver: the built-in driver on a
// free loopback port, with a database in the lab's state folder and the
// lab's pace. It is wired here, not in the scenarios package, so that the
// runner links no driver (it speaks only the Ironic API).
func builtinDriver(ctx context.Context, cfg scenarios.DriverConfig) (string, func() error, error) {
	return startDriver(ctx, labDriverConfig(cfg))
}

// labDriverConfig is the driver's configuration for a scenario's lab.
func labDriverConfig(cfg scenarios.DriverConfig) driver.Config {
	dc := driver.DefaultConfig()
	dc.DBPath = filepath.Join(cfg.StateDir, "ironlab.db")
	// The lab's boot folder (lab.Lab.BootDir), where the PXE deploy writes.
	dc.BootDir = filepath.Join(cfg.StateDir, "boot")
	dc.HeartbeatTimeout = cfg.HeartbeatTimeout
	dc.AutomatedClean = cfg.AutomatedClean
	dc.CheckInterval = cfg.CheckInterval()
	dc.LockRetryInterval = cfg.LockRetryInterval
	dc.AgentPollInterval = cfg.AgentPollInterval
	dc.PowerOffPollInterval = cfg.PowerOffPollInterval
	dc.Logger = cfg.Logger
	dc.FastTrack = cfg.FastTrack
	dc.CleanStepPriorities = cfg.CleanStepPriorities
	dc.WatchdogAction, dc.WatchdogMaxReboots = cfg.WatchdogAction, cfg.WatchdogMaxReboots
	dc.DeployCallbackTimeout, dc.CleanCallbackTimeout = cfg.DeployCallbackTimeout, cfg.CleanCallbackTimeout
	dc.RescueCallbackTimeout = cfg.RescueCallbackTimeout
	dc.PowerInterfaces = driver.StandardPowerInterfaces(driver.PowerOptions{
		IPMIMinInterval: cfg.IPMIInterval(), IPMIRetryTimeout: cfg.IPMIRetryTimeout, PollInterval: cfg.PowerPollInterval,
	})
	return dc
}

// startDriver starts a driver and serves its API on a free loopback port
// until the returned stop.
func startDriver(ctx context.Context, dc driver.Config) (string, func() error, error) {
	d, err := driver.New(ctx, dc)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		d.Close()
		return "", nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- d.Serve(sctx, ln) }()
	stop := func() error {
		cancel()
		err := <-done
		if errors.Is(err, context.Canceled) {
			err = nil
		}
		return errors.Join(err, d.Close())
	}
	return "http://" + ln.Addr().String(), stop, nil
}
