// Package redfish is the driver's Redfish power and management interface:
// power through ComputerSystem.Reset and boot device through a PATCH of the
// system's Boot override, over HTTP(S) with github.com/stmcginnis/gofish, as
// Ironic's redfish hardware type does with sushy. It is the power side of
// the lab classes agent_redfish and pxe_redfish.
//
// driver_info fields are Ironic's: redfish_address, redfish_system_id,
// redfish_username, redfish_password, redfish_verify_ca and
// redfish_auth_type.
package redfish

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/stmcginnis/gofish"
	rf "github.com/stmcginnis/gofish/redfish"

	"github.com/ironlab/ironlab/driver/power"
)

// Config bounds the exchanges with a BMC. The zero value is usable.
type Config struct {
	// Timeout bounds one HTTP request (default 30 s; sushy's default is 60).
	Timeout time.Duration
	// PowerStateTimeout is how long a power change may take to show in
	// PowerState (default 60 s; Ironic's [conductor]power_state_change_timeout).
	PowerStateTimeout time.Duration
	// PollInterval is the pause between PowerState polls (default 1 s).
	PollInterval time.Duration
}

// Power is the Redfish power and management interface.
type Power struct{ cfg Config }

// ErrRedfish is wrapped by every failed exchange with a Redfish BMC.
var ErrRedfish = errors.New("redfish request failed")

// New returns the interface with cfg's defaults filled in.
func New(cfg Config) *Power {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.PowerStateTimeout <= 0 {
		cfg.PowerStateTimeout = 60 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	return &Power{cfg: cfg}
}

// Name is the interface's name in the API.
func (p *Power) Name() string { return "redfish" }

// Info is a node's Redfish driver_info.
type Info struct {
	// Address is the service's base URL; a bare host[:port] means https,
	// as in Ironic.
	Address string
	// SystemID is the system's path (/redfish/v1/Systems/<id>); empty means
	// the service's only system.
	SystemID string
	Username string
	Password string
	// VerifyCA is "true" (the system's roots), "false" (no verification) or
	// the path of a CA bundle.
	VerifyCA string
	// AuthType is basic, session or auto (session first, then basic).
	AuthType string
}

// ParseInfo reads and checks a node's Redfish driver_info.
func ParseInfo(info power.DriverInfo) (Info, error) {
	var i Info
	get := func(key string) (string, error) {
		v, ok := info[key]
		if !ok || v == nil {
			return "", nil
		}
		switch x := v.(type) {
		case string:
			return x, nil
		case bool:
			if key == "redfish_verify_ca" {
				return fmt.Sprint(x), nil
			}
		}
		return "", fmt.Errorf("driver_info %s: want a string, got %T", key, v)
	}
	var err error
	for _, f := range []struct {
		key string
		dst *string
	}{
		{"redfish_address", &i.Address}, {"redfish_system_id", &i.SystemID},
		{"redfish_username", &i.Username}, {"redfish_password", &i.Password},
		{"redfish_verify_ca", &i.VerifyCA}, {"redfish_auth_type", &i.AuthType},
	} {
		if *f.dst, err = get(f.key); err != nil {
			return i, err
		}
	}
	if i.Address == "" {
		return i, fmt.Errorf("%w: redfish_address", power.ErrMissingInfo)
	}
	if !strings.Contains(i.Address, "://") {
		i.Address = "https://" + i.Address
	}
	u, err := url.Parse(i.Address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return i, fmt.Errorf("driver_info redfish_address %q: want an http(s) URL", i.Address)
	}
	i.Address = strings.TrimRight(i.Address, "/")
	if i.SystemID != "" && !strings.HasPrefix(i.SystemID, "/redfish/v1/Systems/") {
		return i, fmt.Errorf("driver_info redfish_system_id %q: want /redfish/v1/Systems/<id>", i.SystemID)
	}
	switch strings.ToLower(i.VerifyCA) {
	case "", "true", "yes", "1":
		i.VerifyCA = "true"
	case "false", "no", "0":
		i.VerifyCA = "false"
	default:
		if _, err := os.Stat(i.VerifyCA); err != nil {
			return i, fmt.Errorf("driver_info redfish_verify_ca %q: not true, false or a CA file: %w", i.VerifyCA, err)
		}
	}
	switch i.AuthType {
	case "":
		i.AuthType = "auto"
	case "auto", "basic", "session":
	default:
		return i, fmt.Errorf("driver_info redfish_auth_type %q: want basic, session or auto", i.AuthType)
	}
	return i, nil
}

// Validate checks driver_info.
func (p *Power) Validate(info power.DriverInfo) error {
	_, err := ParseInfo(info)
	return err
}

// GetPowerState reads the system's PowerState.
func (p *Power) GetPowerState(ctx context.Context, info power.DriverInfo) (power.State, error) {
	var st power.State
	err := p.with(ctx, info, "power status", func(c *gofish.APIClient, sys *rf.ComputerSystem) error {
		st = stateOf(sys.PowerState)
		return nil
	})
	return st, err
}

// stateOf maps PowerState as Ironic does: a transition counts as where it goes.
func stateOf(ps rf.PowerState) power.State {
	switch ps {
	case rf.OnPowerState, rf.PoweringOnPowerState:
		return power.On
	}
	return power.Off
}

// SetPowerState resets the system and polls PowerState until it shows the
// target; Reboot is ForceRestart when on and On when off, as in Ironic.
func (p *Power) SetPowerState(ctx context.Context, info power.DriverInfo, target power.State) error {
	return p.with(ctx, info, "set power "+string(target), func(c *gofish.APIClient, sys *rf.ComputerSystem) error {
		var rt rf.ResetType
		want := power.On
		switch target {
		case power.On:
			rt = rf.OnResetType
		case power.Off:
			rt, want = rf.ForceOffResetType, power.Off
		case power.SoftOff:
			rt, want = rf.GracefulShutdownResetType, power.Off
		case power.Reboot:
			rt = rf.OnResetType
			if stateOf(sys.PowerState) == power.On {
				rt = rf.ForceRestartResetType
			}
		default:
			return fmt.Errorf("%q is not a target state", target)
		}
		if err := sys.Reset(rt); err != nil {
			return fmt.Errorf("reset %s: %w", rt, err)
		}
		return p.wait(ctx, c, sys.ODataID, want)
	})
}

func (p *Power) wait(ctx context.Context, c *gofish.APIClient, path string, want power.State) error {
	deadline := time.Now().Add(p.cfg.PowerStateTimeout)
	for {
		sys, err := rf.GetComputerSystem(c, path)
		if err != nil {
			return fmt.Errorf("read power state: %w", err)
		}
		if st := stateOf(sys.PowerState); st == want {
			return nil
		} else if time.Now().After(deadline) {
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

// SetBootDevice PATCHes the Boot override: target Pxe or Hdd, Once or
// Continuous, UEFI or Legacy.
func (p *Power) SetBootDevice(ctx context.Context, info power.DriverInfo, dev power.Device, opts power.BootOptions) error {
	target, ok := map[power.Device]rf.BootSourceOverrideTarget{
		power.PXE:  rf.PxeBootSourceOverrideTarget,
		power.Disk: rf.HddBootSourceOverrideTarget,
	}[dev]
	if !ok {
		return fmt.Errorf("boot device %q: want pxe or disk", dev)
	}
	return p.with(ctx, info, "set boot device "+string(dev), func(c *gofish.APIClient, sys *rf.ComputerSystem) error {
		b := rf.Boot{BootSourceOverrideTarget: target, BootSourceOverrideEnabled: rf.OnceBootSourceOverrideEnabled, BootSourceOverrideMode: rf.LegacyBootSourceOverrideMode}
		if opts.Persistent {
			b.BootSourceOverrideEnabled = rf.ContinuousBootSourceOverrideEnabled
		}
		if opts.UEFI {
			b.BootSourceOverrideMode = rf.UEFIBootSourceOverrideMode
		}
		return sys.SetBoot(b)
	})
}

// with connects to the node's service, finds its system and runs f; errors
// name the node's BMC and wrap ErrRedfish.
func (p *Power) with(ctx context.Context, di power.DriverInfo, what string, f func(*gofish.APIClient, *rf.ComputerSystem) error) error {
	info, err := ParseInfo(di)
	if err != nil {
		return err
	}
	where := info.Address + info.SystemID
	fail := func(err error) error { return fmt.Errorf("%w: %s via %s: %w", ErrRedfish, what, where, err) }
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PowerStateTimeout+2*p.cfg.Timeout)
	defer cancel()
	c, err := p.connect(ctx, info)
	if err != nil {
		return fail(err)
	}
	defer c.Logout()
	sys, err := system(c, info.SystemID)
	if err != nil {
		return fail(err)
	}
	if err := f(c, sys); err != nil {
		return fail(err)
	}
	return nil
}

func (p *Power) connect(ctx context.Context, info Info) (*gofish.APIClient, error) {
	tr := &http.Transport{TLSHandshakeTimeout: 10 * time.Second}
	switch info.VerifyCA {
	case "true":
	case "false":
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the node's driver_info asks for it
	default:
		pemBytes, err := os.ReadFile(info.VerifyCA)
		if err != nil {
			return nil, fmt.Errorf("read redfish_verify_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("redfish_verify_ca %s: no PEM certificate in it", info.VerifyCA)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	cfg := gofish.ClientConfig{
		Endpoint:   info.Address,
		Username:   info.Username,
		Password:   info.Password,
		BasicAuth:  info.AuthType == "basic",
		HTTPClient: &http.Client{Timeout: p.cfg.Timeout, Transport: tr},
	}
	c, err := gofish.ConnectContext(ctx, cfg)
	if err != nil && info.AuthType == "auto" {
		cfg.BasicAuth = true // a service without sessions (sushy's auto mode)
		c, err = gofish.ConnectContext(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return c, nil
}

// system is the system at path, or the service's only one.
func system(c *gofish.APIClient, path string) (*rf.ComputerSystem, error) {
	if path != "" {
		return rf.GetComputerSystem(c, path)
	}
	all, err := c.Service.Systems()
	if err != nil {
		return nil, fmt.Errorf("list systems: %w", err)
	}
	if len(all) != 1 {
		return nil, fmt.Errorf("the service has %d systems: set redfish_system_id", len(all))
	}
	return all[0], nil
}
