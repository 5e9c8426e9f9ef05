package fakeagent

import (
	"bufio"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"path"
	"strings"
	"time"
)

// ImageInfo is the part of Ironic's image_info the writer uses. The
// partition fields are what Ironic sends for a partition image (not a
// whole-disk one): image_type "partition", root_mb, swap_mb, ephemeral_mb,
// deploy_boot_mode and, when set in the node's capabilities, disk_label.
type ImageInfo struct {
	ID          string   `json:"id"`
	URLs        []string `json:"urls"`
	Checksum    string   `json:"checksum"`
	OSHashAlgo  string   `json:"os_hash_algo"`
	OSHashValue string   `json:"os_hash_value"`
	DiskFormat  string   `json:"disk_format"`
	NodeUUID    string   `json:"node_uuid"`

	ImageType       string  `json:"image_type"`
	RootMB          flexInt `json:"root_mb"`
	SwapMB          flexInt `json:"swap_mb"`
	EphemeralMB     flexInt `json:"ephemeral_mb"`
	EphemeralFormat string  `json:"ephemeral_format"`
	DeployBootMode  string  `json:"deploy_boot_mode"`
	DiskLabel       string  `json:"disk_label"`
	// Configdrive is where older Ironic put the config drive (IPA still
	// reads it there when the command has no configdrive parameter).
	Configdrive json.RawMessage `json:"configdrive"`
}

// flexInt is an integer Ironic may send as a number, a string or null.
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(strings.TrimSpace(string(b)), `"`)
	if s == "" || s == "null" {
		*f = 0
		return nil
	}
	var n json.Number = json.Number(s)
	v, err := n.Int64()
	if err != nil {
		return fmt.Errorf("%s is not an integer", b)
	}
	*f = flexInt(v)
	return nil
}

// isPartition: IPA writes a partition image when image_type is "partition".
func (i ImageInfo) isPartition() bool { return i.ImageType == "partition" }

// DownloadIdleTimeout aborts an image download that makes no progress for
// this long (IPA's image_download_connection_timeout is 60 s).
const DownloadIdleTimeout = 60 * time.Second

// hashByLength maps a bare checksum's hex length to its algorithm, as IPA
// guesses it.
var hashByLength = map[int]string{32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}

func newHash(algo string) (hash.Hash, bool) {
	switch algo {
	case "md5":
		return md5.New(), true
	case "sha1":
		return sha1.New(), true
	case "sha224":
		return sha256.New224(), true
	case "sha256":
		return sha256.New(), true
	case "sha384":
		return sha512.New384(), true
	case "sha512":
		return sha512.New(), true
	}
	return nil, false
}

// parseImageInfo validates image_info as IPA does: id, a non-empty urls list
// and a usable checksum (os_hash_algo + os_hash_value, or a bare sha256 /
// sha512 / md5-if-allowed checksum, or a checksum URL).
func parseImageInfo(raw json.RawMessage, md5Allowed bool) (ImageInfo, error) {
	var info ImageInfo
	if len(raw) == 0 || string(raw) == "null" {
		return info, errors.New("image_info is missing")
	}
	if err := json.Unmarshal(raw, &info); err != nil {
		return info, fmt.Errorf("image_info: %w", err)
	}
	if info.ID == "" {
		return info, errors.New("image_info is missing id")
	}
	if len(info.URLs) == 0 {
		return info, fmt.Errorf("image_info for image %s has no urls", info.ID)
	}
	for _, u := range info.URLs {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return info, fmt.Errorf("image_info for image %s: url %q is not http(s)", info.ID, u)
		}
	}
	if _, err := checksumSpec(info, md5Allowed); err != nil {
		return info, err
	}
	switch strings.ToLower(info.DiskFormat) {
	case "", "raw", "qcow2":
	default:
		return info, fmt.Errorf("image %s has disk_format %s; the ironlab agent converts raw and qcow2 images only", info.ID, info.DiskFormat)
	}
	switch info.ImageType {
	case "", "whole-disk", "partition":
	default:
		return info, fmt.Errorf("image %s: image_type %q: want partition or whole-disk", info.ID, info.ImageType)
	}
	if info.isPartition() {
		if info.RootMB <= 0 {
			return info, fmt.Errorf("image %s is a partition image without root_mb", info.ID)
		}
		if info.EphemeralMB > 0 {
			return info, fmt.Errorf("image %s asks for a %d MiB ephemeral partition: the ironlab agent does not make filesystems (mkfs.%s)", info.ID, info.EphemeralMB, orDefault(info.EphemeralFormat, "ext4"))
		}
	}
	return info, nil
}

type wantSum struct {
	algo, value string // value empty when it must be fetched from url
	url         string
}

func checksumSpec(info ImageInfo, md5Allowed bool) (wantSum, error) {
	if info.OSHashAlgo != "" || info.OSHashValue != "" {
		algo := strings.ToLower(info.OSHashAlgo)
		if _, ok := newHash(algo); !ok || info.OSHashValue == "" {
			return wantSum{}, fmt.Errorf("image %s: os_hash_algo %q with os_hash_value %q is not usable", info.ID, info.OSHashAlgo, info.OSHashValue)
		}
		if algo == "md5" && !md5Allowed {
			return wantSum{}, fmt.Errorf("image %s: md5 checksums are disabled by the driver", info.ID)
		}
		return wantSum{algo: algo, value: strings.ToLower(info.OSHashValue)}, nil
	}
	c := strings.TrimSpace(info.Checksum)
	if c == "" {
		return wantSum{}, fmt.Errorf("image %s has no checksum: set checksum or os_hash_algo and os_hash_value", info.ID)
	}
	if strings.HasPrefix(c, "http://") || strings.HasPrefix(c, "https://") {
		return wantSum{url: c}, nil
	}
	algo, value, err := bareChecksum(c)
	if err != nil {
		return wantSum{}, fmt.Errorf("image %s: %w", info.ID, err)
	}
	if algo == "md5" && !md5Allowed {
		return wantSum{}, fmt.Errorf("image %s: md5 checksums are disabled by the driver", info.ID)
	}
	return wantSum{algo: algo, value: value}, nil
}

// bareChecksum accepts "<hex>" (algorithm from its length) or "<algo>:<hex>".
func bareChecksum(c string) (string, string, error) {
	c = strings.ToLower(c)
	if algo, v, ok := strings.Cut(c, ":"); ok {
		if _, known := newHash(algo); known {
			if _, err := hex.DecodeString(v); err == nil {
				return algo, v, nil
			}
		}
	}
	if _, err := hex.DecodeString(c); err != nil {
		return "", "", fmt.Errorf("checksum %q is not hexadecimal", c)
	}
	algo, ok := hashByLength[len(c)]
	if !ok {
		return "", "", fmt.Errorf("checksum %q: no hash algorithm has %d hex digits", c, len(c))
	}
	return algo, c, nil
}

// imageError is a FAILED write with IPA's error types.
func imageError(typ, msg, format string, args ...any) *CommandError {
	return &CommandError{Type: typ, Code: 500, Message: msg, Details: fmt.Sprintf(format, args...)}
}

// writeImage writes info onto the machine's first disk as IPA does: a raw
// image streams onto the disk (or, for a partition image, into the root
// partition it makes first) while it is hashed; any other image is
// downloaded to a temporary file, verified, and converted (qcow2) or copied.
// A config drive goes into its own partition. It returns IPA's message.
func (a *Agent) writeImage(ctx context.Context, info ImageInfo, configdrive json.RawMessage) (string, error) {
	hw := a.cfg.Hardware.Hardware()
	if len(hw.Disks) == 0 {
		return "", imageError("DeviceNotFound", "Error finding the disk or partition device", "machine has no disk to write image %s to", info.ID)
	}
	target := hw.Disks[0]
	dev := devPath(target.Name)
	want, err := checksumSpec(info, a.md5OK())
	if err != nil {
		return "", imageError("InvalidCommandParamsError", "Invalid command parameters", "%v", err)
	}
	if want.value == "" {
		if want, err = a.fetchChecksum(ctx, info, want.url); err != nil {
			return "", err
		}
	}
	if len(configdrive) == 0 || string(configdrive) == "null" {
		configdrive = info.Configdrive // IPA's backward compatibility
	}
	var cd []byte
	if len(configdrive) > 0 && string(configdrive) != "null" {
		if cd, err = a.configDrive(ctx, configdrive, info.NodeUUID); err != nil {
			return "", err
		}
	}
	disk, err := a.cfg.OpenDisk(target)
	if err != nil {
		return "", imageError("ImageWriteError", "Error writing image to device", "open %s for image %s: %v", dev, info.ID, err)
	}
	defer closeDisk(disk)

	w := &imageWrite{a: a, info: info, want: want, disk: disk, dev: dev, bootMode: a.bootModeFor(info)}
	uuids, err := w.run(ctx, cd)
	if err != nil {
		return "", err
	}
	if err := disk.Sync(); err != nil {
		return "", imageError("ImageWriteError", "Error writing image to device", "sync %s after writing image %s: %v", dev, info.ID, err)
	}
	a.mu.Lock()
	a.partUUIDs = uuids
	a.mu.Unlock()
	a.event("image written", "image", info.ID, "device", dev, "bytes", w.written, "format", w.format, "image_type", orDefault(info.ImageType, "whole-disk"),
		"checksum", want.algo+":"+w.sum, "configdrive_bytes", len(cd))
	msg := fmt.Sprintf("image (%s) written to device %s root_uuid=%s", info.ID, dev, uuids["root uuid"])
	if esp, _ := uuids["efi system partition uuid"].(string); esp != "" && info.DeployBootMode == "uefi" {
		msg += " efi_system_partition_uuid=" + esp
	}
	return msg, nil
}

// bootModeFor is IPA's get_node_boot_mode: the deploy_boot_mode Ironic sent,
// else how the agent itself booted.
func (a *Agent) bootModeFor(info ImageInfo) string {
	if info.DeployBootMode == "uefi" || info.DeployBootMode == "bios" {
		return info.DeployBootMode
	}
	return a.cfg.BootMode
}

// download streams url into w (bounded by limit bytes) and returns the hex
// digest and the byte count.
func (a *Agent) download(ctx context.Context, url, algo string, w io.WriterAt, limit int64, dev string) (string, int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", 0, fmt.Errorf("GET %s: %w", url, err)
	}
	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("GET %s: status %s", url, resp.Status)
	}
	expected := resp.ContentLength
	if expected > limit {
		return "", 0, fmt.Errorf("image at %s is %d bytes, larger than %s (%d bytes)", url, expected, dev, limit)
	}
	h, _ := newHash(algo)
	tw := &throttledWriterAt{ctx: ctx, w: w, bps: func() int64 { return a.Faults().DiskWriteBytesPerSecond }}
	idle := time.AfterFunc(DownloadIdleTimeout, func() {
		cancel(fmt.Errorf("no data for %s", DownloadIdleTimeout))
	})
	defer idle.Stop()

	// Whole aligned chunks (the last one aside): FileDisk writes them
	// with O_DIRECT.
	buf, pooled := alignedMiB()
	defer alignedMiBs.Put(pooled)
	body := &idleReader{r: resp.Body, idle: idle}
	var n int64
	for {
		m, rerr := fill(body, buf)
		if m > 0 {
			if n+int64(m) > limit {
				return "", n, fmt.Errorf("image at %s is larger than %s (%d bytes)", url, dev, limit)
			}
			h.Write(buf[:m])
			if _, err := tw.WriteAt(buf[:m], n); err != nil {
				return "", n, fmt.Errorf("write image from %s to %s at offset %d: %w", url, dev, n, err)
			}
			n += int64(m)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if ctx.Err() != nil {
				rerr = context.Cause(ctx)
			}
			if expected >= 0 {
				return "", n, fmt.Errorf("short read from %s: expected %d bytes, got %d: %v", url, expected, n, rerr)
			}
			return "", n, fmt.Errorf("download from %s interrupted after %d bytes: %v", url, n, rerr)
		}
	}
	if expected >= 0 && n != expected {
		return "", n, fmt.Errorf("short read from %s: expected %d bytes, got %d", url, expected, n)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// fill reads into buf until it is full or the reader fails (io.EOF at the
// end), as io.ReadFull does but keeping the reader's own error: a
// truncated body must not pass for the end of the image.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// idleReader restarts the download's idle timer at every read that
// returns data.
type idleReader struct {
	r    io.Reader
	idle *time.Timer
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.idle.Reset(DownloadIdleTimeout)
	}
	return n, err
}

// fetchChecksum reads a checksum file (sha256sum format, or a lone hash) and
// picks the line for the image's file name.
func (a *Agent) fetchChecksum(ctx context.Context, info ImageInfo, url string) (wantSum, error) {
	fail := func(format string, args ...any) (wantSum, error) {
		return wantSum{}, imageError("ImageDownloadError", "Error downloading image", "image %s: checksum file %s: %s", info.ID, url, fmt.Sprintf(format, args...))
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fail("%v", err)
	}
	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		return fail("%v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail("status %s", resp.Status)
	}
	name := path.Base(info.URLs[0])
	var lone []string
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 1<<20))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) == 1:
			lone = append(lone, fields[0])
		case len(fields) >= 2 && strings.TrimPrefix(fields[1], "*") == name:
			algo, v, err := bareChecksum(fields[0])
			if err != nil {
				return fail("%v", err)
			}
			return wantSum{algo: algo, value: v}, nil
		}
	}
	if len(lone) == 1 {
		algo, v, err := bareChecksum(lone[0])
		if err != nil {
			return fail("%v", err)
		}
		return wantSum{algo: algo, value: v}, nil
	}
	return fail("no checksum for %s", name)
}

// diskIdentifier is what IPA reports as a whole-disk image's root uuid: the
// MBR disk signature at offset 440, as "0x%08x" (hexdump of 4 bytes).
func diskIdentifier(d Disk) string {
	var b [4]byte
	if _, err := d.ReadAt(b[:], 440); err != nil {
		return ""
	}
	return fmt.Sprintf("0x%08x", binary.LittleEndian.Uint32(b[:]))
}

func closeDisk(d Disk) {
	if c, ok := d.(io.Closer); ok {
		c.Close()
	}
}
