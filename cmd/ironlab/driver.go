package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ironlab/ironlab/driver"
	"github.com/ironlab/ironlab/driver/store/postgres"
)

func init() {
	register("driver", "run the conductor and its Ironic-compatible API alone", driverCmd)
}

// driverFlags are the driver's settings, shared by `driver` and `up`.
type driverFlags struct {
	listen, db, watchdog                 string
	bootDir, apiURL                      string
	heartbeatTimeout, check              time.Duration
	deployTimeout, cleanWait, rescueWait time.Duration
	rescueHash                           string
	ipmiInterval                         time.Duration
	lockRetry, agentPoll                 time.Duration
	powerOffPoll                         time.Duration
	maxReboots                           int
	automatedClean                       bool
	fastTrack, requireTLS                bool
	tokenRequired                        bool
	host, group                          string
	condHeartbeat, condDead              time.Duration
	hashExponent, replicas               int
	erasePrio, metadataPrio              int
}

func (f *driverFlags) add(fs *flag.FlagSet, db string) {
	d := driver.DefaultConfig()
	fs.StringVar(&f.listen, "listen", d.Listen, "API address (loopback only unless you mean it)")
	fs.StringVar(&f.db, "db", db, "SQLite database file, or a PostgreSQL DSN (postgres://user@host:port/db) that several conductors share")
	fs.StringVar(&f.bootDir, "boot-dir", "", "the lab's boot folder, where the PXE deploy (pxe_* classes) writes per-MAC boot configs; empty: no PXE deploy (ironlab up: the lab's)")
	fs.StringVar(&f.apiURL, "api-url", "", "the API the PXE deploy ramdisk calls back (Ironic's [conductor]api_url): with several conductors, an address in front of them all; empty: this conductor's own")
	fs.DurationVar(&f.heartbeatTimeout, "heartbeat-timeout", d.HeartbeatTimeout, "agent.heartbeat_timeout: sent to agents at lookup; the watchdog acts after it")
	fs.DurationVar(&f.check, "check-interval", d.CheckInterval, "how often the periodic tasks (call-back timeouts, watchdog) run")
	fs.DurationVar(&f.deployTimeout, "deploy-callback-timeout", d.DeployCallbackTimeout, "wait call-back longer than this -> deploy failed")
	fs.DurationVar(&f.cleanWait, "clean-callback-timeout", d.CleanCallbackTimeout, "clean wait longer than this -> clean failed")
	fs.DurationVar(&f.rescueWait, "rescue-callback-timeout", d.RescueCallbackTimeout, "rescue wait longer than this -> rescue failed")
	fs.StringVar(&f.rescueHash, "rescue-password-hash-algorithm", "sha256", `crypt method of the rescue password sent to the agent: "sha256" (Ironic 21.4's default) or "sha512"`)
	fs.StringVar(&f.watchdog, "watchdog-action", d.WatchdogAction, `missed heartbeat on a powered-on, unprovisioned node: "reboot", "maintenance" or "" (off)`)
	fs.IntVar(&f.maxReboots, "watchdog-max-reboots", d.WatchdogMaxReboots, "watchdog reboots of one node before it goes to maintenance")
	fs.DurationVar(&f.lockRetry, "lock-retry-interval", d.LockRetryInterval, "pause between the 3 tries to lock a busy node before 409")
	fs.DurationVar(&f.agentPoll, "agent-poll-interval", d.AgentPollInterval, "how often the conductor polls agent commands it waits on itself")
	fs.DurationVar(&f.powerOffPoll, "power-off-poll-interval", d.PowerOffPollInterval, "after standby.power_off, how often the BMC is asked (6 times) whether the node is off before a hard power off (Ironic's post_deploy_get_power_state_retry_interval)")
	fs.DurationVar(&f.ipmiInterval, "ipmi-min-interval", 5*time.Second, "least time between ipmitool commands to one BMC (Ironic's min_command_interval)")
	fs.BoolVar(&f.automatedClean, "automated-clean", d.AutomatedClean, "run the erase clean steps on provide and undeploy")
	fs.IntVar(&f.erasePrio, "erase-devices-priority", -1, "automated clean priority of erase_devices (0 disables it; -1: the agent's, 10)")
	fs.IntVar(&f.metadataPrio, "erase-devices-metadata-priority", -1, "automated clean priority of erase_devices_metadata (0 disables it; -1: the agent's, 99)")
	fs.BoolVar(&f.fastTrack, "fast-track", d.FastTrack, "let agents of enroll/manageable/available nodes look up (keep agents running)")
	fs.BoolVar(&f.requireTLS, "require-tls", d.RequireTLS, "refuse agent callback URLs that are not https")
	fs.BoolVar(&f.tokenRequired, "agent-token-required", d.AgentTokenRequired, "refuse v1 heartbeats without the agent token")
	fs.StringVar(&f.host, "host", "", "this conductor's name in reservations and the conductors table (default: the machine's host name); unique per conductor")
	fs.StringVar(&f.group, "conductor-group", "", "this conductor's conductor group (PostgreSQL store; nodes of the default group go to conductors of group \"\")")
	fs.DurationVar(&f.condHeartbeat, "conductor-heartbeat-interval", 10*time.Second, "PostgreSQL store: how often this conductor heartbeats in the conductors table and rebuilds the hash ring")
	fs.DurationVar(&f.condDead, "conductor-timeout", 60*time.Second, "PostgreSQL store: a conductor without a heartbeat for this long is dead; its nodes are taken over")
	fs.IntVar(&f.hashExponent, "hash-partition-exponent", 5, "Ironic's hash_partition_exponent: 2^N partitions per conductor on the hash ring")
	fs.IntVar(&f.replicas, "hash-distribution-replicas", 1, "Ironic's hash_distribution_replicas: conductors mapped to each node")
}

func (f *driverFlags) config(logger *slog.Logger) driver.Config {
	c := driver.DefaultConfig()
	c.Listen, c.DBPath, c.Logger = f.listen, f.db, logger
	c.BootDir, c.APIURL = f.bootDir, f.apiURL
	c.HeartbeatTimeout, c.CheckInterval = f.heartbeatTimeout, f.check
	c.DeployCallbackTimeout, c.CleanCallbackTimeout, c.RescueCallbackTimeout = f.deployTimeout, f.cleanWait, f.rescueWait
	c.RescuePasswordHash = f.rescueHash
	c.WatchdogAction, c.AutomatedClean = f.watchdog, f.automatedClean
	c.WatchdogMaxReboots, c.LockRetryInterval, c.AgentPollInterval = f.maxReboots, f.lockRetry, f.agentPoll
	c.PowerOffPollInterval = f.powerOffPoll
	c.FastTrack, c.RequireTLS, c.AgentTokenRequired = f.fastTrack, f.requireTLS, f.tokenRequired
	c.Host, c.ConductorGroup = f.host, f.group
	c.ConductorHeartbeatInterval, c.ConductorTimeout = f.condHeartbeat, f.condDead
	c.HashPartitionExponent, c.HashDistributionReplicas = f.hashExponent, f.replicas
	c.PowerInterfaces = driver.StandardPowerInterfaces(driver.PowerOptions{IPMIMinInterval: f.ipmiInterval})
	for step, prio := range map[string]int{"erase_devices": f.erasePrio, "erase_devices_metadata": f.metadataPrio} {
		if prio >= 0 {
			if c.CleanStepPriorities == nil {
				c.CleanStepPriorities = map[string]int{}
			}
			c.CleanStepPriorities[step] = prio
		}
	}
	return c
}

func (f *driverFlags) validate() error {
	switch f.watchdog {
	case "", "reboot", "maintenance":
	default:
		return fmt.Errorf("--watchdog-action: want reboot, maintenance or empty, got %q", f.watchdog)
	}
	if f.heartbeatTimeout <= 0 {
		return fmt.Errorf("--heartbeat-timeout must be positive")
	}
	if f.condHeartbeat <= 0 || f.condDead <= f.condHeartbeat {
		return fmt.Errorf("--conductor-timeout (%s) must be longer than --conductor-heartbeat-interval (%s), both positive", f.condDead, f.condHeartbeat)
	}
	if f.hashExponent < 1 || f.hashExponent > 16 {
		return fmt.Errorf("--hash-partition-exponent must be 1 to 16, got %d", f.hashExponent)
	}
	if f.replicas < 1 {
		return fmt.Errorf("--hash-distribution-replicas must be at least 1, got %d", f.replicas)
	}
	return nil
}

func driverCmd(args []string) int {
	fs := flag.NewFlagSet("driver", flag.ContinueOnError)
	var df driverFlags
	df.add(fs, ".state/ironlab.db")
	verbose := fs.Bool("v", false, "debug logs")
	cpuProfile := fs.String("cpuprofile", os.Getenv(driverProfileEnv), "write a CPU profile (pprof) to `FILE`, of the whole run unless PUT /v1/lab/profile {\"name\": N} begins a piece, written beside it with N before its extension (driver.cpu -> driver.N.cpu), as ironlab bench --cpuprofile does for each phase (default: $"+driverProfileEnv+", which bench sets); block and mutex profiles of the whole run go to FILE.block and FILE.mutex")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: ironlab driver [flags]

Runs the conductor (agent deploy driver, provision state machine, periodic
tasks) and its Ironic-compatible API until SIGINT or SIGTERM, for use with
agents and BMCs of your own (see 'ironlab agent', 'ironlab bmc', 'ironlab up').

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if err := df.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "ironlab driver:", err)
		return 2
	}
	var prof *cpuProfiler
	if *cpuProfile != "" {
		var err error
		if prof, err = startCPUProfile(*cpuProfile); err != nil {
			fmt.Fprintln(os.Stderr, "ironlab driver:", err)
			return 1
		}
		defer prof.Stop()
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if !postgres.IsDSN(df.db) {
		if err := os.MkdirAll(filepath.Dir(df.db), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "ironlab driver:", err)
			return 1
		}
	}
	cfg := df.config(logger)
	if prof != nil {
		cfg.Profiler = prof.Piece
	}
	d, err := driver.New(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ironlab driver:", err)
		return 1
	}
	defer d.Close()
	dbName := df.db
	if postgres.IsDSN(dbName) {
		dbName = "PostgreSQL " + postgres.Redact(dbName)
	}
	fmt.Printf("driver API on http://%s (database %s, conductor %s); Ctrl-C stops it\n", df.listen, dbName, d.Conductor().Config().Host)
	if err := d.ListenAndServe(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "ironlab driver:", err)
		return 1
	}
	return 0
}
