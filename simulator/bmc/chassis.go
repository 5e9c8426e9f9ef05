package bmc

import (
	"context"
	"time"

	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ironlab/ironlab/simulator"
)

// machineTimeout bounds one Machine call made for an IPMI request.
const machineTimeout = 30 * time.Second

// machineCall is a context for Machine calls, shared by the requests of one
// second: it ends with the BMC or machineTimeout after it was made (so a
// call has between machineTimeout-1s and machineTimeout). A context and
// its timer per request were 7 % of the CPU of a BMC under load.
type machineCall struct {
	ctx  context.Context
	made time.Time
}

func (b *BMC) machineCtx() context.Context {
	now := time.Now()
	if c := b.call.Load(); c != nil && now.Sub(c.made) < time.Second {
		return c.ctx
	}
	ctx, cancel := context.WithTimeout(b.life, machineTimeout)
	// Requests of this second may still use it: release it only once it
	// has ended anyway.
	time.AfterFunc(machineTimeout, cancel)
	b.call.Store(&machineCall{ctx: ctx, made: now})
	return ctx
}

// Boot flags (Set System Boot Options parameter 5, IPMI 2.0 table 28-14).
const (
	flagValid      = 0x80
	flagPersistent = 0x40
	flagEFI        = 0x20

	devNone        = 0x00
	devPXE         = 0x04
	devDisk        = 0x08
	devRemoteDisk  = 0x24 // Supermicro's UEFI disk, as Ironic sends it
	deviceSelector = 0x3c
)

// bootOptions are the boot option parameters a client wrote; parameter 5's
// device and bits are read back from the Machine.
type bootOptions struct {
	setInProgress uint8
	validClear    uint8   // parameter 3
	ack           [2]byte // parameter 4
	flags         [5]byte // parameter 5 as last written
}

func (b *BMC) getSystemGUID(_ context.Context, _ *handlers.HandlerContext, _ []byte) ([]byte, types.CompletionCode, error) {
	g := b.core.GUID
	return g[:], types.CodeOK, nil
}

func (b *BMC) getChassisStatus(_ context.Context, _ *handlers.HandlerContext, _ []byte) ([]byte, types.CompletionCode, error) {
	p, err := b.m.Power(b.machineCtx())
	if err != nil {
		b.log.Error("get chassis status", "err", err)
		return nil, types.CodeUnspecifiedError, nil
	}
	resp := chassis.GetChassisStatusResponse{
		PowerIsOn:            p == simulator.PowerOn,
		PowerRestorePolicy:   chassis.PowerRestorePolicyAlwaysOff,
		LastPowerOnByCommand: true,
	}
	return resp.Pack(), types.CodeOK, nil
}

var controlActions = map[uint8]simulator.PowerAction{
	0x00: simulator.ActionOff,
	0x01: simulator.ActionOn,
	0x02: simulator.ActionCycle,
	0x03: simulator.ActionReset,
	0x04: simulator.ActionNMI,
	0x05: simulator.ActionSoftOff,
}

// chassisControl asks the Machine for a power change. It answers when the
// change is done or after ControlWait, whichever is first: a real BMC
// acknowledges at once, and a client retrying an unanswered request would
// otherwise send it twice.
func (b *BMC) chassisControl(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 1 {
		return nil, types.CodeRequestDataLengthInvalid, nil
	}
	a, ok := controlActions[req[0]&0x0f]
	if !ok {
		return nil, types.CodeRequestDataFieldInvalid, nil
	}
	// The change runs under the BMC's lifetime, not the request's: it may
	// outlast the answer, never the BMC.
	done := make(chan error, 1)
	if !b.goWork(func(life context.Context) {
		ctx, cancel := context.WithTimeout(life, machineTimeout)
		defer cancel()
		done <- b.m.SetPower(ctx, a)
	}) {
		return nil, types.CodeNodeBusy, nil // the BMC is shutting down
	}
	t := time.NewTimer(b.opts.ControlWait)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			b.log.Error("chassis control", "action", a, "err", err)
			return nil, types.CodeNotSupported, nil // not in present state
		}
		b.log.Debug("chassis control", "action", a)
		return nil, types.CodeOK, nil
	case <-t.C:
		b.goWork(func(context.Context) {
			if err := <-done; err != nil {
				b.log.Error("chassis control (late)", "action", a, "err", err)
			}
		})
		return nil, types.CodeOK, nil
	}
}

func (b *BMC) setBootOptions(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 1 {
		return nil, types.CodeRequestDataLengthInvalid, nil
	}
	param, data := req[0]&0x7f, req[1:]
	b.mu.Lock()
	defer b.mu.Unlock()
	switch param {
	case 0: // set in progress
		if len(data) < 1 {
			return nil, types.CodeRequestDataLengthInvalid, nil
		}
		// A client that dies mid-set must not lock the next one out, so a
		// second "set in progress" is accepted rather than answered 0x81.
		b.boot.setInProgress = data[0] & 0x03
	case 3: // boot flag valid bit clearing
		if len(data) < 1 {
			return nil, types.CodeRequestDataLengthInvalid, nil
		}
		b.boot.validClear = data[0] & 0x1f
	case 4: // boot info acknowledge: mask, then data
		if len(data) < 2 {
			return nil, types.CodeRequestDataLengthInvalid, nil
		}
		b.boot.ack[1] = b.boot.ack[1]&^data[0] | data[1]&data[0]
		b.boot.ack[0] = data[0]
	case 5: // boot flags
		if len(data) < 5 {
			return nil, types.CodeRequestDataLengthInvalid, nil
		}
		var f [5]byte
		copy(f[:], data)
		if dev, ok := machineDevice(f); ok {
			cfg := simulator.BootConfig{Device: dev, Persistent: f[0]&flagPersistent != 0, UEFI: f[0]&flagEFI != 0}
			if err := b.m.SetBootConfig(b.machineCtx(), cfg); err != nil {
				b.log.Error("set boot device", "config", cfg, "err", err)
				return nil, types.CodeUnspecifiedError, nil
			}
			b.log.Debug("set boot device", "config", cfg)
		}
		b.boot.flags = f
	default:
		return nil, types.CodeParameterNotSupported, nil
	}
	return nil, types.CodeOK, nil
}

// machineDevice is the Machine boot device boot flags select, if any. Valid
// flags naming a device the machine lacks (CD, BIOS setup...) and "no
// override" are recorded and read back, but change nothing.
func machineDevice(f [5]byte) (simulator.BootDevice, bool) {
	if f[0]&flagValid == 0 {
		return "", false
	}
	switch f[1] & deviceSelector {
	case devPXE:
		return simulator.BootNetwork, true
	case devDisk, devRemoteDisk:
		return simulator.BootDisk, true
	}
	return "", false
}

func (b *BMC) getBootOptions(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 1 {
		return nil, types.CodeRequestDataLengthInvalid, nil
	}
	param := req[0] & 0x7f
	resp := []byte{0x01, param} // parameter version 1
	b.mu.Lock()
	boot := b.boot
	b.mu.Unlock()
	switch param {
	case 0:
		return append(resp, boot.setInProgress), types.CodeOK, nil
	case 3:
		return append(resp, boot.validClear), types.CodeOK, nil
	case 4:
		return append(resp, boot.ack[:]...), types.CodeOK, nil
	case 5:
		f := boot.flags
		if _, custom := machineDevice(f); custom || f[0]&flagValid == 0 || f[1]&deviceSelector == devNone {
			cfg, err := b.m.BootConfig(b.machineCtx())
			if err != nil {
				b.log.Error("get boot device", "err", err)
				return nil, types.CodeUnspecifiedError, nil
			}
			f = flagsOf(cfg, f)
		}
		return append(resp, f[:]...), types.CodeOK, nil
	default:
		return nil, types.CodeParameterNotSupported, nil
	}
}

// flagsOf renders a Machine's boot config as boot flags, keeping the option
// bytes a client last wrote.
func flagsOf(cfg simulator.BootConfig, last [5]byte) [5]byte {
	f := last
	f[0] &^= flagValid | flagPersistent | flagEFI
	f[1] &^= deviceSelector
	switch cfg.Device {
	case simulator.BootNetwork:
		f[0] |= flagValid
		f[1] |= devPXE
	case simulator.BootDisk:
		f[0] |= flagValid
		f[1] |= devDisk
	default:
		return f
	}
	if cfg.Persistent {
		f[0] |= flagPersistent
	}
	if cfg.UEFI {
		f[0] |= flagEFI
	}
	return f
}
