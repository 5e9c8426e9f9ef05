package fakeagent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/google/uuid"

	"github.com/ironlab/ironlab/images/configdrive"
	"github.com/ironlab/ironlab/images/partition"
	"github.com/ironlab/ironlab/images/qcow2"
)

// ironic-lib's sizes (efi_system_partition_size, bios_boot_partition_size)
// and IPA's config drive partition size for whole-disk images.
const (
	espMiB         = 200
	biosBootMiB    = 1
	configDriveMiB = 64
)

// imageWrite is one write_image/prepare_image run.
type imageWrite struct {
	a        *Agent
	info     ImageInfo
	want     wantSum
	disk     Disk
	dev      string
	bootMode string

	format  string // what was written: raw or qcow2
	sum     string
	written int64
}

// window is a partition (or the whole disk) as a bounded WriterAt.
type window struct {
	d        Disk
	off, len int64
}

func (w window) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > w.len {
		return 0, fmt.Errorf("write of %d bytes at %d does not fit the %d-byte target", len(p), off, w.len)
	}
	return w.d.WriteAt(p, w.off+off)
}

func (w window) ReadAt(p []byte, off int64) (int, error) {
	if off >= w.len {
		return 0, io.EOF
	}
	if int64(len(p)) > w.len-off {
		p = p[:w.len-off]
	}
	return w.d.ReadAt(p, w.off+off)
}

// zero makes [off, off+n) of the window read as zeros (Agent.zero: a hole
// where the disk can punch one, zeros written otherwise).
func (w window) zero(ctx context.Context, a *Agent, off, n int64) error {
	return a.zero(ctx, w.d, w.off+off, n)
}

func (w *imageWrite) fail(format string, args ...any) error {
	return imageError("ImageWriteError", "Error writing image to device", format, args...)
}

func (w *imageWrite) run(ctx context.Context, cd []byte) (map[string]any, error) {
	size := w.disk.Size()
	if !w.info.isPartition() {
		whole := window{d: w.disk, len: size}
		if err := w.writeImageTo(ctx, whole); err != nil {
			return nil, err
		}
		if err := w.fixGPT(); err != nil {
			return nil, err
		}
		if cd != nil {
			if err := w.configDriveAtEnd(cd); err != nil {
				return nil, err
			}
		}
		return map[string]any{"root uuid": diskIdentifier(w.disk)}, nil
	}
	plan, err := w.partitionPlan(size, cd)
	if err != nil {
		return nil, err
	}
	// destroy_disk_metadata: the old tables go first.
	if err := w.a.eraseDiskMetadata(ctx, w.disk); err != nil {
		return nil, w.fail("wipe the partition tables of %s: %v", w.dev, err)
	}
	if err := partition.Write(w.disk, size, plan.table); err != nil {
		return nil, w.fail("partition %s: %v", w.dev, err)
	}
	parts := map[string]any{}
	for role, p := range plan.roles {
		parts[role] = fmt.Sprintf("%s%d", w.dev, p.Number)
	}
	if esp, ok := plan.roles["efi system partition"]; ok {
		if err := formatFAT16(w.disk, esp.Start, esp.Size, "efi-part"); err != nil {
			return nil, w.fail("mkfs.vfat on %s%d: %v", w.dev, esp.Number, err)
		}
	}
	if cp, ok := plan.roles["configdrive"]; ok {
		if _, err := w.disk.WriteAt(cd, cp.Start); err != nil {
			return nil, w.fail("write the config drive to %s%d: %v", w.dev, cp.Number, err)
		}
	}
	if sp, ok := plan.roles["swap"]; ok {
		if err := writeSwapSignature(w.disk, sp.Start, sp.Size, "swap1"); err != nil {
			return nil, w.fail("mkswap on %s%d: %v", w.dev, sp.Number, err)
		}
	}
	root := plan.roles["root"]
	if err := w.writeImageTo(ctx, window{d: w.disk, off: root.Start, len: root.Size}); err != nil {
		return nil, err
	}
	uuids := map[string]any{"partitions": parts, "root uuid": blockUUID(w.disk, plan.table, root)}
	if esp, ok := plan.roles["efi system partition"]; ok {
		uuids["efi system partition uuid"] = blockUUID(w.disk, plan.table, esp)
	} else {
		uuids["efi system partition uuid"] = nil
	}
	return uuids, nil
}

// writeImageTo puts the image onto target: a raw image streams, anything
// else is downloaded to a file first, verified, inspected and converted.
func (w *imageWrite) writeImageTo(ctx context.Context, target window) error {
	format := strings.ToLower(w.info.DiskFormat)
	var failures []string
	for _, u := range w.info.URLs {
		var err error
		if format == "raw" {
			err = w.stream(ctx, u, target)
		} else {
			err = w.cacheAndConvert(ctx, u, format, target)
		}
		if err == nil {
			return nil
		}
		var ce *CommandError
		if errors.As(err, &ce) {
			return err // a checksum or format refusal: another URL would not help
		}
		failures = append(failures, err.Error())
		w.a.logger().Warn("image download failed", "image", w.info.ID, "url", u, "err", err)
		if ctx.Err() != nil {
			break
		}
	}
	return imageError("ImageDownloadError", "Error downloading image", "Download of image %s failed: %s", w.info.ID, strings.Join(failures, "; "))
}

func (w *imageWrite) checkSum(got, u string, n int64) error {
	if got != w.want.value {
		return imageError("ImageChecksumError", "Error verifying image checksum",
			"image %s from %s failed to verify: expected %s %s, actual %s (%d bytes written to %s)", w.info.ID, u, w.want.algo, w.want.value, got, n, w.dev)
	}
	w.sum = got
	return nil
}

func (w *imageWrite) stream(ctx context.Context, u string, target window) error {
	got, n, err := w.a.download(ctx, u, w.want.algo, target, target.len, w.dev)
	if err != nil {
		return err
	}
	w.format, w.written = "raw", n
	return w.checkSum(got, u, n)
}

// cacheAndConvert is IPA's path for non-raw images: download to a file (in
// the ramdisk, IPA's /tmp is memory too), verify, then the format
// inspection of bug 2071740 and the conversion.
func (w *imageWrite) cacheAndConvert(ctx context.Context, u, format string, target window) error {
	f, err := os.CreateTemp(w.a.cfg.ImageCacheDir, "ironlab-image-*")
	if err != nil {
		return w.fail("cache image %s: %v", w.info.ID, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	got, n, err := w.a.download(ctx, u, w.want.algo, fileWriterAt{f}, 1<<62, f.Name())
	if err != nil {
		return err
	}
	if err := w.checkSum(got, u, n); err != nil {
		return err
	}
	head := make([]byte, 4)
	_, _ = f.ReadAt(head, 0)
	isQcow2 := qcow2.IsQcow2(head)
	detected := "raw"
	if isQcow2 {
		detected = "qcow2"
	}
	invalid := func(format string, args ...any) error {
		return imageError("InvalidImage", "The image is invalid", format, args...)
	}
	if format != "" && format != detected {
		return invalid("Security: Expected format was %s, but image was actually %s", format, detected)
	}
	if !w.a.formatPermitted(detected) {
		return invalid("Security: Detected image format was %s, but only %s are allowed", detected, strings.Join(w.a.permittedFormats(), ", "))
	}
	if !isQcow2 {
		if n > target.len {
			return w.fail("image %s is %d bytes, larger than its target on %s (%d bytes)", w.info.ID, n, w.dev, target.len)
		}
		if err := copyFile(ctx, w.a, f, n, target); err != nil {
			return w.fail("write image %s to %s: %v", w.info.ID, w.dev, err)
		}
		w.format, w.written = "raw", n
		return nil
	}
	im, err := qcow2.Open(f, n)
	if err != nil {
		return invalid("image %s: %v", w.info.ID, err)
	}
	if im.Size() > target.len {
		return w.fail("qcow2 image %s has a virtual size of %d bytes, larger than its target on %s (%d bytes)", w.info.ID, im.Size(), w.dev, target.len)
	}
	tw := &throttledWriterAt{ctx: ctx, w: target, bps: func() int64 { return w.a.Faults().DiskWriteBytesPerSecond }}
	if err := im.Convert(ctx, tw, func(off, length int64) error { return target.zero(ctx, w.a, off, length) }); err != nil {
		if errors.Is(err, qcow2.ErrUnsupported) {
			return invalid("image %s: %v", w.info.ID, err)
		}
		return w.fail("convert qcow2 image %s onto %s: %v", w.info.ID, w.dev, err)
	}
	w.format, w.written = "qcow2", im.Size()
	return nil
}

type fileWriterAt struct{ f *os.File }

func (f fileWriterAt) WriteAt(p []byte, off int64) (int, error) { return f.f.WriteAt(p, off) }

func copyFile(ctx context.Context, a *Agent, f *os.File, n int64, target window) error {
	tw := &throttledWriterAt{ctx: ctx, w: target, bps: func() int64 { return a.Faults().DiskWriteBytesPerSecond }}
	buf, pooled := alignedMiB()
	defer alignedMiBs.Put(pooled)
	for off := int64(0); off < n; {
		m, err := f.ReadAt(buf[:min(int64(len(buf)), n-off)], off)
		if m > 0 {
			if _, werr := tw.WriteAt(buf[:m], off); werr != nil {
				return werr
			}
			off += int64(m)
		}
		if err != nil && !(errors.Is(err, io.EOF) && off == n) {
			return err
		}
	}
	return nil
}

// permittedFormats are the lookup's permitted_image_formats (IPA's default
// raw, qcow2 and iso until the driver says otherwise).
func (a *Agent) permittedFormats() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.permitted == nil {
		return []string{"raw", "qcow2", "iso"}
	}
	return a.permitted
}

func (a *Agent) formatPermitted(f string) bool {
	for _, p := range a.permittedFormats() {
		if p == f {
			return true
		}
	}
	return false
}

// plan is a partition image's layout, as ironic-lib's make_partitions
// makes it with parted: partitions from 1 MiB on, back to back, in the
// order EFI system partition (UEFI) or BIOS boot partition (BIOS on GPT),
// swap, config drive, root.
type plan struct {
	table partition.Table
	roles map[string]partition.Partition
}

func (w *imageWrite) partitionPlan(size int64, cd []byte) (plan, error) {
	label := w.info.DiskLabel
	if label == "" {
		label = partition.MBR
		if w.bootMode == "uefi" {
			label = partition.GPT
		}
	}
	if label != partition.GPT && label != partition.MBR {
		return plan{}, imageError("InvalidCommandParamsError", "Invalid command parameters", "disk_label %q: want gpt or msdos", label)
	}
	t := partition.Table{Kind: label, DiskGUID: uuid.New(), DiskSignature: randUint32()}
	roles := map[string]partition.Partition{}
	start := int64(mib)
	add := func(role string, sizeMiB int64, gptType uuid.UUID, mbrType byte, boot bool) {
		p := partition.Partition{Number: len(t.Partitions) + 1, Start: start, Size: sizeMiB * mib,
			Type: gptType, GUID: uuid.New(), Name: "primary", MBRType: mbrType, Bootable: boot}
		t.Partitions = append(t.Partitions, p)
		roles[role] = p
		start += p.Size
	}
	if w.bootMode == "uefi" {
		add("efi system partition", espMiB, partition.TypeESP, partition.MBRFAT32LBA, true)
	} else if label == partition.GPT {
		add("BIOS Boot partition", biosBootMiB, partition.TypeBIOSBoot, 0, false)
	}
	if w.info.SwapMB > 0 {
		add("swap", int64(w.info.SwapMB), partition.TypeLinuxSwap, partition.MBRLinuxSwap, false)
	}
	if cd != nil {
		add("configdrive", (int64(len(cd))+mib-1)/mib, partition.TypeLinux, partition.MBRLinux, false)
	}
	add("root", int64(w.info.RootMB), partition.TypeLinux, partition.MBRLinux, w.bootMode != "uefi" && label == partition.MBR)
	if end := t.FreeEnd(size); start > end {
		return plan{}, w.fail("the partitions of image %s need %d MiB, %s has %d MiB", w.info.ID, start/mib, w.dev, end/mib)
	}
	return plan{table: t, roles: roles}, nil
}

func randUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// fixGPT is IPA's fix_gpt_partition after a whole-disk image: a GPT made
// for a smaller disk gets its backup moved to the end (sgdisk -e).
func (w *imageWrite) fixGPT() error {
	t, err := partition.Read(w.disk, w.disk.Size())
	if err != nil || t.Kind != partition.GPT {
		return nil // no GPT (or an unreadable one): nothing IPA would fix
	}
	if err := partition.Write(w.disk, w.disk.Size(), t); err != nil {
		return w.fail("move the backup GPT of %s to the end of the disk: %v", w.dev, err)
	}
	return nil
}

// configDriveAtEnd is IPA's create_config_drive_partition for whole-disk
// images: reuse a partition labelled config-2, else add a 64 MiB one at the
// end of the disk (sgdisk -n 0:-64MB:0 on GPT, parted mkpart primary fat32
// -64MiB -0 on MBR) and copy the image into it.
func (w *imageWrite) configDriveAtEnd(cd []byte) error {
	fail := func(format string, args ...any) error {
		return imageError("InstanceDeployFailure", "Failed to create config drive", format, args...)
	}
	size := w.disk.Size()
	if len(cd) > configdrive.MaxSize {
		return fail("Config drive size exceeds maximum limit of 64MiB. Size of the given config drive is %d MiB for node %s.", (len(cd)+mib-1)/mib, w.info.NodeUUID)
	}
	t, err := partition.Read(w.disk, size)
	if errors.Is(err, partition.ErrNoTable) {
		return fail("the image on %s has no partition table to add a config drive partition to", w.dev)
	}
	if err != nil {
		return fail("read the partition table of %s: %v", w.dev, err)
	}
	if d, err := configdrive.Find(w.disk, size); err == nil {
		if int64(len(cd)) > d.Partition.Size {
			return fail("the existing config-2 partition %s%d is smaller than the config drive", w.dev, d.Partition.Number)
		}
		_, err := w.disk.WriteAt(cd, d.Partition.Start)
		return err
	}
	end := t.FreeEnd(size)
	start := (end - configDriveMiB*mib) / mib * mib
	if t.Kind == partition.MBR && len(t.Partitions) >= 4 {
		return fail("Config drive cannot be created for node %s. Disk (%s) uses MBR partitioning and already has %d primary partitions.", w.info.NodeUUID, w.dev, len(t.Partitions))
	}
	for _, p := range t.Partitions {
		if p.End() > start {
			return fail("partition %d of the image on %s ends at %d MiB, inside the last 64 MiB the config drive takes", p.Number, w.dev, p.End()/mib)
		}
	}
	if w.written > start {
		return fail("image %s (%d MiB) reaches into the last 64 MiB of %s, where the config drive goes", w.info.ID, w.written/mib, w.dev)
	}
	p := partition.Partition{Number: t.NextNumber(), Start: start, Size: end - start, Type: partition.TypeLinux, GUID: uuid.New(), MBRType: partition.MBRFAT32LBA}
	if t.Kind == partition.MBR {
		p.Size = (size - start) / partition.SectorSize * partition.SectorSize
	}
	t.Partitions = append(t.Partitions, p)
	if err := partition.Write(w.disk, size, t); err != nil {
		return fail("add the config drive partition to %s: %v", w.dev, err)
	}
	if _, err := w.disk.WriteAt(cd, p.Start); err != nil {
		return fail("write the config drive to %s%d: %v", w.dev, p.Number, err)
	}
	w.a.event("config drive written", "device", w.dev, "partition", p.Number, "bytes", len(cd))
	return nil
}

// configDrive fetches (a URL) and decodes the config drive Ironic sent.
func (a *Agent) configDrive(ctx context.Context, raw json.RawMessage, nodeUUID string) ([]byte, error) {
	fail := func(format string, args ...any) error {
		return imageError("InstanceDeployFailure", "Failed to create config drive", format, args...)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fail("configdrive for node %s must be a string (a URL, or the gzipped and base64-encoded image); Ironic builds it from a dictionary before sending", nodeUUID)
	}
	data := []byte(s)
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		ctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s, nil)
		if err != nil {
			return nil, fail("Can't download the configdrive content for node %s from '%s'. Reason: %v", nodeUUID, s, err)
		}
		resp, err := a.cfg.HTTPClient.Do(req)
		if err != nil {
			return nil, fail("Can't download the configdrive content for node %s from '%s'. Reason: %v", nodeUUID, s, err)
		}
		defer resp.Body.Close()
		data, err = io.ReadAll(io.LimitReader(resp.Body, 2*configdrive.MaxSize))
		if err != nil || resp.StatusCode >= 400 {
			return nil, fail("Can't download the configdrive content for node %s from '%s'. Got status code %d (%v)", nodeUUID, s, resp.StatusCode, err)
		}
	}
	img, err := configdrive.Decode(data)
	if err != nil {
		return nil, fail("Config drive for node %s is not base64 encoded or the content is malformed: %v", nodeUUID, err)
	}
	return img, nil
}

// blockUUID is IPA's block_uuid: the filesystem UUID blkid reports (ext2/3/4,
// XFS, vfat), else the partition's PARTUUID.
func blockUUID(d io.ReaderAt, t partition.Table, p partition.Partition) string {
	if u := fsUUID(window{d: readOnly{d}, off: p.Start, len: p.Size}); u != "" {
		return u
	}
	return t.PartUUID(p)
}

type readOnly struct{ io.ReaderAt }

func (readOnly) WriteAt([]byte, int64) (int, error) { return 0, errors.New("read only") }
func (readOnly) Size() int64                        { return 0 }
func (readOnly) Sync() error                        { return nil }

func fsUUID(r io.ReaderAt) string {
	b := make([]byte, 2048)
	if n, _ := r.ReadAt(b, 0); n < 2048 {
		return ""
	}
	switch {
	case binary.LittleEndian.Uint16(b[1024+56:]) == 0xEF53: // ext2/3/4
		u, _ := uuid.FromBytes(b[1024+104 : 1024+120])
		return u.String()
	case bytes.Equal(b[:4], []byte("XFSB")):
		u, _ := uuid.FromBytes(b[32:48])
		return u.String()
	case b[510] == 0x55 && b[511] == 0xaa && bytes.Equal(b[54:59], []byte("FAT16")):
		return fmt.Sprintf("%04X-%04X", binary.LittleEndian.Uint16(b[41:]), binary.LittleEndian.Uint16(b[39:]))
	case b[510] == 0x55 && b[511] == 0xaa && bytes.Equal(b[82:87], []byte("FAT32")):
		return fmt.Sprintf("%04X-%04X", binary.LittleEndian.Uint16(b[69:]), binary.LittleEndian.Uint16(b[67:]))
	}
	return ""
}

// writeSwapSignature is mkswap: a version-1 swap header in the first 4 KiB
// page with the label, and SWAPSPACE2 at its end.
func writeSwapSignature(d Disk, off, size int64, label string) error {
	const page = 4096
	if size < 10*page {
		return fmt.Errorf("swap partition of %d bytes is too small", size)
	}
	b := make([]byte, page)
	le := binary.LittleEndian
	le.PutUint32(b[1024:], 1)                   // version
	le.PutUint32(b[1028:], uint32(size/page-1)) // last page
	copy(b[1036:1052], func() []byte { u := uuid.New(); return u[:] }())
	copy(b[1052:1068], label)
	copy(b[page-10:], "SWAPSPACE2")
	_, err := d.WriteAt(b, off)
	return err
}

// formatFAT16 is mkfs.vfat -n label for the EFI system partition: a FAT16
// filesystem (4 KiB clusters) with an empty root directory.
func formatFAT16(d Disk, off, size int64, label string) error {
	const (
		bps      = 512
		spc      = 8
		reserved = 4
		nFATs    = 2
		rootEnts = 512
	)
	sectors := size / bps
	rootSecs := int64(rootEnts * 32 / bps)
	// FAT size: solve for the data clusters the FATs can address.
	fatSecs := int64(1)
	for {
		clusters := (sectors - reserved - nFATs*fatSecs - rootSecs) / spc
		need := ((clusters+2)*2 + bps - 1) / bps
		if need <= fatSecs {
			if clusters < 4085 || clusters > 65524 {
				return fmt.Errorf("%d clusters of %d bytes do not make a FAT16 filesystem", clusters, spc*bps)
			}
			break
		}
		fatSecs = need
	}
	le := binary.LittleEndian
	bs := make([]byte, bps)
	copy(bs, []byte{0xEB, 0x3C, 0x90})
	copy(bs[3:], "mkfs.fat")
	le.PutUint16(bs[11:], bps)
	bs[13] = spc
	le.PutUint16(bs[14:], reserved)
	bs[16] = nFATs
	le.PutUint16(bs[17:], rootEnts)
	if sectors < 65536 {
		le.PutUint16(bs[19:], uint16(sectors))
	} else {
		le.PutUint32(bs[32:], uint32(sectors))
	}
	bs[21] = 0xF8
	le.PutUint16(bs[22:], uint16(fatSecs))
	le.PutUint16(bs[24:], 32) // sectors per track
	le.PutUint16(bs[26:], 64) // heads
	le.PutUint32(bs[28:], uint32(off/bps))
	bs[36] = 0x80
	bs[38] = 0x29
	le.PutUint32(bs[39:], randUint32())
	lbl := []byte(fmt.Sprintf("%-11s", strings.ToUpper(label)))[:11]
	copy(bs[43:], lbl)
	copy(bs[54:], "FAT16   ")
	bs[510], bs[511] = 0x55, 0xAA
	meta := make([]byte, (reserved+nFATs*fatSecs+rootSecs)*bps)
	copy(meta, bs)
	for i := int64(0); i < nFATs; i++ {
		fat := meta[(reserved+i*fatSecs)*bps:]
		le.PutUint16(fat[0:], 0xFFF8)
		le.PutUint16(fat[2:], 0xFFFF)
	}
	root := meta[(reserved+nFATs*fatSecs)*bps:]
	copy(root, lbl)
	root[11] = 0x08 // volume label entry
	_, err := d.WriteAt(meta, off)
	return err
}

// UEFIBootEntry is a boot entry in the machine's UEFI NVRAM (IPA's
// install_bootloader registers one with efibootmgr).
type UEFIBootEntry struct {
	Label    string `json:"label"`
	Device   string `json:"device"`
	PartUUID string `json:"partuuid"`
	Loader   string `json:"loader"`
	// Path is the device path of an entry that is not on a disk partition
	// (a network boot: "PciRoot(0x0)/Pci(0x3,0x0)/MAC(525400123456,1)").
	Path string `json:"path,omitempty"`
}

// DevicePath is the entry's device path as efibootmgr -v shows it (what
// clean_uefi_nvram's patterns match), e.g.
// HD(1,GPT,5f2a...)/File(\EFI\BOOT\BOOTX64.EFI).
func (e UEFIBootEntry) DevicePath() string {
	if e.Path != "" {
		return e.Path
	}
	n := strings.TrimLeft(e.Device, "/abcdefghijklmnopqrstuvwxyz")
	kind := "MBR"
	if strings.Count(e.PartUUID, "-") == 4 {
		kind = "GPT"
	}
	return fmt.Sprintf("HD(%s,%s,%s)/File(%s)", n, kind, e.PartUUID, e.Loader)
}

// UEFIBootEntries are the boot entries in the machine's NVRAM.
func (a *Agent) UEFIBootEntries() []UEFIBootEntry {
	return a.cfg.Hardware.Hardware().UEFIBootEntries
}

// installBootloader is IPA's image.install_bootloader as far as it can be
// without a root filesystem: in UEFI mode it finds the EFI system partition
// (the one named, or the disk's) and registers a boot entry for its
// default loader, as efi_utils.manage_uefi does with efibootmgr. Otherwise
// IPA goes on to grub2-install into the image's root filesystem, which is
// not emulated, so the command fails saying so; except, as in IPA, for a
// root UUID of 0x00000000 (or none): "Assuming a whole disk image", nothing
// to install. ignore_bootloader_failure turns a failure into a logged
// success, as IPA's does.
func (a *Agent) installBootloader(rootUUID, espUUID, bootMode string, ignoreFailure bool) error {
	err := a.installBootloaderOnce(rootUUID, espUUID, bootMode)
	if err != nil && ignoreFailure {
		a.event("install_bootloader failed; ignored (ignore_bootloader_failure)", "err", err.Error())
		return nil
	}
	return err
}

func (a *Agent) installBootloaderOnce(rootUUID, espUUID, bootMode string) error {
	hw := a.cfg.Hardware.Hardware()
	if len(hw.Disks) == 0 {
		return imageError("DeviceNotFound", "Error finding the disk or partition device", "machine has no disk to install a boot loader on")
	}
	dev := devPath(hw.Disks[0].Name)
	fail := func(format string, args ...any) error {
		return imageError("CommandExecutionError", "Command execution failed", format, args...)
	}
	if bootMode == "" {
		bootMode = "bios" // IPA's default target_boot_mode
	}
	noGRUB := func(why string) error {
		if rootUUID == "" || rootUUID == "0x00000000" {
			a.event("install_bootloader: not using grub2-install since root UUID is not provided; assuming a whole disk image", "device", dev, "boot_mode", bootMode)
			return nil
		}
		return fail("%s; installing GRUB into the root filesystem %s is not emulated by the ironlab agent", why, rootUUID)
	}
	if bootMode != "uefi" {
		return noGRUB("BIOS boot of " + dev)
	}
	disk, err := a.cfg.OpenDisk(hw.Disks[0])
	if err != nil {
		return fail("open %s: %v", dev, err)
	}
	defer closeDisk(disk)
	t, err := partition.Read(disk, disk.Size())
	if err != nil {
		return noGRUB(fmt.Sprintf("No EFI system partition found on %s (%v)", dev, err))
	}
	var esp *partition.Partition
	for i, p := range t.Partitions {
		isESP := (t.Kind == partition.GPT && p.Type == partition.TypeESP) || (t.Kind == partition.MBR && (p.MBRType == 0xef || (p.MBRType == partition.MBRFAT32LBA && p.Bootable)))
		named := espUUID != "" && (strings.EqualFold(espUUID, t.PartUUID(p)) || strings.EqualFold(espUUID, blockUUID(disk, t, p)))
		if named || (espUUID == "" && isESP) {
			esp = &t.Partitions[i]
			break
		}
	}
	if esp == nil {
		if espUUID != "" {
			return fail("No EFI system partition with UUID %s on %s", espUUID, dev)
		}
		return noGRUB("No EFI system partition found on " + dev)
	}
	if fsUUID(window{d: readOnly{disk}, off: esp.Start, len: esp.Size}) == "" {
		return fail("the EFI system partition %s%d has no FAT filesystem", dev, esp.Number)
	}
	e := UEFIBootEntry{Label: "ironic1", Device: fmt.Sprintf("%s%d", dev, esp.Number), PartUUID: t.PartUUID(*esp), Loader: `\EFI\BOOT\BOOTX64.EFI`}
	// efibootmgr as IPA runs it: an entry of the same label goes first.
	if err := a.cfg.Hardware.UpdateHardware(func(hw *Hardware) {
		kept := hw.UEFIBootEntries[:0:0]
		for _, old := range hw.UEFIBootEntries {
			if old.Label != e.Label {
				kept = append(kept, old)
			}
		}
		hw.UEFIBootEntries = append(kept, e)
	}); err != nil {
		return fail("register the UEFI boot entry: %v", err)
	}
	a.event("UEFI boot entry registered", "label", e.Label, "device", e.Device, "partuuid", e.PartUUID, "loader", e.Loader)
	return nil
}
