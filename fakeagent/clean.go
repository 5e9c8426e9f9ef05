package fakeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
)

const mib = 1 << 20

// Erase methods reported per device by erase_devices.
const (
	EraseSecure    = "secure erase"
	EraseOverwrite = "overwritten with zeros"
)

// eraseDevices overwrites every disk with zeros. Disks whose hardware says
// SecureErase take the emulated firmware path instead: the range is
// deallocated (punched), which is fast and reads back as zeros.
func (a *Agent) eraseDevices(ctx context.Context) (map[string]string, error) {
	res := map[string]string{}
	for _, d := range a.cfg.Hardware.Hardware().Disks {
		method, err := a.eraseDisk(ctx, d)
		if err != nil {
			return nil, err
		}
		res[devPath(d.Name)] = method
	}
	return res, nil
}

func (a *Agent) eraseDisk(ctx context.Context, d BlockDevice) (string, error) {
	dev := devPath(d.Name)
	disk, err := a.cfg.OpenDisk(d)
	if err != nil {
		return "", fmt.Errorf("erase %s: %w", dev, err)
	}
	defer closeDisk(disk)
	if p, ok := disk.(holePuncher); ok && d.SecureErase {
		if err := p.PunchHole(0, disk.Size()); err == nil {
			if err := disk.Sync(); err != nil {
				return "", fmt.Errorf("erase %s: sync: %w", dev, err)
			}
			a.event("disk erased", "device", dev, "method", EraseSecure)
			return EraseSecure, nil
		} else {
			a.logger().Warn("secure erase unavailable; overwriting", "device", dev, "err", err)
		}
	}
	// Only data extents need writing on a sparse file: holes already read as
	// zeros. A block device reports itself as one extent, so in a VM every
	// byte is written.
	off := int64(0)
	for {
		start, end := off, disk.Size()
		if f, ok := disk.(dataFinder); ok {
			s, e, found, err := f.NextData(off)
			if err != nil {
				return "", fmt.Errorf("erase %s: find data: %w", dev, err)
			}
			if !found {
				break
			}
			start, end = s, e
		} else if off >= disk.Size() {
			break
		}
		if err := a.zero(ctx, disk, start, end-start); err != nil {
			return "", fmt.Errorf("erase %s: %w", dev, err)
		}
		off = end
	}
	if err := disk.Sync(); err != nil {
		return "", fmt.Errorf("erase %s: sync: %w", dev, err)
	}
	a.event("disk erased", "device", dev, "method", EraseOverwrite)
	return EraseOverwrite, nil
}

// eraseDevicesExpress is IPA's time-optimised erase: the (emulated) secure
// erase where the disk supports it, the metadata erase everywhere else.
func (a *Agent) eraseDevicesExpress(ctx context.Context) (map[string]string, error) {
	res := map[string]string{}
	for _, d := range a.cfg.Hardware.Hardware().Disks {
		dev := devPath(d.Name)
		disk, err := a.cfg.OpenDisk(d)
		if err != nil {
			return nil, fmt.Errorf("erase %s: %w", dev, err)
		}
		method := "metadata erased"
		p, ok := disk.(holePuncher)
		if ok && d.SecureErase && p.PunchHole(0, disk.Size()) == nil {
			method = EraseSecure
		} else if err = a.eraseDiskMetadata(ctx, disk); err != nil {
			closeDisk(disk)
			return nil, fmt.Errorf("erase metadata of %s: %w", dev, err)
		}
		err = disk.Sync()
		closeDisk(disk)
		if err != nil {
			return nil, fmt.Errorf("erase %s: sync: %w", dev, err)
		}
		a.event("disk erased (express)", "device", dev, "method", method)
		res[dev] = method
	}
	return res, nil
}

// eraseDevicesMetadata zeroes the first and last MiB of every disk: the
// partition tables (MBR, GPT and its backup) and most signatures.
func (a *Agent) eraseDevicesMetadata(ctx context.Context) error {
	for _, d := range a.cfg.Hardware.Hardware().Disks {
		dev := devPath(d.Name)
		disk, err := a.cfg.OpenDisk(d)
		if err != nil {
			return fmt.Errorf("erase metadata of %s: %w", dev, err)
		}
		err = a.eraseDiskMetadata(ctx, disk)
		if err == nil {
			err = disk.Sync()
		}
		closeDisk(disk)
		if err != nil {
			return fmt.Errorf("erase metadata of %s: %w", dev, err)
		}
		a.event("disk metadata erased", "device", dev)
	}
	return nil
}

// eraseDiskMetadata zeroes the first and last MiB of one disk.
func (a *Agent) eraseDiskMetadata(ctx context.Context, disk Disk) error {
	size := disk.Size()
	head := min(size, mib)
	err := a.zero(ctx, disk, 0, head)
	if err == nil && size > head {
		tail := max(head, size-mib)
		err = a.zero(ctx, disk, tail, size-tail)
	}
	return err
}

var zeros = make([]byte, mib)

// zeroStep is the most one ZeroRange call zeroes on an unthrottled disk.
const zeroStep = 64 * mib

// zero makes [off, off+length) of disk read as zeros: without writing them
// where the disk can (a hole punched in a sparse file, BLKZEROOUT on a block
// device), by writing zeros where it cannot. Either way the slow-disk fault
// (DiskWriteBytesPerSecond) makes it take length/bps, as a disk that wrote
// every byte would.
func (a *Agent) zero(ctx context.Context, disk Disk, off, length int64) error {
	w := &throttledWriterAt{ctx: ctx, w: disk, bps: func() int64 { return a.Faults().DiskWriteBytesPerSecond }}
	z, canZero := disk.(zeroer)
	for length > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(length, int64(len(zeros)))
		if canZero {
			// Unthrottled, larger steps (fewer calls; the context is still
			// checked between them); throttled, the writes' 1 MiB, so a
			// slow disk still makes progress and notices a lifted fault.
			if a.Faults().DiskWriteBytesPerSecond <= 0 {
				n = min(length, zeroStep)
			}
			err := z.ZeroRange(off, n)
			if err == nil {
				if err := w.account(n); err != nil {
					return err
				}
				off += n
				length -= n
				continue
			}
			if !errors.Is(err, errors.ErrUnsupported) {
				return err
			}
			canZero = false // write zeros from here on
		}
		if _, err := w.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("write zeros at %d: %w", off, err)
		}
		off += n
		length -= n
	}
	return nil
}

// updateFirmware "flashes" a BIOS version: the machine's BIOSVersion changes
// and the next inventory reports it.
func (a *Agent) updateFirmware(raw json.RawMessage) (any, error) {
	var args struct {
		Version string `json:"version"`
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &args); err != nil {
			return nil, fmt.Errorf("args: %w", err)
		}
	}
	if args.Version == "" {
		return nil, errors.New(`args.version is required, e.g. {"version": "2.1.0"}`)
	}
	var old string
	if err := a.cfg.Hardware.UpdateHardware(func(hw *Hardware) {
		old, hw.BIOSVersion = hw.BIOSVersion, args.Version
	}); err != nil {
		return nil, fmt.Errorf("save BIOS version: %w", err)
	}
	a.event("firmware updated", "from", old, "to", args.Version)
	return map[string]string{"previous_version": old, "version": args.Version}, nil
}

// applyBIOSSettings changes BIOS settings; the next inventory shows them.
func (a *Agent) applyBIOSSettings(raw json.RawMessage) (any, error) {
	var args struct {
		Settings []struct {
			Name  string `json:"name"`
			Value any    `json:"value"`
		} `json:"settings"`
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &args); err != nil {
			return nil, fmt.Errorf("args: %w", err)
		}
	}
	if len(args.Settings) == 0 {
		return nil, errors.New(`args.settings is required, e.g. [{"name": "vt", "value": "on"}]`)
	}
	set := map[string]string{}
	for i, s := range args.Settings {
		if s.Name == "" {
			return nil, fmt.Errorf("args.settings[%d] has no name", i)
		}
		switch v := s.Value.(type) {
		case string:
			set[s.Name] = v
		case nil:
			return nil, fmt.Errorf("args.settings[%d] (%s) has no value", i, s.Name)
		default:
			set[s.Name] = fmt.Sprint(v)
		}
	}
	if err := a.cfg.Hardware.UpdateHardware(func(hw *Hardware) {
		if hw.BIOSSettings == nil {
			hw.BIOSSettings = map[string]string{}
		}
		maps.Copy(hw.BIOSSettings, set)
	}); err != nil {
		return nil, fmt.Errorf("save BIOS settings: %w", err)
	}
	a.event("BIOS settings applied", "settings", set)
	return map[string]any{"applied": set}, nil
}
