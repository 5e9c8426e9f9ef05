package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ironlab/ironlab/driver"
	"github.com/ironlab/ironlab/driver/store/postgres"
	"github.com/ironlab/ironlab/images"
	"github.com/ironlab/ironlab/scenarios"
	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/scenarios/report"
	"github.com/ironlab/ironlab/simulator/lab"
	"github.com/ironlab/ironlab/simulator/lab/enroll"
	"github.com/ironlab/ironlab/simulator/pgserver"
)

func init() {
	register("up", "start a lab (nodes, BMCs, image server, driver) and keep it running", upCmd)
}

func upCmd(args []string) int {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	nodes := fs.Int("nodes", 4, "number of nodes")
	class := fs.String("driver-class", "agent_ipmitool", "driver class of the nodes (fake_agent, agent_ipmitool, agent_pyghmi, agent_redfish, pxe_redfish)")
	bmcKind := fs.String("bmc", "ipmi", "the nodes' BMC: ipmi, or redfish (one https Redfish service for the nodes; the class becomes agent_redfish or pxe_redfish)")
	redfishPort := fs.Int("redfish-port", 8000, "TCP port of the Redfish service on 127.0.0.1 (with --bmc redfish; per-node: the first node's, the next node's is one more; 0: free ports)")
	redfishListen := fs.String("redfish-listen", "shared", "with --bmc redfish: shared (one listener, every node a system /redfish/v1/Systems/<uuid>) or per-node (every node its own listener and port); with --scenario it overrides the Redfish groups' redfish_listen")
	redfishHTTP := fs.Bool("redfish-http", false, "serve Redfish over plain http instead of https with a self-signed certificate")
	dialect := fs.String("dialect", "v1", "the agents' lookup/heartbeat dialect: v1 or legacy")
	backend := fs.String("backend", "fake", "machine backend: fake, or libvirt (real QEMU VMs; needs libvirtd, see scripts/vm-deps.sh)")
	accel := fs.String("accel", "auto", "libvirt backend: accelerator, auto|kvm|tcg")
	pxe := fs.String("pxe", "direct", "libvirt backend: network boot, direct (kernel boot) or ipxe (real iPXE over QEMU's TFTP)")
	vmMemory := fs.Int("vm-memory", 256, "libvirt backend: each VM's RAM in MiB")
	stateDir := fs.String("state-dir", ".state/up", "where disks, the database and nodes.yaml go")
	addressing := fs.String("bmc-addressing", "port", "port: BMC i on 127.0.0.1:<bmc-base-port+i>; ip: BMC i on 127.0.0.<2+i>:623 (needs root)")
	basePort := fs.Int("bmc-base-port", 6230, "first BMC's UDP port in port addressing")
	user := fs.String("bmc-user", "admin", "BMC user name")
	password := fs.String("bmc-password", "password", "BMC password")
	diskSize := fs.String("disk-size", "1GiB", "each node's disk")
	imageSize := fs.String("image-size", "64MiB", "size of the served test image 'demo-os'")
	scenario := fs.String("scenario", "", "take the lab (groups, images, seed) from this scenario file or built-in scenario instead of the flags above")
	driverURL := fs.String("driver-url", "", "point the agents at this driver API (e.g. a real Ironic) and start no built-in driver")
	targetFlag := fs.String("target", "", "what nodes.yaml enrolls into: builtin (the spec's classes, agent_ipmitool...) or ironic (hardware types and interfaces, deploy_kernel/deploy_ramdisk); default builtin, or with --driver-url what its driver list says (ironic if it does not answer)")
	nodesDriver := fs.String("nodes-yaml-driver", "", "override the driver name written to nodes.yaml (default: what --target gives each node)")
	uiAddr := fs.String("ui-addr", "127.0.0.1:0", "loopback address of the live dashboard (default: a free port)")
	conductors := fs.Int("conductors", 1, "conductors c1..cN sharing the nodes on the hash ring (more than 1 needs --store postgres, the default then)")
	storeKind := fs.String("store", "", "the conductors' database: sqlite (<state-dir>/ironlab.db; one conductor) or postgres (a PostgreSQL of the lab's own in <state-dir>/postgres on 127.0.0.1, or --db postgres://...); default sqlite, postgres with --conductors > 1")
	var df driverFlags
	df.add(fs, "")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: ironlab up [flags]

Starts a lab and keeps it running until SIGINT or SIGTERM: machines, one
virtual BMC per IPMI-powered node (or, with --bmc redfish, one Redfish
service for the nodes), the image server, the in-process agents
and (unless --driver-url) the built-in driver. Writes <state-dir>/nodes.yaml
for 'baremetal create' and prints where everything listens, including the
live dashboard (dashboard: http://127.0.0.1:<port>/). With --conductors N,
N built-in conductors c1..cN share the nodes on one PostgreSQL (its own,
started in <state-dir>/postgres on 127.0.0.1, or --db postgres://...); up
prints each one's API, any of which takes every request.

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if err := df.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "ironlab up:", err)
		return 2
	}
	if err := upStore(conductors, storeKind, df.db, *driverURL != ""); err != nil {
		fmt.Fprintln(os.Stderr, "ironlab up:", err)
		return 2
	}
	switch *bmcKind {
	case "ipmi":
	case "redfish":
		// The class's deploy on Redfish hardware (one mapping: package enroll).
		c, ok := enroll.Lookup(*class)
		if ok && c.BMC == lab.BMCNone {
			fmt.Fprintf(os.Stderr, "ironlab up: --bmc redfish: %s nodes have no BMC\n", *class)
			return 2
		}
		if ok {
			rc, err := enroll.Default(lab.BMCRedfish, c.Deploy)
			if err != nil {
				fmt.Fprintln(os.Stderr, "ironlab up: --bmc redfish:", err)
				return 2
			}
			*class = rc.Name // --target ironic enrolls them as hardware type redfish
		}
	default:
		fmt.Fprintf(os.Stderr, "ironlab up: --bmc %q: want ipmi or redfish\n", *bmcKind)
		return 2
	}
	listen := lab.RedfishListen(*redfishListen)
	if listen != lab.RedfishShared && listen != lab.RedfishPerNode {
		fmt.Fprintf(os.Stderr, "ironlab up: --redfish-listen %q: want %s or %s\n", *redfishListen, lab.RedfishShared, lab.RedfishPerNode)
		return 2
	}
	if listen == lab.RedfishPerNode && *bmcKind != "redfish" && *scenario == "" {
		fmt.Fprintln(os.Stderr, "ironlab up: --redfish-listen per-node needs --bmc redfish")
		return 2
	}
	spec := lab.Spec{Name: "up", StateDir: *stateDir, ImageDir: defaultCache("images"), Backend: *backend,
		BMCAddressing: *addressing, BMCBasePort: *basePort, RedfishPort: *redfishPort, RedfishHTTP: *redfishHTTP}
	if *scenario != "" {
		s, err := scenarios.Load(*scenario)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		ls := scenarios.LabSpec(s)
		ls.StateDir, ls.ImageDir, ls.BMCAddressing, ls.BMCBasePort, ls.RedfishPort = spec.StateDir, spec.ImageDir, *addressing, *basePort, *redfishPort
		ls.RedfishHTTP = *redfishHTTP
		if flagSet(fs, "redfish-listen") {
			for i := range ls.Groups {
				if ls.Groups[i].BMC == lab.BMCRedfish {
					ls.Groups[i].RedfishListen = listen
				}
			}
		}
		spec = ls
	} else {
		disk, err := scenarios.ParseSize(*diskSize)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ironlab up: --disk-size:", err)
			return 2
		}
		img, err := scenarios.ParseSize(*imageSize)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ironlab up: --image-size:", err)
			return 2
		}
		if *nodes < 1 || *nodes > scenarios.MaxNodes {
			fmt.Fprintf(os.Stderr, "ironlab up: --nodes must be 1 to %d\n", scenarios.MaxNodes)
			return 2
		}
		if _, err := raiseFDLimit(*nodes); err != nil {
			fmt.Fprintln(os.Stderr, "ironlab up: warning:", err)
		}
		g := lab.GroupSpec{Name: "node", Count: *nodes,
			Hardware: lab.Hardware{Firmware: "bios", CPUs: 2, MemoryMB: 2048, DiskSize: disk, RedfishListen: listen},
			BMCUser:  *user, BMCPassword: *password,
			Enrollment: lab.Enrollment{Driver: *class, Dialect: *dialect}}
		if err := enroll.Complete(&g); err != nil { // the class implies the hardware
			fmt.Fprintln(os.Stderr, "ironlab up: --driver-class:", err)
			return 2
		}
		spec.Groups = []lab.GroupSpec{g}
		spec.Images = []images.Spec{{ID: "demo-os", Size: img}}
	}
	if err := checkVMFlags(spec.Backend, *accel, *pxe); err != nil {
		fmt.Fprintln(os.Stderr, "ironlab up:", err)
		return 2
	}
	if *scenario == "" {
		spec.Libvirt.Accel, spec.Libvirt.PXE, spec.Libvirt.MemoryMB = *accel, *pxe, *vmMemory
	}
	spec.Libvirt.Progress = os.Stderr
	spec.Libvirt.AgentBinary, spec.Libvirt.CacheDir = agentBinary(), ramdiskCache()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	spec.Logger = logger
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Printf("building a lab of %d nodes in %s ...\n", countNodes(spec), *stateDir)
	l, err := lab.New(spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ironlab up:", err)
		return 1
	}
	defer l.Close()

	url := *driverURL
	var apis []conductorAPI
	if url == "" && *storeKind == "postgres" {
		if df.bootDir == "" {
			df.bootDir = l.BootDir()
		}
		var stopAll func()
		apis, stopAll, err = startConductors(ctx, *stateDir, *conductors, &df, logger)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ironlab up:", err)
			return 1
		}
		defer stopAll()
		url = apis[0].url
	}
	if url == "" {
		if df.db == "" {
			df.db = filepath.Join(*stateDir, "ironlab.db")
		}
		if df.bootDir == "" {
			df.bootDir = l.BootDir() // the PXE deploy writes where the lab's machines boot from
		}
		d, err := driver.New(ctx, df.config(logger))
		if err != nil {
			fmt.Fprintln(os.Stderr, "ironlab up: driver:", err)
			return 1
		}
		defer d.Close()
		ln, err := net.Listen("tcp", df.listen)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ironlab up: driver API:", err)
			return 1
		}
		go d.Serve(ctx, ln)
		url = "http://" + ln.Addr().String()
	}
	// The lab's agents call this API: know that it answers, and which
	// microversion, before they boot.
	api, err := ironic.New(ctx, url, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ironlab up:", err)
		return 1
	}
	if err := l.Start(ctx, url); err != nil {
		fmt.Fprintln(os.Stderr, "ironlab up:", err)
		return 1
	}
	target, err := upTarget(ctx, *targetFlag, *driverURL != "", api)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ironlab up:", err)
		return 2
	}
	nodesFile := filepath.Join(*stateDir, "nodes.yaml")
	if err := enroll.WriteNodesYAML(l, nodesFile, target, *nodesDriver); err != nil {
		fmt.Fprintln(os.Stderr, "ironlab up:", err)
		return 1
	}
	dash := report.NewDashboard(logger, 0)
	dash.SetTarget(scenarios.DashboardTarget("up", url, l))
	dashURL, err := dash.Listen(ctx, *uiAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ironlab up:", err)
		return 1
	}
	fmt.Printf("dashboard: %s\n", dashURL)
	isos, err := agentISOs(ctx, l)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ironlab up:", err)
		return 1
	}
	if len(apis) > 0 {
		fmt.Printf("conductors (PostgreSQL %s; any API takes every request, actions go to each node's conductor):\n", apis[0].db)
		for _, a := range apis {
			fmt.Printf("  %-4s %s\n", a.name, a.url)
		}
		fmt.Printf("try:  curl -s -H 'X-OpenStack-Ironic-API-Version: 1.78' %s/v1/conductors\n", url)
	}
	printLab(l, url, api.Version(), nodesFile, target, isos)
	<-ctx.Done()
	fmt.Println("\nshutting the lab down")
	return 0
}

// flagSet says whether the command line gave flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func countNodes(s lab.Spec) int {
	n := 0
	for _, g := range s.Groups {
		n += g.Count
	}
	return n
}

func printLab(l *lab.Lab, driverURL, apiVersion, nodesFile string, target enroll.Target, isos map[string]string) {
	fmt.Printf("\ndriver API:   %s\n", driverURL)
	fmt.Printf("API version:  %s (the newest both the driver and ironlab know)\n", apiVersion)
	for _, id := range l.ImageIDs() {
		info, _ := l.Images.Info(id)
		fmt.Printf("image:        %s  (sha256 %s)\n", l.ImageURL(id), info.SHA256)
	}
	if accel := l.Accel(); accel != "" {
		fmt.Printf("VMs:          libvirt domains ironlab-<lab>-<node>, accel %s, boot folder %s\n", accel, l.BootDir())
	} else {
		fmt.Printf("agents:       http://%s/<node-uuid>\n", l.AgentAddr())
	}
	fmt.Printf("nodes.yaml:   %s   (baremetal create %s; enrolls into %s)\n\n", nodesFile, nodesFile, targetName(target))
	var first, firstRF *lab.Node
	for i, n := range l.Nodes() {
		bmcAddr := "-"
		if n.BMC != nil {
			bmcAddr = n.BMC.Addr().String()
			if first == nil {
				first = n
			}
		}
		if n.Redfish != nil {
			bmcAddr = n.RedfishURL() + n.Redfish.Path()
			if firstRF == nil {
				firstRF = n
			}
		}
		if i < 20 {
			fmt.Printf("  %-10s %-15s %s  mac %s  bmc %s\n", n.Name, n.Driver, n.UUID, strings.Join(n.MACs, ","), bmcAddr)
		}
	}
	if len(l.Nodes()) > 20 {
		fmt.Printf("  ... and %d more (see nodes.yaml)\n", len(l.Nodes())-20)
	}
	if first != nil {
		ap := first.BMC.Addr()
		fmt.Printf("\ntry:  ipmitool -I lanplus -H %s -p %d -U %s -P %s power status\n",
			ap.Addr(), ap.Port(), first.BMCCreds.Username, first.BMCCreds.Password)
	}
	if firstRF != nil {
		fmt.Printf("\ntry:  %s\n", firstRF.RedfishCurl())
	}
	printAgentISOs(l, isos)
	fmt.Println("\nthe lab runs until Ctrl-C (SIGINT) or SIGTERM")
}

// agentISOs builds, on the libvirt backend, each Redfish node's agent ISO
// (Lab.AgentISOURL), so that a user can boot the agent from virtual media
// by hand; by node name. Other backends have none.
func agentISOs(ctx context.Context, l *lab.Lab) (map[string]string, error) {
	if l.Accel() == "" {
		return nil, nil
	}
	isos := map[string]string{}
	for _, n := range l.Nodes() {
		if n.Redfish == nil {
			continue
		}
		u, err := l.AgentISOURL(ctx, n)
		if err != nil {
			return nil, err
		}
		isos[n.Name] = u
	}
	return isos, nil
}

// printAgentISOs shows the agent ISOs and the curl lines of a virtual
// media boot of the first Redfish node: insert, boot override Cd, reset.
func printAgentISOs(l *lab.Lab, isos map[string]string) {
	for _, n := range l.Nodes() {
		u, ok := isos[n.Name]
		if !ok {
			continue
		}
		fmt.Printf("\nagent ISO:    %s  (each Redfish node's: /files/agent-<node>.iso)\n", u)
		base := strings.TrimSuffix(n.RedfishCurl(), n.RedfishURL()+n.Redfish.Path())
		req := func(method, path, body string) string {
			return fmt.Sprintf("%s-H 'Content-Type: application/json' -X %s %s%s -d '%s'", base, method, n.RedfishURL(), path, body)
		}
		fmt.Printf("boot it:      %s\n", req("POST", "/redfish/v1/Managers/"+n.Redfish.ID()+"/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia", `{"Image": "`+u+`"}`))
		fmt.Printf("              %s\n", req("PATCH", n.Redfish.Path(), `{"Boot": {"BootSourceOverrideTarget": "Cd", "BootSourceOverrideEnabled": "Once"}}`))
		fmt.Printf("              %s\n", req("POST", n.Redfish.Path()+"/Actions/ComputerSystem.Reset", `{"ResetType": "ForceRestart"}`))
		return
	}
}

// upTarget decides what nodes.yaml enrolls into: --target when given; the
// built-in driver when up starts it; else what the --driver-url API's driver
// list says it is.
func upTarget(ctx context.Context, flagValue string, external bool, api *ironic.Client) (enroll.Target, error) {
	if flagValue != "" {
		return enroll.ParseTarget(flagValue)
	}
	if !external {
		return enroll.TargetBuiltin, nil
	}
	names, err := api.Drivers(ctx)
	if err != nil {
		return "", fmt.Errorf("list the drivers of %s to tell ironlab's driver from a real Ironic (or give --target): %w", api.URL(), err)
	}
	return enroll.TargetOf(names), nil
}

func targetName(t enroll.Target) string {
	if t == enroll.TargetIronic {
		return "a real Ironic: hardware types (ipmi, redfish, manual-management), pxe boot, direct deploy"
	}
	return "ironlab's driver: the spec's classes"
}

// upStore settles --store from --conductors: postgres when several share
// the nodes, sqlite for one; a postgres:// --db means postgres too.
func upStore(conductors *int, store *string, db string, external bool) error {
	if *conductors < 1 || *conductors > 16 {
		return fmt.Errorf("--conductors must be 1 to 16, got %d", *conductors)
	}
	if *store == "" {
		*store = "sqlite"
		if *conductors > 1 || postgres.IsDSN(db) {
			*store = "postgres"
		}
	}
	switch *store {
	case "sqlite":
		if *conductors > 1 {
			return fmt.Errorf("--conductors %d share one database: want --store postgres (SQLite is one conductor's file)", *conductors)
		}
		if postgres.IsDSN(db) {
			return fmt.Errorf("--store sqlite with a PostgreSQL --db %s", postgres.Redact(db))
		}
	case "postgres":
		if db != "" && !postgres.IsDSN(db) {
			return fmt.Errorf("--store postgres: --db %q is not a postgres:// DSN (leave it out to start a PostgreSQL of the lab's own)", db)
		}
	default:
		return fmt.Errorf("--store %q: want sqlite or postgres", *store)
	}
	if external && (*conductors > 1 || *store == "postgres") {
		return errors.New("--driver-url starts no built-in driver: --conductors and --store postgres are for the built-in one")
	}
	return nil
}

// conductorAPI is one of up's conductors.
type conductorAPI struct{ name, url, db string }

// startConductors starts n built-in conductors c1..cn in this process on
// one PostgreSQL: df.db when it is a DSN, else one of the lab's own in
// stateDir/postgres. c1 listens on --listen, the others on free loopback
// ports; the PXE ramdisks call c1 back (--api-url, unless given). stop
// ends them, then the PostgreSQL started here.
func startConductors(ctx context.Context, stateDir string, n int, df *driverFlags, logger *slog.Logger) ([]conductorAPI, func(), error) {
	var pg *pgserver.Server
	dsn := df.db
	stops := []func(){}
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	if dsn == "" {
		var err error
		if pg, err = pgserver.Start(ctx, filepath.Join(stateDir, "postgres"), 0); err != nil {
			return nil, nil, fmt.Errorf("--store postgres: %w", err)
		}
		stops = append(stops, func() {
			if err := pg.Stop(); err != nil {
				logger.Warn("stop PostgreSQL", "err", err)
			}
		})
		if dsn, err = pg.CreateDatabase(ctx, "ironlab"); err != nil {
			stop()
			return nil, nil, err
		}
		fmt.Printf("PostgreSQL on 127.0.0.1:%d (data %s, log %s)\n", pg.Port, filepath.Join(pg.Dir, "data"), pg.Log)
	}
	var apis []conductorAPI
	for i := 1; i <= n; i++ {
		addr := df.listen
		if i > 1 {
			addr = "127.0.0.1:0"
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("conductor c%d API: %w", i, err)
		}
		if df.apiURL == "" {
			df.apiURL = "http://" + ln.Addr().String()
		}
		cfg := df.config(logger)
		cfg.DBPath, cfg.Host = dsn, fmt.Sprintf("c%d", i)
		d, err := driver.New(ctx, cfg)
		if err != nil {
			ln.Close()
			stop()
			return nil, nil, fmt.Errorf("conductor %s: %w", cfg.Host, err)
		}
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := d.Serve(sctx, ln); err != nil && !errors.Is(err, context.Canceled) {
				logger.Error("conductor stopped", "conductor", cfg.Host, "err", err)
			}
		}()
		stops = append(stops, func() { cancel(); <-done; d.Close() })
		apis = append(apis, conductorAPI{name: cfg.Host, url: "http://" + ln.Addr().String(), db: postgres.Redact(dsn)})
	}
	return apis, stop, nil
}
