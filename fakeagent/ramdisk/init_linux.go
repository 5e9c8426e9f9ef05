// Package ramdisk is /init of the agent ramdisk: the static ironlab binary
// running as PID 1 inside a libvirt VM. It mounts the kernel filesystems,
// loads the virtio modules the image builder put in the initramfs, brings up
// eth0 (10.0.2.15/24 via 10.0.2.2, QEMU user-mode networking), reads the
// kernel command line and runs the fake agent against /dev/vda, listening on
// :9999 (forwarded from 127.0.0.1:<port> on the host). When the agent powers
// the machine off, /init does so with reboot(2). With ironlab.mode=pxe-deploy
// (the mock PXE driver's boot config) it runs the deploy ramdisk
// (fakeagent/pxedeploy) on the same port instead: the conductor writes the
// image onto /dev/vda itself.
package ramdisk

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/fakeagent/pxedeploy"
	imgramdisk "github.com/ironlab/ironlab/images/ramdisk"
	"github.com/ironlab/ironlab/internal/memrelease"
)

// Kernel command line options of /init itself (the agent's own are parsed
// by fakeagent.ConfigFromCmdline).
const (
	// OptProbe=1: print ProbeMarker and power off at once (the KVM probe).
	OptProbe = "ironlab.probe"
	// OptFetch=<url>: bring up the network, GET the URL, print FetchMarker
	// with the status, power off. Proves boot-to-network without an API.
	OptFetch = "ironlab.fetch"
	// OptIP and OptGateway override 10.0.2.15/24 and 10.0.2.2.
	OptIP      = "ironlab.ip"
	OptGateway = "ironlab.gw"
)

const (
	// ProbeMarker is printed for ironlab.probe=1 (see simulator/libvirt).
	ProbeMarker = "IRONLAB-PROBE-OK"
	// FetchMarker starts the console line printed for ironlab.fetch.
	FetchMarker = "IRONLAB-FETCH"
	// ListenAddr is where the agent listens in the guest.
	ListenAddr = ":9999"
)

// Main is /init. It never returns normally: PID 1 must not exit, so every
// path ends in power off (or reboot).
func Main() int {
	start := time.Now()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(log)
	if err := mountAll(); err != nil {
		fail(log, "mount", err)
	}
	raw, _ := os.ReadFile("/proc/cmdline")
	cmdline := strings.TrimSpace(string(raw))
	opts := options(cmdline)
	if opts[OptProbe] == "1" {
		fmt.Println(ProbeMarker)
		powerOff(log)
	}
	mods, err := loadModules(log)
	if err != nil {
		fail(log, "load modules", err)
	}
	ifc, err := netUp(opts)
	if err != nil {
		fail(log, "network", err)
	}
	log.Info("ironlab init: up", "modules", mods, "ip", ifc, "init", time.Since(start).Round(time.Millisecond), "uptime", uptime())

	if u := opts[OptFetch]; u != "" {
		fetch(log, u)
		powerOff(log)
	}
	if pxedeploy.Mode(cmdline) == pxedeploy.ModePXEDeploy {
		err = runDeployRamdisk(log, cmdline)
	} else {
		err = runAgent(log, cmdline)
	}
	switch {
	case errors.Is(err, fakeagent.ErrPoweredOff):
		powerOff(log)
	case errors.Is(err, fakeagent.ErrRebooted):
		Reboot()
	case errors.Is(err, fakeagent.ErrRescued):
		// The ramdisk stays up for the rescue user, as IPA's does.
		log.Info("ironlab init: rescue finalized; the agent API is stopped")
		select {}
	}
	if err != nil {
		fail(log, "agent", err)
	}
	powerOff(log)
	return 0
}

// options parses key=value words of the kernel command line.
func options(cmdline string) map[string]string {
	m := map[string]string{}
	for _, w := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(w, "=")
		m[k] = v
	}
	return m
}

func mountAll() error {
	for _, m := range []struct{ src, dst, fs, data string }{
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755"},
		{"tmpfs", "/run", "tmpfs", "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", "mode=1777"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.fs, unix.MS_NOSUID, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fs, m.dst, err)
		}
	}
	return nil
}

// loadModules loads the initramfs's modules in the order the builder wrote.
func loadModules(log *slog.Logger) ([]string, error) {
	f, err := os.Open(imgramdisk.ModuleOrderFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // a kernel with built-in drivers
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var loaded []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" {
			continue
		}
		if err := loadModule(filepath.Join(imgramdisk.ModuleDir, name+".ko")); err != nil {
			return loaded, fmt.Errorf("module %s: %w", name, err)
		}
		loaded = append(loaded, name)
	}
	return loaded, sc.Err()
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// netConfig reads eth0's address and gateway from the options (default:
// QEMU user-mode networking). Both are IPv4: netUp configures IPv4 only.
func netConfig(opts map[string]string) (ip net.IP, prefix int, gw net.IP, err error) {
	ipStr, gwStr := opts[OptIP], opts[OptGateway]
	if ipStr == "" {
		ipStr = "10.0.2.15/24"
	}
	if gwStr == "" {
		gwStr = "10.0.2.2"
	}
	ip, ipnet, err := net.ParseCIDR(ipStr)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("%s=%q: %w", OptIP, ipStr, err)
	}
	if ip.To4() == nil || len(ipnet.Mask) != net.IPv4len { // ::ffff:a.b.c.d/120 is not IPv4
		return nil, 0, nil, fmt.Errorf("%s=%q: not an IPv4 address", OptIP, ipStr)
	}
	gw = net.ParseIP(gwStr)
	if gw == nil || gw.To4() == nil {
		return nil, 0, nil, fmt.Errorf("%s=%q: not an IPv4 address", OptGateway, gwStr)
	}
	prefix, _ = ipnet.Mask.Size()
	return ip.To4(), prefix, gw.To4(), nil
}

// netUp brings up lo and eth0 with the static QEMU user-mode addresses.
func netUp(opts map[string]string) (string, error) {
	ip, prefix, gw, err := netConfig(opts)
	if err != nil {
		return "", err
	}
	ipStr := fmt.Sprintf("%s/%d", ip, prefix)
	if lo, err := net.InterfaceByName("lo"); err == nil {
		if err := linkUp(lo.Index); err != nil {
			return "", fmt.Errorf("lo up: %w", err)
		}
	}
	// The NIC appears once virtio_net probes it.
	var eth *net.Interface
	for deadline := time.Now().Add(10 * time.Second); ; {
		if eth, err = net.InterfaceByName("eth0"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no eth0 after 10s: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := linkUp(eth.Index); err != nil {
		return "", fmt.Errorf("eth0 up: %w", err)
	}
	if err := addAddr(eth.Index, ip, prefix); err != nil {
		return "", fmt.Errorf("eth0 address %s: %w", ipStr, err)
	}
	if err := addDefaultRoute(eth.Index, gw); err != nil {
		return "", fmt.Errorf("default route via %s: %w", gw, err)
	}
	return ipStr, nil
}

// fetch GETs a URL and prints the result on the console.
func fetch(log *slog.Logger, u string) {
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(u)
	if err != nil {
		fmt.Printf("%s ERROR %v\n", FetchMarker, err)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	resp.Body.Close()
	fmt.Printf("%s %d %s\n", FetchMarker, resp.StatusCode, strings.TrimSpace(string(body)))
}

// runAgent runs the fake agent on this machine until it powers off.
func runAgent(log *slog.Logger, cmdline string) error {
	cc, err := fakeagent.ConfigFromCmdline(cmdline)
	if err != nil {
		return err
	}
	cfg := cc.Config
	cfg.Hardware = fakeagent.NewMemHardware(localHardware())
	cfg.BootMode = "bios"
	cfg.Logger = log
	cfg.PowerOff = func(context.Context) error { return nil } // /init powers off after Run
	cfg.Reboot = func(context.Context) error { return nil }   // and reboots after run_image
	a, err := fakeagent.New(cfg)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", ListenAddr)
	if err != nil {
		return fmt.Errorf("agent listen %s: %w", ListenAddr, err)
	}
	if l, err = a.AutoTLS(context.Background(), l); err != nil {
		return err
	}
	srv := &http.Server{Handler: a, ReadHeaderTimeout: 30 * time.Second}
	log.Info("ironlab init: agent running", "api", cfg.APIURL, "advertise", a.AgentURL(), "listen", ListenAddr)
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	go watchAgent(wctx, a, os.Stderr, time.Now, 5*time.Second)
	err = fakeagent.ServeWhile(context.Background(), srv, l, a.Run)
	if errors.Is(err, fakeagent.ErrRescued) {
		// On the serial console, as the lab prints it for fake machines.
		fmt.Fprint(os.Stderr, fakeagent.RescueReadyLine(a.State().RescuePasswordHash))
	}
	return err
}

// StallMarker starts the console line above the goroutine dump of an agent
// whose lookup or heartbeat loop is overdue by StallGrace.
const StallMarker = "IRONLAB-AGENT-STALL"

// StallGrace is how far past its due time the agent's loop may be before
// the watchdog dumps the goroutines (a lookup may be two requests of
// RequestTimeout each).
const StallGrace = 60 * time.Second

// watchAgent prints every goroutine's stack on w once each time the
// agent's lookup or heartbeat loop becomes overdue by StallGrace: in a VM
// there is no other way to see where an agent that stopped calling the
// driver hangs (its lock, a request, the guest). It reads the agent's
// Overdue only, which takes no lock.
func watchAgent(ctx context.Context, a *fakeagent.Agent, w io.Writer, now func() time.Time, every time.Duration) {
	tk := time.NewTicker(every)
	defer tk.Stop()
	dumped := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		late := a.Overdue(now())
		switch {
		case late < StallGrace:
			dumped = false
		case !dumped:
			dumped = true
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			fmt.Fprintf(w, "%s: the agent's lookup/heartbeat loop is %s overdue; goroutines:\n%s\n%s end of goroutines\n",
				StallMarker, late.Round(time.Second), buf, StallMarker)
		}
	}
}

// runDeployRamdisk runs the mock PXE driver's deploy ramdisk
// (ironlab.mode=pxe-deploy) against /dev/vda: it serves the disk on
// ListenAddr and calls the conductor back with the address the host
// forwards to it (ipa-advertise-host/port, which the machine's network boot
// appends: the conductor that wrote the boot config cannot know them). It
// serves until the conductor powers the machine off or resets it.
func runDeployRamdisk(log *slog.Logger, cmdline string) error {
	cfg, err := pxedeploy.ConfigFromCmdline(cmdline)
	if err != nil {
		return err
	}
	if cfg.AdvertiseURL == "" {
		return errors.New("deploy ramdisk: no ipa-advertise-host on the kernel command line: the conductor could not reach this disk")
	}
	// The advertised port is the host's end of the forward; the guest's
	// end is always ListenAddr.
	cfg.Listen = ListenAddr
	disk, err := fakeagent.OpenFileDisk("/dev/vda")
	if err != nil {
		return err
	}
	defer disk.Close()
	cfg.Disk, cfg.Logger, cfg.Console = disk, log, os.Stderr
	log.Info("ironlab init: deploy ramdisk running", "api", cfg.APIURL, "advertise", cfg.AdvertiseURL, "listen", ListenAddr, "disk_bytes", disk.Size())
	return pxedeploy.ListenAndRun(context.Background(), cfg)
}

// localHardware describes the VM the ramdisk booted on.
func localHardware() fakeagent.Hardware {
	hw := fakeagent.Hardware{
		CPUs:         runtime.NumCPU(),
		CPUArch:      "x86_64",
		CPUModel:     cpuModel(),
		MemoryMB:     memMB(),
		Vendor:       sysfs("/sys/class/dmi/id/sys_vendor"),
		Product:      sysfs("/sys/class/dmi/id/product_name"),
		SerialNumber: sysfs("/sys/class/dmi/id/product_serial"),
		BIOSVersion:  sysfs("/sys/class/dmi/id/bios_version"),
	}
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			if i.Flags&net.FlagLoopback == 0 && len(i.HardwareAddr) == 6 {
				hw.NICs = append(hw.NICs, fakeagent.NIC{Name: i.Name, MAC: i.HardwareAddr.String()})
			}
		}
	}
	blocks, _ := filepath.Glob("/sys/block/vd*")
	for _, b := range blocks {
		name := filepath.Base(b)
		sectors, _ := strconv.ParseInt(sysfs(b+"/size"), 10, 64)
		hw.Disks = append(hw.Disks, fakeagent.BlockDevice{
			Name:       name,
			SizeBytes:  sectors * 512,
			Rotational: sysfs(b+"/queue/rotational") == "1",
			Path:       "/dev/" + name,
		})
	}
	return hw
}

// uptime is the kernel's, so the console shows where a boot spends its time.
func uptime() string {
	b, _ := os.ReadFile("/proc/uptime")
	up, _, _ := strings.Cut(string(b), " ")
	return up + "s"
}

func sysfs(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

func memMB() int { return int(memrelease.MemTotal() >> 20) }

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// fail reports a fatal error on the console and powers off after a pause,
// so the console shows why.
func fail(log *slog.Logger, what string, err error) {
	log.Error("ironlab init failed", "step", what, "err", err)
	fmt.Printf("IRONLAB-INIT-FAILED %s: %v\n", what, err)
	time.Sleep(2 * time.Second)
	powerOff(log)
}

// powerOff flushes disks and powers the machine off; it does not return.
func powerOff(log *slog.Logger) {
	unix.Sync()
	log.Info("ironlab init: power off")
	for {
		if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
			log.Error("reboot(POWER_OFF)", "err", err)
		}
		time.Sleep(time.Second)
	}
}

// Reboot flushes disks and reboots the machine; it does not return.
func Reboot() {
	unix.Sync()
	for {
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
		time.Sleep(time.Second)
	}
}
