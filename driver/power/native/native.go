// Package native is the driver's IPMI power and management interface in Go:
// it speaks RMCP+ (or IPMI 1.5) to the BMC itself through
// github.com/bougou/go-ipmi's client, with no subprocess. It is the spec's
// NativeIPMIPower, the power side of the agent_pyghmi and pxe_pyghmi classes.
package native

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/power/ipmitool"
)

// Config bounds the IPMI exchanges. The zero value is usable.
type Config struct {
	// Timeout is how long one request waits for its answer (default 2 s).
	Timeout time.Duration
	// Retries is how often an unanswered request is resent (default 2).
	Retries int
	// PowerStateTimeout is how long a power change may take to show in Get
	// Chassis Status (default 60 s).
	PowerStateTimeout time.Duration
	// PollInterval is the pause between status polls after a change (default 1 s).
	PollInterval time.Duration
}

// Power is the native IPMI power and management interface.
type Power struct {
	cfg   Config
	mu    sync.Mutex
	slots map[string]chan struct{}
}

// ErrIPMI is wrapped by every failed exchange with a BMC.
var ErrIPMI = errors.New("IPMI request failed")

// New returns the interface with cfg's defaults filled in.
func New(cfg Config) *Power {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 2
	}
	if cfg.PowerStateTimeout <= 0 {
		cfg.PowerStateTimeout = 60 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	return &Power{cfg: cfg, slots: map[string]chan struct{}{}}
}

// Name is the interface's name in the API.
func (p *Power) Name() string { return "ipmi" }

// Validate checks driver_info (the ipmitool interface's fields).
func (p *Power) Validate(info power.DriverInfo) error {
	_, err := ipmitool.ParseInfo(info)
	return err
}

// GetPowerState reads Get Chassis Status.
func (p *Power) GetPowerState(ctx context.Context, info power.DriverInfo) (power.State, error) {
	var st power.State
	err := p.session(ctx, info, "power status", func(ctx context.Context, c *client.Client) error {
		var err error
		st, err = status(ctx, c)
		return err
	})
	return st, err
}

func status(ctx context.Context, c *client.Client) (power.State, error) {
	r, err := c.GetChassisStatus(ctx)
	if err != nil {
		return "", err
	}
	if r.PowerIsOn {
		return power.On, nil
	}
	return power.Off, nil
}

// SetPowerState sends Chassis Control and polls until the state shows;
// Reboot is off (if on) then on, as Ironic does.
func (p *Power) SetPowerState(ctx context.Context, info power.DriverInfo, target power.State) error {
	return p.session(ctx, info, "set power "+string(target), func(ctx context.Context, c *client.Client) error {
		switch target {
		case power.On:
			return p.change(ctx, c, chassis.ChassisControlPowerUp, power.On)
		case power.Off:
			return p.change(ctx, c, chassis.ChassisControlPowerDown, power.Off)
		case power.SoftOff:
			return p.change(ctx, c, chassis.ChassisControlSoftShutdown, power.Off)
		case power.Reboot:
			st, err := status(ctx, c)
			if err != nil {
				return err
			}
			if st == power.On {
				if err := p.change(ctx, c, chassis.ChassisControlPowerDown, power.Off); err != nil {
					return err
				}
			}
			return p.change(ctx, c, chassis.ChassisControlPowerUp, power.On)
		}
		return fmt.Errorf("%q is not a target state", target)
	})
}

func (p *Power) change(ctx context.Context, c *client.Client, ctl chassis.ChassisControl, want power.State) error {
	if _, err := c.ChassisControl(ctx, ctl); err != nil {
		return err
	}
	deadline := time.Now().Add(p.cfg.PowerStateTimeout)
	for {
		st, err := status(ctx, c)
		if err != nil {
			return err
		}
		if st == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still %q after %s", st, p.cfg.PowerStateTimeout)
		}
		t := time.NewTimer(p.cfg.PollInterval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// SetBootDevice writes boot option parameter 3 (keep the flags past the 60 s
// timeout) and then the boot flags (parameter 5), as pyghmi's set_bootdev does.
func (p *Power) SetBootDevice(ctx context.Context, info power.DriverInfo, dev power.Device, opts power.BootOptions) error {
	code, ok := map[power.Device]byte{power.PXE: 0x04, power.Disk: 0x08}[dev]
	if !ok {
		return fmt.Errorf("set boot device %q: unsupported device", dev)
	}
	flags := byte(0x80)
	if opts.Persistent {
		flags |= 0x40
	}
	if opts.UEFI {
		flags |= 0x20
	}
	return p.session(ctx, info, "set boot device "+string(dev), func(ctx context.Context, c *client.Client) error {
		if _, err := c.RawCommand(ctx, types.NetFnChassisRequest, 0x08, []byte{0x03, 0x08}, "Set System Boot Options"); err != nil {
			return err
		}
		_, err := c.RawCommand(ctx, types.NetFnChassisRequest, 0x08, []byte{0x05, flags, code, 0, 0, 0}, "Set System Boot Options")
		return err
	})
}

// session opens one IPMI session to the node's BMC, runs fn in it and closes
// it. Sessions to one BMC take turns: BMCs have few session slots.
func (p *Power) session(ctx context.Context, info power.DriverInfo, what string, fn func(context.Context, *client.Client) error) error {
	bi, err := ipmitool.ParseInfo(info)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		return fmt.Errorf("%s via BMC %s: %w: %w", what, bi.Addr(), ErrIPMI, err)
	}
	slot := p.slot(bi.Addr())
	select {
	case <-slot:
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	defer func() { slot <- struct{}{} }()

	c, err := client.NewClient(bi.Address, bi.Port, bi.Username, bi.Password)
	if err != nil {
		return fail(err)
	}
	c.WithTimeout(p.cfg.Timeout).WithRetry(p.cfg.Retries).WithMaxPrivilegeLevel(types.PrivilegeLevelAdministrator)
	if bi.ProtocolVersion == "1.5" {
		c.WithInterface(client.InterfaceLan)
	}
	if bi.CipherSuite != "" {
		n, _ := strconv.Atoi(bi.CipherSuite)
		c.WithCipherSuiteID(types.CipherSuiteID(n))
	}
	if err := c.Connect(ctx); err != nil {
		return fail(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.Timeout)
		defer cancel()
		_ = c.Close(cctx)
	}()
	if err := fn(ctx, c); err != nil {
		return fail(err)
	}
	return nil
}

func (p *Power) slot(addr string) chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.slots[addr]
	if !ok {
		s = make(chan struct{}, 1)
		s <- struct{}{}
		p.slots[addr] = s
	}
	return s
}
