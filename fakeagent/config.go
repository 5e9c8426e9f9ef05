package fakeagent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Dialect is the lookup/heartbeat protocol an agent speaks to the driver API.
type Dialect string

const (
	// DialectV1 is the modern API (Newton+): GET /v1/lookup and
	// POST /v1/heartbeat/{uuid} with agent tokens and microversions.
	DialectV1 Dialect = "v1"
	// DialectLegacy is the spec's vendor_passthru pair (Juno/Kilo):
	// POST /v1/drivers/{driver}/vendor_passthru/lookup and
	// POST /v1/nodes/{uuid}/vendor_passthru/heartbeat. No tokens.
	DialectLegacy Dialect = "legacy"
)

// Defaults, IPA-like.
const (
	DefaultLookupInterval        = time.Second
	DefaultHeartbeatErrorBackoff = 5 * time.Second
	DefaultForcedHeartbeatGap    = 5 * time.Second
	DefaultHeartbeatTimeout      = 300 * time.Second
	DefaultDriver                = "agent_ipmitool"
	DefaultListen                = "127.0.0.1:9999"
)

// Config is what one agent needs. Hardware is required; APIURL too.
type Config struct {
	// APIURL is the driver API's base URL, e.g. http://127.0.0.1:6385.
	APIURL string
	// Dialect selects the lookup/heartbeat protocol (default v1).
	Dialect Dialect
	// Driver is the driver name in the legacy lookup URL (default agent_ipmitool).
	Driver string
	// AdvertiseURL is the agent_url/callback_url sent with heartbeats in
	// standalone mode, e.g. http://127.0.0.1:9999. Ignored when Mux is set.
	AdvertiseURL string
	// Mux, when set, serves this agent under /<node-uuid> and gives its URL.
	Mux *Mux
	// Totals, when set, counts this agent's lookups and heartbeats with
	// those of every other agent given the same Totals (a lab's agents,
	// over every boot); unset, the agent counts into its own.
	Totals *Totals
	// NodeUUID, when known (ipa-node-uuid), is sent with the lookup.
	NodeUUID string
	// AgentToken, when known before lookup (ipa-agent-token: Ironic puts it
	// on a virtual media ISO's command line and then hands none out at
	// lookup), is sent with every heartbeat.
	AgentToken string
	// DisableAutoTLS keeps the API on plain http even when the driver API
	// supports agent_verify_ca (IPA's enable_auto_tls = False), for drivers
	// that cannot verify an https agent.
	DisableAutoTLS bool

	// Hardware is the machine the agent runs on; clean steps change it.
	Hardware HardwareState
	// OpenDisk opens a machine disk for I/O. Default: OpenFileDisk(d.Path),
	// or /dev/<name> when Path is empty (inside a VM).
	OpenDisk func(d BlockDevice) (Disk, error)
	// PowerOff is called (in its own goroutine) when standby.power_off
	// completes; in the lab the machine powers off. Either way Run then
	// returns ErrPoweredOff.
	PowerOff func(ctx context.Context) error
	// Reboot is called (in its own goroutine) when standby.run_image
	// completes: the machine reboots into its disk, and Run returns
	// ErrRebooted. Without it run_image fails.
	Reboot func(ctx context.Context) error
	// ImageCacheDir is where non-raw images are downloaded before they are
	// converted, as IPA uses /tmp (default os.TempDir()).
	ImageCacheDir string
	// BootMode is reported as boot.current_boot_mode: "uefi" (default) or "bios".
	BootMode string
	// Hostname is reported in the inventory (default "ironlab-<first MAC>").
	Hostname string

	// LookupInterval is the pause between lookup attempts (default 1 s).
	LookupInterval time.Duration
	// HeartbeatErrorBackoff is the base of the pause after a failed heartbeat,
	// multiplied by U(1,2) as IPA does (default 5 s).
	HeartbeatErrorBackoff time.Duration
	// ForcedHeartbeatGap is the least time between heartbeats forced by a
	// finished async command (default 5 s).
	ForcedHeartbeatGap time.Duration
	// RequestTimeout bounds each lookup/heartbeat call (default 30 s).
	RequestTimeout time.Duration

	// Faults are the initial fault knobs (see Agent.SetFaults).
	Faults Faults
	// HTTPClient is used for API calls and downloads (default: a shared
	// client with dial and header timeouts).
	HTTPClient *http.Client
	// Logger receives the agent's logs (default slog.Default()).
	Logger *slog.Logger
	// Console, when set, is the machine's console: it gets MaskedTokenLine
	// when a lookup finds the agent token handed out already and the agent
	// holds none (IPA's warning on a real ramdisk's console).
	Console io.Writer
}

func (c *Config) setDefaults() error {
	if c.Totals == nil {
		c.Totals = new(Totals)
	}
	if c.APIURL == "" {
		return errors.New("fakeagent: config: APIURL is required")
	}
	if _, err := url.Parse(c.APIURL); err != nil {
		return fmt.Errorf("fakeagent: config: APIURL %q: %w", c.APIURL, err)
	}
	c.APIURL = strings.TrimRight(c.APIURL, "/")
	switch c.Dialect {
	case "":
		c.Dialect = DialectV1
	case DialectV1, DialectLegacy:
	default:
		return fmt.Errorf("fakeagent: config: dialect %q: want %q or %q", c.Dialect, DialectV1, DialectLegacy)
	}
	if c.Driver == "" {
		c.Driver = DefaultDriver
	}
	if c.Hardware == nil {
		return errors.New("fakeagent: config: Hardware is required")
	}
	if c.Mux == nil && c.AdvertiseURL == "" {
		return errors.New("fakeagent: config: AdvertiseURL is required without a Mux")
	}
	c.AdvertiseURL = strings.TrimRight(c.AdvertiseURL, "/")
	if c.OpenDisk == nil {
		c.OpenDisk = defaultOpenDisk
	}
	if c.ImageCacheDir == "" {
		c.ImageCacheDir = os.TempDir()
	}
	if c.BootMode == "" {
		c.BootMode = "uefi"
	}
	if c.LookupInterval <= 0 {
		c.LookupInterval = DefaultLookupInterval
	}
	if c.HeartbeatErrorBackoff <= 0 {
		c.HeartbeatErrorBackoff = DefaultHeartbeatErrorBackoff
	}
	if c.ForcedHeartbeatGap <= 0 {
		c.ForcedHeartbeatGap = DefaultForcedHeartbeatGap
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 30 * time.Second
	}
	if c.HTTPClient == nil {
		c.HTTPClient = sharedClient
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c.Faults.Validate()
}

func defaultOpenDisk(d BlockDevice) (Disk, error) {
	p := d.Path
	if p == "" {
		p = devPath(d.Name)
	}
	return OpenFileDisk(p)
}

func devPath(name string) string {
	if strings.HasPrefix(name, "/") {
		return name
	}
	return "/dev/" + name
}

// sharedClient serves every in-process agent: thousands of agents share its
// connection pool to the one driver API instead of one pool each. At most
// MaxConnsPerHost requests to one host (the driver API, the image server)
// are on the wire at once, the others wait for a connection: each one is
// two descriptors of the lab process (both ends) and a download a third
// (the image file), and 10,000 agents deploying at once ran the lab out of
// its 20,000 (the image server answered 500 to a quarter of the deploys).
var sharedClient = &http.Client{Transport: &http.Transport{
	Proxy:                 nil, // the lab is loopback only; never go through a proxy
	DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	MaxIdleConns:          512,
	MaxIdleConnsPerHost:   128,
	MaxConnsPerHost:       256,
	IdleConnTimeout:       90 * time.Second,
	ResponseHeaderTimeout: 60 * time.Second,
}}

// CmdlineConfig is what a ramdisk /init learns from the kernel command line.
// Hardware, disks and power-off behaviour come from the running system and
// are the caller's to fill in.
type CmdlineConfig struct {
	Config
	// BootMAC is the MAC of the interface the machine network-booted from
	// (BOOTIF=01-aa-bb-..), reported as boot.pxe_interface.
	BootMAC string
}

// IPAOptions are the options every ramdisk of the lab (the agent and the
// PXE deploy ramdisk) reads from the kernel command line as IPA does.
type IPAOptions struct {
	APIURL   string // ipa-api-url
	NodeUUID string // ipa-node-uuid
	// AgentToken is ipa-agent-token (virtual media boots).
	AgentToken string
	BootMAC    string // BOOTIF, as aa:bb:cc:dd:ee:ff
	// AdvertiseHost, AdvertisePort (default 9999) and AdvertiseProtocol
	// (default http) say where the ramdisk's API is reached.
	AdvertiseHost, AdvertisePort, AdvertiseProtocol string
}

// AdvertiseURL is the ramdisk's API URL as the conductor reaches it, or ""
// without ipa-advertise-host.
func (o IPAOptions) AdvertiseURL() string {
	if o.AdvertiseHost == "" {
		return ""
	}
	return o.AdvertiseProtocol + "://" + net.JoinHostPort(o.AdvertiseHost, o.AdvertisePort)
}

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$`)

// ParseIPAOptions reads IPA's options from a kernel command line (dashes
// or underscores); every other key=value word goes to other, which may
// refuse it with an error. Words without "=" are ignored: the kernel
// command line carries everybody's options.
func ParseIPAOptions(cmdline string, other func(key, val string) error) (IPAOptions, error) {
	o := IPAOptions{AdvertisePort: "9999", AdvertiseProtocol: "http"}
	for _, word := range strings.Fields(cmdline) {
		key, val, ok := strings.Cut(word, "=")
		if !ok {
			continue
		}
		val = strings.Trim(val, `"'`)
		switch strings.ReplaceAll(key, "_", "-") {
		case "ipa-api-url":
			if u, err := url.Parse(val); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return o, fmt.Errorf("kernel command line: %s=%q is not an http(s) URL", key, val)
			}
			o.APIURL = val
		case "ipa-node-uuid":
			o.NodeUUID = val
		case "ipa-agent-token":
			o.AgentToken = val
		case "ipa-advertise-host":
			if net.ParseIP(val) == nil && !hostnameRE.MatchString(val) {
				return o, fmt.Errorf("kernel command line: %s=%q is not an IP address or host name", key, val)
			}
			o.AdvertiseHost = val
		case "ipa-advertise-port":
			if n, err := strconv.Atoi(val); err != nil || n <= 0 || n > 65535 {
				return o, fmt.Errorf("kernel command line: %s=%q is not a port", key, val)
			}
			o.AdvertisePort = val
		case "ipa-advertise-protocol":
			if val != "http" && val != "https" {
				return o, fmt.Errorf("kernel command line: %s=%q: want http or https", key, val)
			}
			o.AdvertiseProtocol = val
		case "BOOTIF":
			// PXELINUX/iPXE form: 01-52-54-00-12-34-56 (01 = Ethernet).
			mac := strings.ToLower(strings.ReplaceAll(val, "-", ":"))
			if strings.HasPrefix(mac, "01:") && len(mac) == 20 {
				mac = mac[3:]
			}
			if _, err := net.ParseMAC(mac); err != nil {
				return o, fmt.Errorf("kernel command line: BOOTIF=%q: %w", val, err)
			}
			o.BootMAC = mac
		default:
			if other != nil {
				if err := other(key, val); err != nil {
					return o, err
				}
			}
		}
	}
	return o, nil
}

// ConfigFromCmdline parses a kernel command line the way IPA reads its
// options: ipa-api-url, ipa-advertise-host, ipa-advertise-port (default
// 9999), ipa-advertise-protocol (default http), ipa-node-uuid,
// ipa-lookup-interval (seconds), ipa-agent-token (a pregenerated token),
// ipa-enable-auto-tls (default true; IPA reads enable_auto_tls from its
// configuration file only), BOOTIF, and ironlab's own
// ironlab.dialect, ironlab.driver, ironlab.heartbeat-error-backoff (Go
// duration) and ironlab.faults (base64 of the faults' JSON). Unknown words are
// ignored: the kernel command line carries everybody's options.
func ConfigFromCmdline(cmdline string) (CmdlineConfig, error) {
	var c CmdlineConfig
	o, err := ParseIPAOptions(cmdline, func(key, val string) error {
		switch key {
		case "ipa-lookup-interval", "ipa_lookup_interval":
			n, err := strconv.ParseFloat(val, 64)
			if err != nil || !(n > 0 && n <= 86400) { // also NaN
				return fmt.Errorf("kernel command line: %s=%q is not a positive number of seconds (at most a day)", key, val)
			}
			c.LookupInterval = time.Duration(n * float64(time.Second))
		case "ironlab.dialect":
			c.Dialect = Dialect(val)
			if c.Dialect != DialectV1 && c.Dialect != DialectLegacy {
				return fmt.Errorf("kernel command line: ironlab.dialect=%q: want v1 or legacy", val)
			}
		case "ironlab.driver":
			c.Driver = val
		case "ipa-enable-auto-tls", "ipa_enable_auto_tls":
			on, err := strconv.ParseBool(val)
			if err != nil {
				return fmt.Errorf("kernel command line: %s=%q is not a boolean", key, val)
			}
			c.DisableAutoTLS = !on
		case "ironlab.heartbeat-error-backoff":
			d, err := time.ParseDuration(val)
			if err == nil && d <= 0 {
				err = errors.New("not positive")
			}
			if err != nil {
				return fmt.Errorf("kernel command line: ironlab.heartbeat-error-backoff=%q: %w", val, err)
			}
			c.HeartbeatErrorBackoff = d
		case "ironlab.faults":
			raw, err := base64.StdEncoding.DecodeString(val)
			if err != nil {
				raw, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(val, "="))
			}
			if err != nil {
				return fmt.Errorf("kernel command line: ironlab.faults is not base64: %w", err)
			}
			f, err := ParseFaults(raw)
			if err != nil {
				return fmt.Errorf("kernel command line: ironlab.faults: %w", err)
			}
			c.Faults = f
		}
		return nil
	})
	if err != nil {
		return c, err
	}
	c.APIURL, c.NodeUUID, c.BootMAC, c.AgentToken = o.APIURL, o.NodeUUID, o.BootMAC, o.AgentToken
	if c.APIURL == "" {
		return c, errors.New("kernel command line: ipa-api-url is missing")
	}
	if o.AdvertiseHost == "" {
		return c, errors.New("kernel command line: ipa-advertise-host is missing")
	}
	c.AdvertiseURL = o.AdvertiseURL()
	return c, nil
}
