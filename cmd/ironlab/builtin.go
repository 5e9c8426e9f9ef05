package scenarios

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"time"

	"github.com/ironlab/ironlab/driver"
)

// BuiltinDriver starts the built-in driver on a free loopback port, with a
// database in the lab's state folder and periodic tasks paced to the
// scenario's heartbeat timeout.
func BuiltinDriver(ctx context.Context, cfg DriverConfig) (string, func() error, error) {
	dc := driver.DefaultConfig()
	dc.DBPath = filepath.Join(cfg.StateDir, "ironlab.db")
	// The lab's boot folder (lab.Lab.BootDir), where the PXE deploy writes.
	dc.BootDir = filepath.Join(cfg.StateDir, "boot")
	dc.HeartbeatTimeout = cfg.HeartbeatTimeout
	dc.AutomatedClean = cfg.AutomatedClean
	dc.CheckInterval = cfg.CheckInterval()
	dc.LockRetryInterval = 200 * time.Millisecond
	dc.AgentPollInterval = 200 * time.Millisecond
	// A lab's machines are off well under a second after standby.power_off
	// (a VM's agent powers it off at once): ask the BMC sooner than Ironic's 5 s.
	dc.PowerOffPollInterval = 500 * time.Millisecond
	dc.Logger = cfg.Logger
	interval := cfg.IPMIInterval()
	dc.FastTrack = cfg.FastTrack
	dc.WatchdogAction, dc.WatchdogMaxReboots = cfg.WatchdogAction, cfg.WatchdogMaxReboots
	dc.DeployCallbackTimeout, dc.CleanCallbackTimeout = cfg.DeployCallbackTimeout, cfg.CleanCallbackTimeout
	dc.PowerInterfaces = driver.StandardPowerInterfaces(driver.PowerOptions{
		IPMIMinInterval: interval, IPMIRetryTimeout: 20 * time.Second, PollInterval: 200 * time.Millisecond,
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
