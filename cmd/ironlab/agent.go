package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/ironlab/ironlab/fakeagent"
)

func init() {
	register("agent", "run one fake Ironic Python Agent against a driver API", agentCmd)
}

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func agentCmd(args []string) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	apiURL := fs.String("api-url", "", "driver API base URL, e.g. http://127.0.0.1:6385 (required)")
	dialect := fs.String("dialect", "v1", `lookup/heartbeat protocol: "v1" (GET /v1/lookup, tokens) or "legacy" (vendor_passthru)`)
	driverName := fs.String("driver", fakeagent.DefaultDriver, "driver name in the legacy lookup URL")
	listen := fs.String("listen", fakeagent.DefaultListen, "address the agent's REST API listens on")
	advertise := fs.String("advertise-url", "", "agent_url sent with heartbeats (default: http://<listen>)")
	diskPath := fs.String("disk", "", "file or block device that images are written to and clean steps erase")
	var macs multiFlag
	fs.Var(&macs, "mac", "MAC address of a NIC, used for lookup (repeatable; at least one)")
	nodeUUID := fs.String("node-uuid", "", "node UUID to send with the lookup (optional)")
	errBackoff := fs.Duration("heartbeat-error-backoff", fakeagent.DefaultHeartbeatErrorBackoff, "base pause after a failed heartbeat (x U(1,2), as IPA)")
	lookupInterval := fs.Duration("lookup-interval", fakeagent.DefaultLookupInterval, "pause between lookup attempts")
	autoTLS := fs.Bool("enable-auto-tls", true, "serve https with a generated certificate and send it as agent_verify_ca when the driver API is >= 1.68 (IPA's enable_auto_tls); false keeps plain http for drivers that cannot verify it")
	agentToken := fs.String("agent-token", "", "pregenerated agent token (IPA's ipa-agent-token), at least 32 characters")
	faultsJSON := fs.String("faults", "", `fault knobs as JSON, e.g. '{"stop_heartbeats": {"after": 3}}'`)
	verbose := fs.Bool("v", false, "debug logging")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: ironlab agent --api-url URL --mac MAC [--disk FILE] [flags]

Runs one fake Ironic Python Agent: looks its node up by MAC in the driver
API, heartbeats with its agent_url, and serves IPA's REST API
(/v1/status, /v1/commands) on --listen: over https with a self-signed
certificate (sent as agent_verify_ca) when the driver API is 1.68 or
later, as IPA's auto-TLS does, unless --enable-auto-tls=false. Images are written to --disk and
clean steps erase it. It runs until SIGINT/SIGTERM, or until the driver
sends standby.power_off (exit status 0).

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "ironlab agent: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *apiURL == "" || len(macs) == 0 {
		fmt.Fprintln(os.Stderr, "ironlab agent: --api-url and at least one --mac are required")
		fs.Usage()
		return 2
	}
	hw, err := standaloneHardware(macs, *diskPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ironlab agent: %v\n", err)
		return 2
	}
	var faults fakeagent.Faults
	if *faultsJSON != "" {
		if faults, err = fakeagent.ParseFaults([]byte(*faultsJSON)); err != nil {
			fmt.Fprintf(os.Stderr, "ironlab agent: --faults: %v\n", err)
			return 2
		}
	}
	if *agentToken != "" && len(*agentToken) < 32 {
		fmt.Fprintf(os.Stderr, "ironlab agent: --agent-token is %d characters; IPA ignores tokens shorter than 32\n", len(*agentToken))
		return 2
	}
	if *advertise == "" {
		*advertise = "http://" + *listen
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	a, err := fakeagent.New(fakeagent.Config{
		APIURL:                *apiURL,
		Dialect:               fakeagent.Dialect(*dialect),
		Driver:                *driverName,
		AdvertiseURL:          *advertise,
		NodeUUID:              *nodeUUID,
		AgentToken:            *agentToken,
		DisableAutoTLS:        !*autoTLS,
		Hardware:              fakeagent.NewMemHardware(hw),
		LookupInterval:        *lookupInterval,
		HeartbeatErrorBackoff: *errBackoff,
		Faults:                faults,
		Logger:                logger,
		Console:               os.Stderr, // a VM's serial console, as the log is
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ironlab agent: %v\n", err)
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ironlab agent: listen on %s: %v\n", *listen, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if ln, err = a.AutoTLS(ctx, ln); err != nil {
		fmt.Fprintf(os.Stderr, "ironlab agent: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: a, ReadHeaderTimeout: 30 * time.Second}
	logger.Info("agent API listening", "listen", ln.Addr().String(), "advertise", a.AgentURL(), "api", *apiURL, "dialect", *dialect)
	err = fakeagent.ServeWhile(ctx, srv, ln, a.Run)
	switch {
	case errors.Is(err, fakeagent.ErrPoweredOff):
		logger.Info("powered off by standby.power_off")
		return 0
	case errors.Is(err, fakeagent.ErrRescued):
		logger.Info("rescue finalized by rescue.finalize_rescue; the API is stopped", "rescue_password_hash", a.State().RescuePasswordHash)
		return 0
	case errors.Is(err, fakeagent.ErrRebooted):
		logger.Error("standby.run_image: this standalone agent cannot reboot its host")
		return 1
	case err != nil:
		fmt.Fprintf(os.Stderr, "ironlab agent: %v\n", err)
		return 1
	}
	return 0
}

// standaloneHardware describes the machine from the flags: the NICs' MACs
// and the disk file, with this host's CPU count.
func standaloneHardware(macs []string, diskPath string) (fakeagent.Hardware, error) {
	host, _ := os.Hostname()
	hw := fakeagent.Hardware{
		CPUs: runtime.NumCPU(), CPUArch: runtime.GOARCH, CPUModel: "ironlab standalone agent", MemoryMB: 2048,
		Vendor: "ironlab", Product: "standalone", SerialNumber: host, BIOSVersion: "1.0.0",
	}
	if hw.CPUArch == "amd64" {
		hw.CPUArch = "x86_64"
	}
	for i, m := range macs {
		mac, err := net.ParseMAC(m)
		if err != nil {
			return hw, fmt.Errorf("--mac %q: %w", m, err)
		}
		hw.NICs = append(hw.NICs, fakeagent.NIC{Name: fmt.Sprintf("eth%d", i), MAC: mac.String()})
	}
	if diskPath != "" {
		d, err := fakeagent.OpenFileDisk(diskPath)
		if err != nil {
			return hw, fmt.Errorf("--disk: %w", err)
		}
		size := d.Size()
		d.Close()
		name := filepath.Base(diskPath)
		if !strings.HasPrefix(diskPath, "/dev/") {
			name = "vda" // reported as /dev/vda, as in a VM
		}
		hw.Disks = append(hw.Disks, fakeagent.BlockDevice{Name: name, SizeBytes: size, Path: diskPath})
	}
	return hw, nil
}
