// Package driver assembles the conductor side of the lab: the store (SQLite),
// the conductor (state machine, locks, periodic tasks), the deploy and power
// interfaces, and the Ironic-compatible HTTP API. The CLI (`ironlab driver`)
// and the scenario runner both build it with New.
package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/ironlab/ironlab/driver/api"
	"github.com/ironlab/ironlab/driver/cluster"
	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/deploy/agent"
	"github.com/ironlab/ironlab/driver/deploy/pxe"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/power/fake"
	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/driver/store/postgres"
	"github.com/ironlab/ironlab/driver/store/sqlite"
	"github.com/ironlab/ironlab/internal/httpstop"
)

// DefaultListen is where the API listens unless told otherwise: loopback only.
const DefaultListen = "127.0.0.1:6385"

// Config configures a Driver. Start from DefaultConfig: its booleans that
// default to true (AutomatedClean, AgentTokenRequired, RestrictLookup) are
// false in a zero Config. Zero durations and counts take the defaults noted.
type Config struct {
	// Listen is the API address (DefaultListen); used by ListenAndServe.
	Listen string
	// DBPath is the SQLite file (".state/ironlab.db"), or a PostgreSQL DSN
	// (postgres://... or postgresql://...) for a store several conductors
	// share.
	DBPath string
	// Host names this conductor in node reservations (os.Hostname()).
	Host string

	// HeartbeatTimeout is agent.heartbeat_timeout (300 s): sent to agents in
	// lookup answers and used by the watchdog.
	HeartbeatTimeout time.Duration
	// CheckInterval is how often the periodic tasks run (60 s).
	CheckInterval time.Duration
	// DeployCallbackTimeout / CleanCallbackTimeout / RescueCallbackTimeout
	// (1800 s; negative = off).
	DeployCallbackTimeout time.Duration
	CleanCallbackTimeout  time.Duration
	RescueCallbackTimeout time.Duration
	// RescuePasswordHash is "sha256" (default, as Ironic 21.4) or "sha512".
	RescuePasswordHash string
	// WatchdogAction for a powered-on, unprovisioned node whose agent missed
	// HeartbeatTimeout: "reboot", "maintenance", or "" (off).
	WatchdogAction string
	// WatchdogMaxReboots caps watchdog reboots before maintenance (3).
	WatchdogMaxReboots int

	// AutomatedClean runs cleaning on provide and undeploy (true).
	AutomatedClean bool
	// CleanStepPriorities overrides the agent's automated clean step
	// priorities, e.g. {"erase_devices": 0} skips the full erase.
	CleanStepPriorities map[string]int

	// AgentTokenRequired refuses heartbeats without a token (true).
	AgentTokenRequired bool
	// RequireTLS refuses non-https agent callback URLs (false).
	RequireTLS bool
	// RestrictLookup limits /v1/lookup to nodes deploying or cleaning (true).
	RestrictLookup bool
	// FastTrack also lets agents of enroll/manageable/available nodes look up.
	FastTrack bool

	// LockRetries x LockRetryInterval: how long a request waits for a locked
	// node before 409 (3 x 1 s).
	LockRetries       int
	LockRetryInterval time.Duration
	// PowerRetries x PowerRetryInterval, PowerTimeout per call (3 x 1 s, 30 s).
	PowerRetries       int
	PowerRetryInterval time.Duration
	PowerTimeout       time.Duration
	// AgentCommandTimeout bounds each call to an agent (60 s).
	AgentCommandTimeout time.Duration
	// AgentPollInterval: how often the conductor polls commands it waits on
	// itself, e.g. install_bootloader (1 s).
	AgentPollInterval time.Duration
	// PowerOffPollInterval: after standby.power_off, how often the BMC is
	// asked whether the node is off, up to 6 times, before a hard power off
	// (Ironic's [agent]post_deploy_get_power_state_retry_interval, 5 s).
	PowerOffPollInterval time.Duration

	// PowerInterfaces by name ("fake", "ipmitool", "native", "ssh"). Nil
	// registers FakePower only.
	PowerInterfaces map[string]power.Interface
	// DeployInterfaces by name ("agent", "pxe"). Nil registers AgentDeploy,
	// and the PXE deploy when BootDir is set.
	DeployInterfaces map[string]deploy.Interface
	// ConductorGroup is this conductor's group ([conductor]conductor_group).
	ConductorGroup string
	// ConductorHeartbeatInterval / ConductorTimeout: how often a conductor
	// on a shared (PostgreSQL) store heartbeats in the conductors table, and
	// after how long without one it is dead (Ironic's 10 s / 60 s).
	ConductorHeartbeatInterval time.Duration
	ConductorTimeout           time.Duration
	// HashPartitionExponent / HashDistributionReplicas are Ironic's
	// hash_partition_exponent (5) and hash_distribution_replicas (1).
	HashPartitionExponent    int
	HashDistributionReplicas int

	// BootDir is the lab's boot folder, where the PXE deploy writes per-MAC
	// boot configs (e.g. <state>/boot). Empty: no "pxe" deploy interface.
	BootDir string
	// APIURL is the API the PXE deploy ramdisk is told to call back
	// (Ironic's [conductor]api_url): with several conductors, an address
	// in front of them all. Empty: this conductor's own.
	APIURL string

	// Profiler serves the lab extension PUT /v1/lab/profile: the CPU
	// profile's next piece (api.Server.SetProfiler). Nil: it answers 404.
	Profiler api.Profiler

	Logger *slog.Logger
}

// DefaultConfig returns the defaults, Ironic's where Ironic has one.
func DefaultConfig() Config {
	return Config{
		Listen:                DefaultListen,
		DBPath:                filepath.Join(".state", "ironlab.db"),
		HeartbeatTimeout:      300 * time.Second,
		CheckInterval:         60 * time.Second,
		DeployCallbackTimeout: 1800 * time.Second,
		CleanCallbackTimeout:  1800 * time.Second,
		RescueCallbackTimeout: 1800 * time.Second,
		WatchdogAction:        conductor.WatchdogReboot,
		WatchdogMaxReboots:    3,
		AutomatedClean:        true,
		AgentTokenRequired:    true,
		RestrictLookup:        true,
		LockRetries:           3,
		LockRetryInterval:     time.Second,
		PowerRetries:          3,
		PowerRetryInterval:    time.Second,
		PowerTimeout:          30 * time.Second,
		AgentCommandTimeout:   60 * time.Second,
		AgentPollInterval:     time.Second,
		PowerOffPollInterval:  5 * time.Second,
	}
}

// Driver is a running conductor with its API.
type Driver struct {
	cfg     Config
	store   store.Store
	cond    *conductor.Conductor
	api     *api.Server
	cluster *cluster.Cluster // nil: one conductor (SQLite)
	handler http.Handler
	log     *slog.Logger
}

// New opens the store, recovers from a previous run (releasing this host's
// locks and failing nodes caught mid-operation) and builds the API.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.DBPath == "" {
		cfg.DBPath = filepath.Join(".state", "ironlab.db")
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PowerInterfaces == nil {
		cfg.PowerInterfaces = map[string]power.Interface{"fake": fake.New()}
	}
	if cfg.DeployInterfaces == nil {
		client := agent.NewClient()
		if cfg.AgentCommandTimeout > 0 {
			client.HTTP.Timeout = cfg.AgentCommandTimeout
		}
		cfg.DeployInterfaces = map[string]deploy.Interface{"agent": agent.New(agent.Config{
			Client: client, CleanStepPriorities: cfg.CleanStepPriorities, PollInterval: cfg.AgentPollInterval,
			PowerOffInterval: cfg.PowerOffPollInterval,
		})}
		if cfg.BootDir != "" {
			cfg.DeployInterfaces["pxe"] = pxe.New(pxe.Config{BootDir: cfg.BootDir, APIURL: cfg.APIURL})
		}
	}
	st, err := OpenStore(ctx, cfg.DBPath)
	if err != nil {
		return nil, err
	}
	// On a shared store the conductors form a hash ring (driver/cluster).
	var cl *cluster.Cluster
	var owns func(n *store.Node) bool
	reg, shared := st.(store.Registry)
	if _, pg := st.(*postgres.Postgres); !pg {
		shared = false
	}
	if shared {
		owns = func(n *store.Node) bool { return cl.Owns(n) }
	}
	cond := conductor.New(st, conductor.Config{Owns: owns,
		Host: cfg.Host, LockRetries: cfg.LockRetries, LockRetryInterval: cfg.LockRetryInterval,
		PowerRetries: cfg.PowerRetries, PowerRetryInterval: cfg.PowerRetryInterval, PowerTimeout: cfg.PowerTimeout,
		AutomatedClean: cfg.AutomatedClean, HeartbeatTimeout: cfg.HeartbeatTimeout,
		DeployCallbackTimeout: cfg.DeployCallbackTimeout, CleanCallbackTimeout: cfg.CleanCallbackTimeout,
		RescueCallbackTimeout: cfg.RescueCallbackTimeout, RescuePasswordHash: cfg.RescuePasswordHash,
		WatchdogAction: cfg.WatchdogAction, WatchdogMaxReboots: cfg.WatchdogMaxReboots,
		AgentTokenRequired: cfg.AgentTokenRequired, RequireTLS: cfg.RequireTLS,
		RestrictLookup: cfg.RestrictLookup, FastTrack: cfg.FastTrack,
		PowerInterfaces: cfg.PowerInterfaces, DeployInterfaces: cfg.DeployInterfaces, Logger: cfg.Logger,
	})
	if err := cond.Recover(ctx); err != nil {
		st.Close()
		return nil, err
	}
	d := &Driver{cfg: cfg, store: st, cond: cond, api: api.New(cond, cfg.Logger), log: cfg.Logger}
	d.handler = d.api
	if cfg.Profiler != nil {
		d.api.SetProfiler(cfg.Profiler)
	}
	if shared {
		cl = cluster.New(reg, cluster.Config{Host: cond.Config().Host, Group: cfg.ConductorGroup, Drivers: cond.EnabledDrivers(),
			HeartbeatInterval: cfg.ConductorHeartbeatInterval, Timeout: cfg.ConductorTimeout,
			PartitionExponent: cfg.HashPartitionExponent, Replicas: cfg.HashDistributionReplicas,
			TakeOver: cond.TakeOver, Logger: cfg.Logger})
		d.cluster = cl
		d.api.SetOwner(func(n *store.Node) string {
			if o, ok := cl.Owner(n); ok {
				return o.Hostname
			}
			return ""
		})
		d.handler = &forwarder{host: cond.Config().Host, cl: cl, reg: reg, cond: cond, local: d.api, timeout: cfg.ConductorTimeout}
	}
	return d, nil
}

// OpenStore opens the store db names: PostgreSQL for a DSN starting with
// postgres:// or postgresql://, else the SQLite file at that path.
func OpenStore(ctx context.Context, db string) (store.Store, error) {
	if postgres.IsDSN(db) {
		return postgres.Open(ctx, db)
	}
	return sqlite.Open(ctx, db)
}

// Handler is the HTTP API (Ironic's /v1 subset and the agent endpoints).
// On a shared store it forwards actions to the node's owner.
func (d *Driver) Handler() http.Handler { return d.handler }

// Cluster is the conductors' ring on a shared store; nil with SQLite.
func (d *Driver) Cluster() *cluster.Cluster { return d.cluster }

// Conductor gives access to the engine (tests, benchmarks, the runner's
// periodic-check trigger).
func (d *Driver) Conductor() *conductor.Conductor { return d.cond }

// Check runs the periodic tasks once now (call-back timeouts, watchdog).
func (d *Driver) Check(ctx context.Context) error { return d.cond.Check(ctx, time.Now()) }

// Serve serves the API on ln and runs the periodic tasks until ctx is done,
// then shuts the server down (waiting up to 5 s for requests in flight).
func (d *Driver) Serve(ctx context.Context, ln net.Listener) error {
	srv := httpstop.New(&http.Server{Handler: d.handler, ReadHeaderTimeout: 10 * time.Second})
	for _, dep := range d.cfg.DeployInterfaces {
		// The PXE deploy puts the API's URL on the ramdisk's command line.
		if s, ok := dep.(interface{ SetAPIURL(string) }); ok {
			s.SetAPIURL("http://" + ln.Addr().String())
		}
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if d.cluster != nil {
		// Join the ring under the API's address, so the others forward to it.
		d.cluster.SetURL("http://" + ln.Addr().String())
		if err := d.cluster.Register(ctx, time.Now()); err != nil {
			return fmt.Errorf("register conductor %s: %w", d.cluster.Host(), err)
		}
		defer func() {
			uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer ucancel()
			if err := d.cluster.Unregister(uctx); err != nil {
				d.log.Error("unregister conductor", "err", err)
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		defer wg.Wait()
		if d.cluster != nil {
			wg.Go(func() { d.cluster.Run(pctx) })
		}
		d.cond.RunPeriodic(pctx, d.cfg.CheckInterval)
	}()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	d.log.Info("driver API listening", "addr", ln.Addr().String())
	var err error
	select {
	case <-ctx.Done():
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err = srv.Shutdown(sctx)
		scancel()
		<-errc
	case err = <-errc:
	}
	cancel()
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// ListenAndServe listens on Config.Listen and calls Serve.
func (d *Driver) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", d.cfg.Listen)
	if err != nil {
		return fmt.Errorf("driver API listen on %s: %w", d.cfg.Listen, err)
	}
	return d.Serve(ctx, ln)
}

// Close stops background work (waiting for it), closes what the power
// interfaces keep open (native IPMI's sessions) and closes the store.
func (d *Driver) Close() error {
	d.cond.Close()
	for _, pw := range d.cfg.PowerInterfaces {
		if c, ok := pw.(interface{ Close() error }); ok {
			_ = c.Close()
		}
	}
	return d.store.Close()
}
