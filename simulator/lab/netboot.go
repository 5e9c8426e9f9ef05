package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/fakeagent/pxedeploy"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bootfiles"
)

// NetBoot runs what the lab serves a machine that boots from the network,
// until the machine powers off or resets. The machine's per-MAC boot config
// in the boot folder decides: ironlab.mode=pxe-deploy runs the PXE deploy
// ramdisk (the PXE driver wrote it); no config, or agent mode, runs the
// in-process agent pointed at the driver API. A PXE-deployed machine
// without a BMC (nobody ever reboots it) keeps network-booting whatever
// config appears, as a PXE ROM that retries.
func (l *Lab) NetBoot(ctx context.Context, m simulator.Machine) error {
	n, ok := l.byName[m.Name()]
	if !ok {
		return fmt.Errorf("%w: %s", simulator.ErrNoSuchMachine, m.Name())
	}
	if n.keepsNetbooting() {
		return l.pxeROM(ctx, n)
	}
	if e, ok := l.pxeDeployEntry(n); ok {
		return l.runDeployRamdisk(ctx, n, e)
	}
	return l.runAgent(ctx, n, m)
}

// pxeDeployEntry is the node's boot config when it is a PXE-deploy one.
func (l *Lab) pxeDeployEntry(n *Node) (bootfiles.Entry, bool) {
	for _, mac := range n.MACs {
		e, err := bootfiles.Read(l.BootDir(), mac)
		if err == nil && pxedeploy.Mode(e.Cmdline) == pxedeploy.ModePXEDeploy {
			return e, true
		}
	}
	return bootfiles.Entry{}, false
}

// pxeROM watches the boot folder for a machine that FakePower never
// power-cycles: each new PXE-deploy config boots a fresh deploy ramdisk,
// and a removed one ends it.
func (l *Lab) pxeROM(ctx context.Context, n *Node) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	cur := ""
	end := func() {}
	defer func() { end() }()
	for {
		want := ""
		e, ok := l.pxeDeployEntry(n)
		if ok {
			want = e.Cmdline
		}
		if want != cur {
			end()
			end, cur = func() {}, want
			if want != "" {
				end = l.bootDeployRamdisk(ctx, n, e)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// bootDeployRamdisk runs a deploy ramdisk in the background; the returned
// function stops it and waits.
func (l *Lab) bootDeployRamdisk(ctx context.Context, n *Node, e bootfiles.Entry) func() {
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := l.runDeployRamdisk(rctx, n, e); err != nil {
			l.log.Warn("deploy ramdisk", "node", n.Name, "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// runDeployRamdisk runs the PXE deploy ramdisk the boot config describes,
// serving its disk under the lab's agent listener (<agents>/pxe/<uuid>).
func (l *Lab) runDeployRamdisk(ctx context.Context, n *Node, e bootfiles.Entry) error {
	cfg, err := pxedeploy.ConfigFromCmdline(e.Cmdline)
	if err != nil {
		return fmt.Errorf("node %s: deploy ramdisk: %w", n.Name, err)
	}
	if cfg.APIURL == "" {
		cfg.APIURL = l.driverURL
	}
	disk, err := fakeagent.OpenFileDisk(n.DiskPath())
	if err != nil {
		return fmt.Errorf("node %s: deploy ramdisk: %w", n.Name, err)
	}
	defer disk.Close()
	mux := l.pxeMux()
	cfg.Disk = disk
	cfg.AdvertiseURL = mux.URL(cfg.NodeUUID)
	cfg.RetryInterval = l.spec.LookupInterval
	cfg.Logger = l.log.With("node", n.Name)
	if c, ok := n.Machine.(simulator.ConsoleWriter); ok {
		cfg.Console = consoleWriter{c}
	}
	rd, err := pxedeploy.New(cfg)
	if err != nil {
		return fmt.Errorf("node %s: deploy ramdisk: %w", n.Name, err)
	}
	mux.Add(rd)
	defer mux.Remove(rd)
	if err := rd.Run(ctx); err != nil && !errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("node %s: deploy ramdisk: %w", n.Name, err)
	}
	return nil
}

// runAgent runs the in-process agent, pointed at the driver API.
func (l *Lab) runAgent(ctx context.Context, n *Node, m simulator.Machine) error {
	return l.runAgentWithToken(ctx, n, m, "")
}

// runAgentWithToken runs the agent with an agent token it was booted with
// ("" for none: the driver hands one out at lookup).
func (l *Lab) runAgentWithToken(ctx context.Context, n *Node, m simulator.Machine, token string) error {
	fw, ok := m.(simulator.FirmwareStore)
	if !ok {
		return fmt.Errorf("machine %s: its hardware cannot be tracked by the agent", m.Name())
	}
	var console io.Writer
	if c, ok := m.(simulator.ConsoleWriter); ok {
		console = consoleWriter{c}
	}
	// The agent takes its boot's faults and becomes the node's running
	// agent in one step, so faults set meanwhile reach it or the next boot.
	n.mu.Lock()
	faults := n.bootFaults()
	a, err := fakeagent.New(fakeagent.Config{
		APIURL:                l.driverURL,
		Dialect:               fakeagent.Dialect(n.Dialect),
		Driver:                n.Driver,
		Mux:                   l.mux,
		Totals:                &l.agentTotals,
		Hardware:              agentHardware{m: m, fw: fw},
		BootMode:              n.Hardware.Firmware,
		Hostname:              n.Name,
		LookupInterval:        l.spec.LookupInterval,
		HeartbeatErrorBackoff: l.spec.HeartbeatErrorBackoff,
		ForcedHeartbeatGap:    l.spec.ForcedHeartbeatGap,
		Faults:                faults,
		Logger:                l.log.With("node", n.Name),
		// standby.power_off: the machine powers off. It runs in its own
		// goroutine; powering off waits for this boot to end.
		PowerOff: func(context.Context) error {
			return m.SetPower(context.Background(), simulator.ActionOff)
		},
		// standby.run_image: the machine resets and boots its disk.
		Reboot: func(context.Context) error {
			return m.SetPower(context.Background(), simulator.ActionReset)
		},
		AgentToken: token,
		Console:    console,
	})
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("node %s: agent: %w", n.Name, err)
	}
	n.agent = a
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		if n.agent == a {
			n.agent = nil
		}
		n.mu.Unlock()
	}()
	err = a.Run(ctx)
	if errors.Is(err, fakeagent.ErrRescued) {
		// The rescue ramdisk stays up for the rescue user: the machine
		// keeps running (its console says so) until it is powered off.
		hash := a.State().RescuePasswordHash
		n.mu.Lock()
		n.rescueHash = hash
		n.mu.Unlock()
		if console != nil {
			io.WriteString(console, fakeagent.RescueReadyLine(hash))
		}
		<-ctx.Done()
		return nil
	}
	return err
}

// consoleWriter writes on an in-process machine's console.
type consoleWriter struct{ c simulator.ConsoleWriter }

func (w consoleWriter) Write(p []byte) (int, error) {
	w.c.ConsolePrintf("%s", p)
	return len(p), nil
}
