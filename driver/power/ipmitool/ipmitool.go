// Package ipmitool is the driver's IPMI power and management interface that
// runs the real ipmitool binary with the command lines OpenStack Ironic's
// ipmitool driver uses, so a BMC that passes here passes there.
package ipmitool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ironlab/ironlab/driver/power"
)

// Config mirrors Ironic's [ipmi] options. The zero value gives Ironic's defaults.
type Config struct {
	// Binary is the ipmitool to run (default "ipmitool" on PATH).
	Binary string
	// MinCommandInterval is the least time between two commands to one BMC
	// (Ironic's min_command_interval, default 5 s). It is also ipmitool's -N.
	MinCommandInterval time.Duration
	// Retries is ipmitool's -R (default 1; Ironic retries itself).
	Retries int
	// CommandRetryTimeout is how long a command that fails with a retryable
	// error ("Node busy", "Timeout"...) is retried (default 60 s).
	CommandRetryTimeout time.Duration
	// CommandTimeout kills one ipmitool run that takes longer (default 60 s).
	CommandTimeout time.Duration
	// PowerStateTimeout is how long a power change may take to show in
	// "power status" (Ironic's power_state_change_timeout, default 60 s).
	PowerStateTimeout time.Duration
	// PollInterval is the pause between "power status" polls after a change
	// (default 1 s); MinCommandInterval still applies.
	PollInterval time.Duration
	// RetryableErrors are extra ipmitool messages worth a retry.
	RetryableErrors []string
	// FullRegistry runs ipmitool with the caller's HOME. By default each run
	// gets a HOME of its own holding a one-entry IANA enterprise-number
	// registry: ipmitool 1.8.19 loads $HOME/.local/usr/share/misc/
	// enterprise-numbers.txt, else /usr/share/misc/'s (4.7 MB on Debian 12),
	// before its first packet, about 17 ms of CPU per run and 70 % of a
	// "power status"; only the manufacturer names of "mc info" and "fru"
	// need it, which the interface never runs.
	FullRegistry bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Ironic's IPMITOOL_RETRYABLE_FAILURES.
var retryable = []string{
	"insufficient resources for session",
	"Node busy",
	"Timeout",
	"Out of space",
	"BMC initialization in progress",
}

// Power is the ipmitool power and management interface.
type Power struct {
	cfg   Config
	log   *slog.Logger
	mu    sync.Mutex
	bmcs  map[string]*bmcSlot
	retry []string
}

// bmcSlot serialises commands to one BMC and spaces them out.
type bmcSlot struct {
	turn chan struct{} // holds one token; taking it is the BMC's lock
	last time.Time
}

// smallRegistry is the IANA registry ipmitool gets unless FullRegistry
// (in the file's format; ipmitool refuses an empty one).
const smallRegistry = "0\n  Reserved\n"

// ErrCommand is wrapped by every error ipmitool itself reports.
var ErrCommand = errors.New("ipmitool failed")

// New returns the interface with cfg's defaults filled in.
func New(cfg Config) *Power {
	if cfg.Binary == "" {
		cfg.Binary = "ipmitool"
	}
	if cfg.MinCommandInterval <= 0 {
		cfg.MinCommandInterval = 5 * time.Second
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 1
	}
	if cfg.CommandRetryTimeout <= 0 {
		cfg.CommandRetryTimeout = 60 * time.Second
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = 60 * time.Second
	}
	if cfg.PowerStateTimeout <= 0 {
		cfg.PowerStateTimeout = 60 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Power{
		cfg:   cfg,
		log:   cfg.Logger,
		bmcs:  map[string]*bmcSlot{},
		retry: append(append([]string{}, retryable...), cfg.RetryableErrors...),
	}
}

// Name is the interface's name in the API.
func (p *Power) Name() string { return "ipmitool" }

// Validate checks driver_info has a usable BMC address and options.
func (p *Power) Validate(info power.DriverInfo) error {
	_, err := ParseInfo(info)
	return err
}

// GetPowerState runs "power status".
func (p *Power) GetPowerState(ctx context.Context, info power.DriverInfo) (power.State, error) {
	bi, err := ParseInfo(info)
	if err != nil {
		return "", err
	}
	return p.status(ctx, bi)
}

func (p *Power) status(ctx context.Context, bi Info) (power.State, error) {
	out, err := p.exec(ctx, bi, "power", "status")
	if err != nil {
		return "", err
	}
	switch strings.TrimSpace(out) {
	case "Chassis Power is on":
		return power.On, nil
	case "Chassis Power is off":
		return power.Off, nil
	}
	return "", fmt.Errorf("power status via BMC %s: %w: unexpected output %q", bi.Addr(), ErrCommand, out)
}

// SetPowerState turns the node on, off or soft off and polls "power status"
// until it shows; Reboot is off (if on) then on, as Ironic does — never
// "power cycle".
func (p *Power) SetPowerState(ctx context.Context, info power.DriverInfo, target power.State) error {
	bi, err := ParseInfo(info)
	if err != nil {
		return err
	}
	switch target {
	case power.On:
		return p.change(ctx, bi, "on", power.On)
	case power.Off:
		return p.change(ctx, bi, "off", power.Off)
	case power.SoftOff:
		return p.change(ctx, bi, "soft", power.Off)
	case power.Reboot:
		st, err := p.status(ctx, bi)
		if err != nil {
			return err
		}
		if st == power.On {
			if err := p.change(ctx, bi, "off", power.Off); err != nil {
				return err
			}
		}
		return p.change(ctx, bi, "on", power.On)
	}
	return fmt.Errorf("set power state %q via BMC %s: not a target state", target, bi.Addr())
}

func (p *Power) change(ctx context.Context, bi Info, verb string, want power.State) error {
	if _, err := p.exec(ctx, bi, "power", verb); err != nil {
		return err
	}
	deadline := time.Now().Add(p.cfg.PowerStateTimeout)
	for {
		st, err := p.status(ctx, bi)
		if err != nil {
			return err
		}
		if st == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("power %s via BMC %s: still %q after %s", verb, bi.Addr(), st, p.cfg.PowerStateTimeout)
		}
		if err := sleep(ctx, p.cfg.PollInterval); err != nil {
			return fmt.Errorf("power %s via BMC %s: %w", verb, bi.Addr(), err)
		}
	}
}

// SetBootDevice sets the next boot device the way Ironic does: first
// "raw 0x00 0x08 0x03 0x08" (keep the boot flags past the BMC's 60 s
// timeout), then "chassis bootdev" for BIOS or a raw parameter 5 write for
// UEFI.
func (p *Power) SetBootDevice(ctx context.Context, info power.DriverInfo, dev power.Device, opts power.BootOptions) error {
	bi, err := ParseInfo(info)
	if err != nil {
		return err
	}
	code, ok := map[power.Device]string{power.PXE: "0x04", power.Disk: "0x08"}[dev]
	if !ok {
		return fmt.Errorf("set boot device %q via BMC %s: unsupported device", dev, bi.Addr())
	}
	if _, err := p.exec(ctx, bi, "raw", "0x00", "0x08", "0x03", "0x08"); err != nil {
		return err
	}
	if opts.UEFI {
		flags := "0xa0"
		if opts.Persistent {
			flags = "0xe0"
		}
		_, err = p.exec(ctx, bi, "raw", "0x00", "0x08", "0x05", flags, code, "0x00", "0x00", "0x00")
		return err
	}
	args := []string{"chassis", "bootdev", string(dev)}
	if opts.Persistent {
		args = append(args, "options=persistent")
	}
	_, err = p.exec(ctx, bi, args...)
	return err
}

// Args is the ipmitool command line (without the binary) for one command,
// exactly as Ironic builds it; pwfile holds the password.
func (p *Power) Args(bi Info, pwfile string, cmd ...string) []string {
	iface := "lanplus"
	if bi.ProtocolVersion == "1.5" {
		iface = "lan"
	}
	args := []string{"-I", iface, "-H", bi.Address, "-L", "ADMINISTRATOR", "-p", fmt.Sprint(bi.Port)}
	if bi.Username != "" {
		args = append(args, "-U", bi.Username)
	}
	if bi.CipherSuite != "" {
		args = append(args, "-C", bi.CipherSuite)
	}
	args = append(args, "-R", fmt.Sprint(p.cfg.Retries), "-N", fmt.Sprint(p.timeoutSeconds()), "-f", pwfile)
	return append(args, cmd...)
}

func (p *Power) timeoutSeconds() int {
	n := int(p.cfg.MinCommandInterval / time.Second)
	return max(n, 1)
}

// exec runs one ipmitool command against a BMC: one at a time per BMC, at
// least MinCommandInterval apart, retried on Ironic's retryable errors for up
// to CommandRetryTimeout.
func (p *Power) exec(ctx context.Context, bi Info, cmd ...string) (string, error) {
	what := strings.Join(cmd, " ")
	retryUntil := time.Now().Add(p.cfg.CommandRetryTimeout)
	for attempt := 1; ; attempt++ {
		out, stderr, err := p.execOnce(ctx, bi, cmd)
		if err == nil {
			return out, nil
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("%s via BMC %s: %w", what, bi.Addr(), ctx.Err())
		}
		msg := strings.TrimSpace(stderr + " " + out)
		err = fmt.Errorf("%s via BMC %s: %w (%v): %s", what, bi.Addr(), ErrCommand, err, msg)
		if !p.isRetryable(msg) || time.Now().After(retryUntil) {
			return "", err
		}
		p.log.Warn("ipmitool retry", "bmc", bi.Addr(), "cmd", what, "attempt", attempt, "err", err)
	}
}

func (p *Power) isRetryable(msg string) bool {
	for _, r := range p.retry {
		if strings.Contains(msg, r) {
			return true
		}
	}
	return false
}

func (p *Power) execOnce(ctx context.Context, bi Info, cmd []string) (string, string, error) {
	slot := p.slot(bi.Addr())
	select {
	case <-slot.turn:
	case <-ctx.Done():
		return "", "", ctx.Err()
	}
	defer func() {
		slot.last = time.Now()
		slot.turn <- struct{}{}
	}()
	if wait := time.Until(slot.last.Add(p.cfg.MinCommandInterval)); wait > 0 {
		if err := sleep(ctx, wait); err != nil {
			return "", "", err
		}
	}

	// The run's folder: the password file, and HOME with the small registry.
	dir, err := os.MkdirTemp("", "ironlab-ipmi-*")
	if err != nil {
		return "", "", fmt.Errorf("password file: %w", err)
	}
	defer os.RemoveAll(dir)
	// ipmitool reads the first line; an empty password is written as NUL,
	// as Ironic does.
	secret := bi.Password
	if secret == "" {
		secret = "\x00"
	}
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte(secret), 0o600); err != nil {
		return "", "", fmt.Errorf("password file: %w", err)
	}
	var env []string
	if !p.cfg.FullRegistry {
		reg := filepath.Join(dir, ".local", "usr", "share", "misc")
		if err := os.MkdirAll(reg, 0o700); err != nil {
			return "", "", fmt.Errorf("ipmitool registry: %w", err)
		}
		if err := os.WriteFile(filepath.Join(reg, "enterprise-numbers.txt"), []byte(smallRegistry), 0o600); err != nil {
			return "", "", fmt.Errorf("ipmitool registry: %w", err)
		}
		// ipmitool needs nothing else from an environment (the password
		// comes in a file), so the run gets only its HOME.
		env = []string{"HOME=" + dir}
	}

	ctx, cancel := context.WithTimeout(ctx, p.cfg.CommandTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, p.cfg.Binary, p.Args(bi, pw, cmd...)...)
	c.Env = env // nil: the caller's
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	c.WaitDelay = time.Second
	err = c.Run()
	if ctx.Err() != nil && err != nil {
		err = fmt.Errorf("%w after %s", ctx.Err(), p.cfg.CommandTimeout)
	}
	return stdout.String(), stderr.String(), err
}

func (p *Power) slot(addr string) *bmcSlot {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.bmcs[addr]
	if !ok {
		s = &bmcSlot{turn: make(chan struct{}, 1)}
		s.turn <- struct{}{}
		p.bmcs[addr] = s
	}
	return s
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
