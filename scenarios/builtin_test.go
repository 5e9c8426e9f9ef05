package scenarios

import (
	"context"
	"errors"
	"net"
	"path/filepath"

	"github.com/ironlab/ironlab/driver"
)

// builtinDriver wires the built-in driver for this package's tests, as
// cmd/ironlab does for `ironlab run` (the runner itself links no driver):
// a free loopback port, the database in the lab's state folder, the lab's pace.
func builtinDriver(ctx context.Context, cfg DriverConfig) (string, func() error, error) {
	dc := driver.DefaultConfig()
	dc.DBPath = filepath.Join(cfg.StateDir, "ironlab.db")
	dc.BootDir = filepath.Join(cfg.StateDir, "boot") // lab.Lab.BootDir
	dc.HeartbeatTimeout, dc.AutomatedClean, dc.CheckInterval = cfg.HeartbeatTimeout, cfg.AutomatedClean, cfg.CheckInterval()
	dc.LockRetryInterval, dc.AgentPollInterval, dc.PowerOffPollInterval = cfg.LockRetryInterval, cfg.AgentPollInterval, cfg.PowerOffPollInterval
	dc.Logger, dc.FastTrack = cfg.Logger, cfg.FastTrack
	dc.WatchdogAction, dc.WatchdogMaxReboots = cfg.WatchdogAction, cfg.WatchdogMaxReboots
	dc.DeployCallbackTimeout, dc.CleanCallbackTimeout = cfg.DeployCallbackTimeout, cfg.CleanCallbackTimeout
	dc.RescueCallbackTimeout = cfg.RescueCallbackTimeout
	dc.PowerInterfaces = driver.StandardPowerInterfaces(driver.PowerOptions{
		IPMIMinInterval: cfg.IPMIInterval(), IPMIRetryTimeout: cfg.IPMIRetryTimeout, PollInterval: cfg.PowerPollInterval,
	})
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
