package scenarios

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/ironlab/ironlab/simulator/lab"
	"github.com/ironlab/ironlab/simulator/lab/enroll"
)

// DriverConfig is what a scenario asks of the built-in driver.
type DriverConfig struct {
	StateDir              string
	HeartbeatTimeout      time.Duration
	AutomatedClean        bool
	IPMIMinInterval       time.Duration
	FastTrack             bool
	WatchdogAction        string // reboot, maintenance, "" (off)
	WatchdogMaxReboots    int
	DeployCallbackTimeout time.Duration
	CleanCallbackTimeout  time.Duration
	RescueCallbackTimeout time.Duration
	// A lab's pace, faster than Ironic's defaults: the pause between tries
	// to lock a busy node, how often the conductor polls agent commands,
	// how often it asks the BMC whether a node is off after
	// standby.power_off (a lab's machines are off well under a second
	// later), how often a power change is polled, and how long ipmitool
	// retries. The child-process driver gets the same as flags.
	LockRetryInterval    time.Duration
	AgentPollInterval    time.Duration
	PowerOffPollInterval time.Duration
	PowerPollInterval    time.Duration
	IPMIRetryTimeout     time.Duration
	// CleanStepPriorities: Options.CleanStepPriorities.
	CleanStepPriorities map[string]int
	// DB is the database (a PostgreSQL DSN; empty: StateDir/ironlab.db),
	// Host the conductor's name; ConductorTimeout is when one without a
	// heartbeat is dead (it heartbeats at a fifth of it). Set for a lab of
	// named conductors (lab.store: postgres).
	// APIURL is the API the PXE deploy ramdisk calls back (the front of
	// several conductors; empty: the conductor's own).
	DB, Host, APIURL string
	ConductorTimeout time.Duration
	Logger           *slog.Logger
}

// CheckInterval paces the periodic tasks to the heartbeat timeout, so a
// scenario with a 4 s timeout sees the watchdog act within a second of it.
func (c DriverConfig) CheckInterval() time.Duration {
	return min(time.Second, c.HeartbeatTimeout/4)
}

// IPMIInterval is the least time between ipmitool commands to one BMC;
// scenarios default to 0.1 s. Ironic's 5 s protects real BMCs that fall over
// when hammered; a lab's BMCs answer back to back, and at 0.5 s the pacing
// alone was ~6 s of a VM deploy (13 ipmitool commands).
func (c DriverConfig) IPMIInterval() time.Duration {
	if c.IPMIMinInterval == 0 {
		return 100 * time.Millisecond
	}
	return c.IPMIMinInterval
}

// StartDriver starts an in-process driver API and returns its URL and a
// function that stops it. The scenarios package links no driver: the CLI
// (cmd/ironlab) and the tests supply the built-in one.
type StartDriver func(ctx context.Context, cfg DriverConfig) (url string, stop func() error, err error)

// Options tune a run.
type Options struct {
	// ResultsDir is where this run's results go (results/<run-id>).
	ResultsDir string
	// StateDir holds the labs' disks and databases (default: a temporary
	// folder, removed after the run unless KeepState).
	StateDir  string
	KeepState bool
	// ImageCache keeps built images across runs (default StateDir/images).
	ImageCache string
	// DriverURL targets an external driver (e.g. a real Ironic) instead of
	// the built-in one.
	DriverURL   string
	StartDriver StartDriver
	// Target is what the nodes are enrolled into: enroll.TargetBuiltin (the
	// spec's classes) or enroll.TargetIronic (hardware types and interfaces,
	// deploy_kernel/deploy_ramdisk). Empty: builtin for the built-in driver;
	// for DriverURL, what the API's driver list says it is.
	Target enroll.Target
	// DriverBinary is the ironlab binary, for scenarios that run the driver
	// as a child process (conductor faults); `ironlab run` sets itself.
	DriverBinary string
	// Out receives progress lines and the summary (default os.Stdout).
	Out    io.Writer
	Logger *slog.Logger
	// Backend, Accel and PXE override the scenarios' lab settings when set
	// (`ironlab run --backend libvirt --accel tcg --pxe ipxe`).
	Backend, Accel, PXE string
	// AgentBinary and RamdiskCache are the libvirt backend's agent ramdisk
	// inputs (lab.LibvirtSpec's AgentBinary and CacheDir; "" for their
	// defaults); `ironlab run` passes $IRONLAB_AGENT_BINARY and $IRONLAB_CACHE.
	AgentBinary, RamdiskCache string
	// Agent timing for in-process agents; zero means fast lab defaults.
	LookupInterval        time.Duration
	HeartbeatErrorBackoff time.Duration
	// FailOnMissingTools makes a group whose driver needs a tool this
	// machine lacks (ipmitool) an error instead of a skipped group. The
	// caller decides: `ironlab run` sets it under CI=true.
	FailOnMissingTools bool
	// Started, when set, is called once the scenario's lab and driver run,
	// before the first step (`ironlab run --ui` points its dashboard there).
	Started func(driverURL string, l *lab.Lab)
	// StepHook, when set, is called as each step starts (end is zero) and
	// as it ends (`ironlab bench` times its phases with it).
	StepHook func(step int, start, end time.Time)
	// HTTPClient is the client of the runner's driver API requests (nil:
	// ironic.New's default); `ironlab bench` times them through it.
	HTTPClient *http.Client
	// CleanStepPriorities override the agents' automated clean step
	// priorities by step name (erase_devices, erase_devices_metadata; 0
	// disables a step), as Ironic's [deploy]erase_devices_priority does.
	CleanStepPriorities map[string]int
}

// withDefaults fills in the options a caller left zero.
func (o Options) withDefaults() Options {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LookupInterval == 0 {
		o.LookupInterval = 200 * time.Millisecond
	}
	if o.HeartbeatErrorBackoff == 0 {
		o.HeartbeatErrorBackoff = 300 * time.Millisecond
	}
	return o
}
