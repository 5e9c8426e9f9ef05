// Package pxe is the mock PXE deploy interface: the old model, before the
// agent, faithful enough that its costs show. The conductor writes a per-MAC
// boot config (iPXE script and PXELINUX file) into the lab's boot folder
// naming the deploy kernel and ramdisk, with a one-time deploy key on the
// kernel command line, and reboots the node into it. The deploy ramdisk
// (the lab's fakeagent/pxedeploy; this side of the wire is wire.go) calls
// back with pass_deploy_info, carrying the address where it exposes the
// node's disk, and the conductor ITSELF streams
// the image onto that disk: every image byte passes through the conductor
// (recorded per deploy), which the agent driver avoids.
//
// Cleaning: the old PXE driver had no agent clean steps. Here cleaning boots
// the same deploy ramdisk and, on its call-back, the conductor asks it to
// zero the disk (POST /disk/erase: one erase, no image bytes through the
// conductor) and checks that the first MiB reads as zeros.
package pxe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/store"
)

// Method is the vendor_passthru method the deploy ramdisk calls.
const Method = "pass_deploy_info"

// KindPXE is the event kind of the PXE deploy's own steps (image streamed,
// disk erased).
const KindPXE = "pxe"

// BytesDetail is the event detail field that counts the image bytes that
// went through the conductor ("image streamed" events).
const BytesDetail = "conductor_image_bytes"

// keyField is where the node's one-time deploy key is kept.
const keyField = "pxe_deploy_key"

// Config configures the PXE deploy. BootDir is required.
type Config struct {
	// BootDir is the boot folder the machines network-boot from (in a lab,
	// <state>/boot), where WriteBootConfig writes.
	BootDir string
	// APIURL is the driver API the ramdisk calls back (ipa-api-url). When
	// empty, SetAPIURL fills it in once the API listens.
	APIURL string
	// Kernel and Ramdisk name the deploy kernel and initramfs under BootDir
	// ("agent/vmlinuz", "agent/initramfs.img": the agent's ramdisk, started
	// in PXE-deploy mode by its command line).
	Kernel, Ramdisk string
	// ExtraCmdline is prepended to the kernel command line ("console=ttyS0").
	ExtraCmdline string
	// HTTPClient downloads images and talks to ramdisks (one with dial and
	// header timeouts, no proxy).
	HTTPClient *http.Client
	// StreamTimeout bounds one image stream or erase (30 min).
	StreamTimeout time.Duration
}

// Deploy is the "pxe" deploy interface.
type Deploy struct {
	cfg Config
	mu  sync.Mutex
	api string
}

var (
	_ deploy.Interface = (*Deploy)(nil)
	_ deploy.Vendor    = (*Deploy)(nil)
)

// New returns the PXE deploy interface.
func New(cfg Config) *Deploy {
	if cfg.Kernel == "" {
		cfg.Kernel = "agent/vmlinuz"
	}
	if cfg.Ramdisk == "" {
		cfg.Ramdisk = "agent/initramfs.img"
	}
	if cfg.ExtraCmdline == "" {
		cfg.ExtraCmdline = "console=ttyS0"
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			MaxIdleConnsPerHost:   64,
			ResponseHeaderTimeout: 60 * time.Second,
		}}
	}
	if cfg.StreamTimeout <= 0 {
		cfg.StreamTimeout = 30 * time.Minute
	}
	return &Deploy{cfg: cfg, api: strings.TrimRight(cfg.APIURL, "/")}
}

// SetAPIURL tells the interface where the API listens, unless Config.APIURL
// named it already.
func (d *Deploy) SetAPIURL(u string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg.APIURL == "" {
		d.api = strings.TrimRight(u, "/")
	}
}

func (d *Deploy) apiURL() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.api
}

// Name is "pxe".
func (d *Deploy) Name() string { return "pxe" }

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

// ValidateDeploy needs instance_info.image_source (an http(s) URL) and a
// checksum: image_checksum (md5), or image_os_hash_algo + image_os_hash_value.
func (d *Deploy) ValidateDeploy(n *store.Node) error {
	if d.cfg.BootDir == "" {
		return errors.New("the PXE deploy has no boot folder configured")
	}
	src := imageURL(n)
	if src == "" {
		return errors.New("missing instance_info.image_source")
	}
	if !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
		return fmt.Errorf("instance_info.image_source %q is not an http(s) URL", src)
	}
	if _, _, err := expectedSum(n); err != nil {
		return err
	}
	if f := str(n.InstanceInfo, "image_disk_format"); f != "" && !strings.EqualFold(f, "raw") {
		return fmt.Errorf("instance_info.image_disk_format is %s: the PXE deploy writes the image to the disk as it is downloaded, so only raw images; deploy %s images with an agent class (agent_*), whose agent converts them", f, f)
	}
	return nil
}

func imageURL(n *store.Node) string {
	if u := str(n.InstanceInfo, "image_url"); u != "" {
		return u
	}
	return str(n.InstanceInfo, "image_source")
}

// expectedSum is the checksum to verify: os_hash (sha256, sha512, md5) first,
// else image_checksum (md5).
func expectedSum(n *store.Node) (algo, value string, err error) {
	if a, v := str(n.InstanceInfo, "image_os_hash_algo"), str(n.InstanceInfo, "image_os_hash_value"); a != "" && v != "" {
		if newHash(a) == nil {
			return "", "", fmt.Errorf("instance_info.image_os_hash_algo %q is not supported (sha256, sha512, md5)", a)
		}
		return a, strings.ToLower(v), nil
	}
	if c := str(n.InstanceInfo, "image_checksum"); c != "" {
		return "md5", strings.ToLower(c), nil
	}
	return "", "", errors.New("missing instance_info.image_checksum (or image_os_hash_algo and image_os_hash_value)")
}

func newHash(algo string) hash.Hash {
	switch algo {
	case "sha256":
		return sha256.New()
	case "sha512":
		return sha512.New()
	case "md5":
		return md5.New()
	}
	return nil
}

// Deploy writes the boot config and reboots the node into the deploy ramdisk.
func (d *Deploy) Deploy(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	return d.bootRamdisk(ctx, t)
}

// PrepareCleaning boots the deploy ramdisk too: its call-back erases the disk.
func (d *Deploy) PrepareCleaning(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	return d.bootRamdisk(ctx, t)
}

// TearDown removes any boot config and powers the node off.
func (d *Deploy) TearDown(ctx context.Context, t deploy.Task) error {
	if err := d.removeBootConfig(t); err != nil {
		return err
	}
	return t.SetPower(ctx, power.Off)
}

// Continue does nothing: the deploy ramdisk does not heartbeat; its
// pass_deploy_info (VendorPassthru) is the call-back.
func (d *Deploy) Continue(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	return deploy.Wait(), nil
}

// bootRamdisk saves a new deploy key, then writes the boot config and boots
// the node into the deploy ramdisk.
func (d *Deploy) bootRamdisk(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
	n := t.Node()
	if d.cfg.BootDir == "" {
		return deploy.Outcome{}, errors.New("the PXE deploy has no boot folder configured")
	}
	api := d.apiURL()
	if api == "" {
		return deploy.Outcome{}, errors.New("the PXE deploy does not know the API URL the deploy ramdisk calls back")
	}
	if len(t.Ports()) == 0 {
		return deploy.Outcome{}, fmt.Errorf("node %s has no ports: nothing to write a PXE boot config for", n.UUID)
	}
	key := rand.Text()
	n.DriverInternalInfo[keyField] = key
	// The key is on disk before the ramdisk that carries it boots.
	return deploy.Saved(func(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
		if err := d.writeBootConfig(ctx, t, api, key); err != nil {
			return deploy.Outcome{}, err
		}
		if err := deploy.BootIntoRamdisk(ctx, t); err != nil {
			return deploy.Outcome{}, err
		}
		return deploy.Next(states.EvWait, nil), nil
	}), nil
}

func (d *Deploy) writeBootConfig(ctx context.Context, t deploy.Task, api, key string) error {
	n := t.Node()
	for _, p := range t.Ports() {
		dashed, err := dashedMAC(p.Address)
		if err != nil {
			return fmt.Errorf("port %s of node %s: %w", p.UUID, n.UUID, err)
		}
		e := BootConfig{Kernel: d.cfg.Kernel, Initrd: d.cfg.Ramdisk, Cmdline: DeployCmdline(d.cfg.ExtraCmdline, api, n.UUID, key, dashed)}
		if err := WriteBootConfig(d.cfg.BootDir, p.Address, e); err != nil {
			return fmt.Errorf("write PXE boot config of node %s for MAC %s: %w", n.UUID, p.Address, err)
		}
	}
	t.Record(ctx, KindPXE, "boot config written", "", map[string]any{"boot_dir": d.cfg.BootDir, "kernel": d.cfg.Kernel, "ramdisk": d.cfg.Ramdisk})
	return nil
}

func (d *Deploy) removeBootConfig(t deploy.Task) error {
	if d.cfg.BootDir == "" {
		return nil
	}
	for _, p := range t.Ports() {
		if err := RemoveBootConfig(d.cfg.BootDir, p.Address); err != nil {
			return fmt.Errorf("remove PXE boot config of node %s for MAC %s: %w", t.Node().UUID, p.Address, err)
		}
	}
	return nil
}

// callback is pass_deploy_info's body.
type callback struct {
	Address string `json:"address"`
	Key     string `json:"key"`
	// Error is set by a ramdisk that could not prepare the disk.
	Error string `json:"error"`
}

func parseCallback(body []byte) (callback, error) {
	var cb callback
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&cb); err != nil {
		return cb, fmt.Errorf("the body is not a JSON object with \"address\" and \"key\": %v", err)
	}
	return cb, nil
}

// VendorValidate accepts only pass_deploy_info from a node waiting for its
// ramdisk, with the node's current deploy key and an http(s) address.
func (d *Deploy) VendorValidate(n *store.Node, method string, body []byte) error {
	if method != Method {
		return fmt.Errorf("unsupported method (%s); the PXE deploy serves %s", method, Method)
	}
	cb, err := parseCallback(body)
	if err != nil {
		return err
	}
	return checkCallback(n, cb, false)
}

// checkCallback checks a call-back against the node. A fast ramdisk may
// call while the conductor still holds the node in deploying or cleaning
// (it saved the key before powering on): the API accepts that state, and
// the node's lock answers 409 until it waits, which the ramdisk retries.
// Under the lock (strict), only the wait states will do.
func checkCallback(n *store.Node, cb callback, strict bool) error {
	switch n.ProvisionState {
	case states.DeployWait, states.CleanWait:
	case states.Deploying, states.Cleaning:
		if strict {
			return fmt.Errorf("node %s is still in state %q", n.UUID, n.ProvisionState)
		}
	default:
		return fmt.Errorf("node %s is in state %q, not waiting for a deploy ramdisk call-back", n.UUID, n.ProvisionState)
	}
	want := str(n.DriverInternalInfo, keyField)
	if cb.Key == "" {
		return errors.New(`missing parameter "key"`)
	}
	if want == "" || cb.Key != want {
		return errors.New("deploy key does not match")
	}
	if cb.Error != "" {
		return nil
	}
	u, err := url.Parse(cb.Address)
	if cb.Address == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("parameter \"address\" %q is not an http(s) URL", cb.Address)
	}
	return nil
}

// VendorPassthru is the call-back: it streams the image (wait call-back) or
// erases the disk (clean wait) through the ramdisk's address.
func (d *Deploy) VendorPassthru(ctx context.Context, t deploy.Task, method string, body []byte) (deploy.Outcome, error) {
	n := t.Node()
	cb, err := parseCallback(body)
	if err == nil {
		err = checkCallback(n, cb, true) // the node may have moved on since the API accepted the call
	}
	if err != nil {
		t.Logger().Warn("stale pass_deploy_info ignored", "err", err)
		return deploy.Wait(), nil
	}
	t.Record(ctx, KindPXE, Method, "", map[string]any{"address": cb.Address, "error": cb.Error})
	wasClean := n.ProvisionState == states.CleanWait
	return deploy.Next(states.EvResume, func(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
		if cb.Error != "" {
			return d.fail(t, wasClean, fmt.Sprintf("Deploy ramdisk of node %s reported an error: %s", n.UUID, cb.Error))
		}
		if wasClean {
			return d.clean(t, cb.Address)
		}
		sctx, cancel := context.WithTimeout(ctx, d.cfg.StreamTimeout)
		defer cancel()
		return d.deployImage(sctx, t, cb.Address)
	}), nil
}

func (d *Deploy) fail(t deploy.Task, clean bool, msg string) (deploy.Outcome, error) {
	n := t.Node()
	if err := d.removeBootConfig(t); err != nil {
		t.Logger().Warn("remove boot config", "err", err)
	}
	delete(n.DriverInternalInfo, keyField)
	if clean {
		n.CleanStep, n.CleanPlan = nil, nil
	}
	return deploy.Failed(msg), nil
}

// countingHash hashes and counts what streams through it.
type countingHash struct {
	hashes []hash.Hash
	n      int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	for _, h := range c.hashes {
		h.Write(p)
	}
	c.n += int64(len(p))
	return len(p), nil
}

func (d *Deploy) deployImage(ctx context.Context, t deploy.Task, address string) (deploy.Outcome, error) {
	n := t.Node()
	start := time.Now()
	src := imageURL(n)
	algo, want, err := expectedSum(n)
	if err != nil {
		return d.fail(t, false, fmt.Sprintf("Cannot deploy node %s: %v", n.UUID, err))
	}
	key := str(n.DriverInternalInfo, keyField)
	streamed, written := sha256.New(), newHash(algo)
	ch := &countingHash{hashes: []hash.Hash{streamed}}
	if algo != "sha256" {
		ch.hashes = append(ch.hashes, written)
	} else {
		written = streamed
	}
	serr := d.stream(ctx, src, address, key, ch)
	detail := map[string]any{BytesDetail: ch.n, "image": src, "address": address, "duration_s": time.Since(start).Seconds()}
	if serr != nil {
		detail["error"] = serr.Error()
	}
	t.Record(ctx, KindPXE, "image streamed", fmt.Sprintf("%d bytes", ch.n), detail)
	if serr != nil {
		return d.fail(t, false, fmt.Sprintf("Failed to deploy node %s: %v", n.UUID, serr))
	}
	if got := hex.EncodeToString(written.Sum(nil)); got != want {
		return d.fail(t, false, fmt.Sprintf("Image checksum mismatch for node %s: %s of %s is %s, expected %s (%d bytes streamed)", n.UUID, algo, src, got, want, ch.n))
	}
	onDisk, err := d.diskSHA256(ctx, address, key, ch.n)
	if err != nil {
		return d.fail(t, false, fmt.Sprintf("Failed to verify the disk of node %s: %v", n.UUID, err))
	}
	if sent := hex.EncodeToString(streamed.Sum(nil)); onDisk != sent {
		return d.fail(t, false, fmt.Sprintf("The disk of node %s does not hold what was written: sha256 of its first %d bytes is %s, the stream's is %s", n.UUID, ch.n, onDisk, sent))
	}
	if err := d.removeBootConfig(t); err != nil {
		return d.fail(t, false, err.Error())
	}
	delete(n.DriverInternalInfo, keyField)
	if err := t.SetBootDevice(ctx, power.Disk, true); err != nil {
		return d.fail(t, false, err.Error())
	}
	// Ironic's reboot is off, then on.
	if err := t.SetPower(ctx, power.Off); err != nil {
		return d.fail(t, false, err.Error())
	}
	if err := t.SetPower(ctx, power.On); err != nil {
		return d.fail(t, false, err.Error())
	}
	return deploy.Next(states.EvDone, nil), nil
}

// qcow2Magic is the first four bytes of every qcow2 image ("QFI\xfb").
var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// stream downloads src and PUTs it to the ramdisk's disk, hashing on the way.
func (d *Deploy) stream(ctx context.Context, src, address, key string, sink io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return fmt.Errorf("download image %s: %w", src, err)
	}
	resp, err := d.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("download image %s: %w", src, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("download image %s: HTTP %d %s", src, resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	// A qcow2 file written raw would be a disk no one can boot, with its
	// checksum right: refuse it by its magic, whatever instance_info says.
	body := bufio.NewReader(resp.Body)
	if head, _ := body.Peek(len(qcow2Magic)); bytes.Equal(head, qcow2Magic) {
		return fmt.Errorf("image %s is qcow2 (its first bytes are qcow2's magic): the PXE deploy writes images raw; convert it (qemu-img convert -O raw) or deploy it with an agent class (agent_*)", src)
	}
	put, err := http.NewRequestWithContext(ctx, http.MethodPut, strings.TrimRight(address, "/")+"/disk", io.TeeReader(body, sink))
	if err != nil {
		return fmt.Errorf("write image to %s: %w", address, err)
	}
	put.ContentLength = resp.ContentLength
	put.Header.Set(KeyHeader, key)
	put.Header.Set("Content-Type", "application/octet-stream")
	presp, err := d.cfg.HTTPClient.Do(put)
	if err != nil {
		return fmt.Errorf("write image %s to the deploy ramdisk at %s: %w", src, address, err)
	}
	defer presp.Body.Close()
	var res struct {
		Written int64  `json:"written"`
		Error   string `json:"error"`
	}
	_ = json.NewDecoder(io.LimitReader(presp.Body, 4096)).Decode(&res)
	if presp.StatusCode != http.StatusOK {
		return fmt.Errorf("write image %s to the deploy ramdisk at %s: HTTP %d %s", src, address, presp.StatusCode, res.Error)
	}
	return nil
}

func (d *Deploy) ramdiskJSON(ctx context.Context, method, u, key string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set(KeyHeader, key)
	resp, err := d.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: HTTP %d %s", method, u, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	return nil
}

func (d *Deploy) diskSHA256(ctx context.Context, address, key string, length int64) (string, error) {
	var res struct {
		SHA256 string `json:"sha256"`
	}
	u := fmt.Sprintf("%s/disk/sha256?length=%d", strings.TrimRight(address, "/"), length)
	if err := d.ramdiskJSON(ctx, http.MethodGet, u, key, &res); err != nil {
		return "", err
	}
	return res.SHA256, nil
}

// zeroMiB is the sha256 of 1 MiB of zeros: an erased disk's first MiB.
var zeroMiB = func() string {
	s := sha256.Sum256(make([]byte, 1<<20))
	return hex.EncodeToString(s[:])
}()

// clean erases the disk through the ramdisk and ends cleaning.
func (d *Deploy) clean(t deploy.Task, address string) (deploy.Outcome, error) {
	n := t.Node()
	manual := n.CleanPlan != nil && n.CleanPlan.Manual
	if manual {
		// The erase is the only thing this ramdisk can do.
		for _, s := range n.CleanPlan.Requested {
			if s.Interface != "deploy" || (s.Step != "erase_devices" && s.Step != "erase_devices_metadata") {
				return d.fail(t, true, fmt.Sprintf("Clean step %s is not supported by the PXE deploy of node %s: it only erases the disk (deploy.erase_devices, deploy.erase_devices_metadata)",
					s.String(), n.UUID))
			}
		}
	}
	n.CleanStep = &store.Step{Interface: "deploy", Step: "erase_devices", Priority: 10}
	// The step is on disk before the erase.
	return deploy.Saved(func(ctx context.Context, t deploy.Task) (deploy.Outcome, error) {
		return d.erase(ctx, t, address, manual)
	}), nil
}

func (d *Deploy) erase(ctx context.Context, t deploy.Task, address string, manual bool) (deploy.Outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StreamTimeout)
	defer cancel()
	n := t.Node()
	key := str(n.DriverInternalInfo, keyField)
	start := time.Now()
	var res struct {
		Erased int64 `json:"erased"`
	}
	err := d.ramdiskJSON(ctx, http.MethodPost, strings.TrimRight(address, "/")+"/disk/erase", key, &res)
	if err == nil {
		var sum string
		sum, err = d.diskSHA256(ctx, address, key, min(res.Erased, 1<<20))
		if err == nil && res.Erased >= 1<<20 && sum != zeroMiB {
			err = errors.New("the first MiB of the disk is not zero after the erase")
		}
	}
	detail := map[string]any{"erased_bytes": res.Erased, "address": address, "duration_s": time.Since(start).Seconds()}
	if err != nil {
		detail["error"] = err.Error()
	}
	t.Record(ctx, KindPXE, "disk erased", "", detail)
	if err != nil {
		return d.fail(t, true, fmt.Sprintf("Failed to erase the disk of node %s through its deploy ramdisk: %v", n.UUID, err))
	}
	if err := d.removeBootConfig(t); err != nil {
		return d.fail(t, true, err.Error())
	}
	delete(n.DriverInternalInfo, keyField)
	n.CleanStep, n.CleanPlan = nil, nil
	if err := t.SetPower(ctx, power.Off); err != nil {
		return d.fail(t, true, err.Error())
	}
	if manual {
		return deploy.Next(states.EvManage, nil), nil
	}
	return deploy.Next(states.EvDone, nil), nil
}
