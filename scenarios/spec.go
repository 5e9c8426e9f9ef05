// Package scenarios holds the scenario file format, the runner that plays a
// scenario against a lab and a driver API, and the built-in scenario files.
package scenarios

import (
	"time"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/simulator/bmc"
	"github.com/ironlab/ironlab/simulator/fake"
	"github.com/ironlab/ironlab/simulator/imageserver"
	"github.com/ironlab/ironlab/simulator/redfish"
)

// Scenario is one scenario file. See the README for the format.
type Scenario struct {
	Name        string `yaml:"name" json:"name"`
	Description string `yaml:"description" json:"description,omitempty"`
	// Seed derives node names, UUIDs, MACs and BMC ports, so a rerun gives
	// the same lab.
	Seed  int64  `yaml:"seed" json:"seed"`
	Lab   Lab    `yaml:"lab" json:"lab"`
	Steps []Step `yaml:"steps" json:"steps"`
	// Only, when set, is the one target this scenario is for: "builtin"
	// (ironlab's driver: it tests what the spec asks and Ironic does not
	// do, such as the heartbeat watchdog) or "ironic". Against another
	// target it is not run, and the summary says so.
	Only string `yaml:"only" json:"only,omitempty"`

	File string `yaml:"-" json:"file"`
}

// Lab is a scenario's lab section.
type Lab struct {
	// Backend is "fake" (in-process machines) or "libvirt" (QEMU VMs).
	Backend string `yaml:"backend" json:"backend"`
	// HeartbeatTimeout is agent.heartbeat_timeout ("300s", "4s", or seconds).
	HeartbeatTimeout string `yaml:"heartbeat_timeout" json:"heartbeat_timeout,omitempty"`
	// AutomatedClean runs the erase clean steps on provide and undeploy.
	AutomatedClean *bool `yaml:"automated_clean" json:"automated_clean,omitempty"`
	// BMCAddressing is "port" (127.0.0.1:6230+i) or "ip" (127.0.0.x:623).
	BMCAddressing string `yaml:"bmc_addressing" json:"bmc_addressing,omitempty"`
	// BMCBasePort is the first BMC's UDP port in port addressing (default 0:
	// every BMC takes a free port, so runs never collide).
	BMCBasePort int `yaml:"bmc_base_port" json:"bmc_base_port,omitempty"`
	// IPMIMinInterval is the driver's minimum interval between commands to one BMC.
	IPMIMinInterval string `yaml:"ipmi_min_interval" json:"ipmi_min_interval,omitempty"`
	// FastTrack keeps agents running on available nodes (the spec's
	// long-running model): cleaning leaves the agent up and a deploy skips
	// the first power cycle.
	FastTrack bool `yaml:"fast_track" json:"fast_track,omitempty"`
	// WatchdogAction is what a missed heartbeat on a powered-on,
	// unprovisioned node brings: "reboot" (default), "maintenance" or "off".
	WatchdogAction string `yaml:"watchdog_action" json:"watchdog_action,omitempty"`
	// WatchdogMaxReboots caps watchdog reboots before maintenance (default 3).
	WatchdogMaxReboots int `yaml:"watchdog_max_reboots" json:"watchdog_max_reboots,omitempty"`
	// DeployCallbackTimeout and CleanCallbackTimeout fail a node that waits
	// longer for its agent (default 1800s, as Ironic).
	DeployCallbackTimeout string `yaml:"deploy_callback_timeout" json:"deploy_callback_timeout,omitempty"`
	CleanCallbackTimeout  string `yaml:"clean_callback_timeout" json:"clean_callback_timeout,omitempty"`
	// RescueCallbackTimeout fails a node in rescue wait whose rescue
	// ramdisk does not call back (default 1800s, as Ironic).
	RescueCallbackTimeout string `yaml:"rescue_callback_timeout" json:"rescue_callback_timeout,omitempty"`
	// DriverProcess runs the built-in driver as a child process (implied by
	// a conductor fault, which kills it with SIGKILL).
	DriverProcess bool `yaml:"driver_process" json:"driver_process,omitempty"`
	// Conductors is how many conductors share the nodes (default 1): each
	// an `ironlab driver` child process named c1..cN on one PostgreSQL
	// (store: postgres, the default with more than one).
	Conductors int `yaml:"conductors" json:"conductors,omitempty"`
	// Store is the conductors' database: sqlite (a file; one conductor)
	// or postgres (a PostgreSQL of the lab's own, on loopback).
	Store string `yaml:"store" json:"store,omitempty"`
	// ConductorTimeout is when a conductor without a heartbeat is dead
	// (default 3s in runs; it heartbeats 5 times as often).
	ConductorTimeout string      `yaml:"conductor_timeout" json:"conductor_timeout,omitempty"`
	Images           []ImageSpec `yaml:"images" json:"images"`
	Groups           []Group     `yaml:"groups" json:"groups"`

	// The libvirt backend: Accel is auto (default), kvm or tcg; PXE is
	// direct (default: direct kernel boot) or ipxe (real iPXE through
	// QEMU's TFTP); MemoryMB is each VM's RAM (default 256); LibvirtURI
	// defaults to qemu:///system.
	Accel      string `yaml:"accel" json:"accel,omitempty"`
	PXE        string `yaml:"pxe" json:"pxe,omitempty"`
	MemoryMB   int    `yaml:"memory_mb" json:"memory_mb,omitempty"`
	LibvirtURI string `yaml:"libvirt_uri" json:"libvirt_uri,omitempty"`

	heartbeatTimeout      time.Duration
	ipmiMinInterval       time.Duration
	deployCallbackTimeout time.Duration
	cleanCallbackTimeout  time.Duration
	rescueCallbackTimeout time.Duration
	conductorTimeout      time.Duration
}

// ImageSpec is a test disk image the lab builds and serves.
type ImageSpec struct {
	ID   string `yaml:"id" json:"id"`
	Size string `yaml:"size" json:"size"` // "64MiB", "1GiB" or bytes
	// Format is how the image server serves it: raw (default) or qcow2
	// (the agent converts it to raw on the disk, as IPA does).
	Format string `yaml:"format" json:"format,omitempty"`

	size int64
}

// Group is a set of alike nodes: their hardware, and how they are
// enrolled (derived from the hardware unless the group names its class).
type Group struct {
	Name  string `yaml:"name" json:"name"`
	Count int    `yaml:"count" json:"count"`
	// BMC is the nodes' out-of-band control: "ipmi" (a virtual IPMI BMC
	// each), "ssh" (a login on the lab's virtualization host, virsh over
	// SSH) or "none" (powered on from the start, fake power). Default: the
	// one the driver class drives.
	BMC string `yaml:"bmc" json:"bmc,omitempty"`
	// RedfishListen is, for bmc redfish, "shared" (default: one https
	// listener for the group's nodes, /redfish/v1/Systems/{uuid}, as
	// sushy-tools serves them) or "per-node" (every node a Redfish service
	// on its own port, as a server's own BMC).
	RedfishListen string `yaml:"redfish_listen" json:"redfish_listen,omitempty"`
	// Deploy is how the nodes are provisioned, which decides what their
	// network boot serves: "agent" (the agent ramdisk; default) or "pxe"
	// (the PXE driver's deploy ramdisk).
	Deploy string `yaml:"deploy" json:"deploy,omitempty"`
	// NICs is the number of network interfaces (default 1; the first
	// network-boots); each is enrolled as a port.
	NICs int `yaml:"nics" json:"nics,omitempty"`
	// Driver is the driver class the nodes are enrolled with (fake_agent,
	// agent_ipmitool, agent_pyghmi, ...). Default: the class the hardware
	// maps to (package enroll); set, it overrides that and must drive the
	// hardware, and alone it implies the hardware.
	Driver string `yaml:"driver" json:"driver"`
	// Dialect is the agent's API: "v1" (lookup/heartbeat with tokens) or
	// "legacy" (the spec's vendor_passthru).
	Dialect string `yaml:"dialect" json:"dialect,omitempty"`
	// Boot is how a real Ironic boots the agent: "pxe" (default) or
	// "virtual-media" (Redfish groups: boot_interface
	// redfish-virtual-media; scenarios with only: ironic, as ironlab's
	// driver has no virtual media boot).
	Boot     string `yaml:"boot" json:"boot,omitempty"`
	CPUs     int    `yaml:"cpus" json:"cpus,omitempty"`
	MemoryMB int    `yaml:"memory_mb" json:"memory_mb,omitempty"`
	DiskSize string `yaml:"disk_size" json:"disk_size,omitempty"`
	// BootMode is "bios" or "uefi".
	BootMode string `yaml:"boot_mode" json:"boot_mode,omitempty"`
	// BMCUser and BMCPassword are the virtual BMCs' credentials.
	BMCUser     string `yaml:"bmc_user" json:"bmc_user,omitempty"`
	BMCPassword string `yaml:"bmc_password" json:"bmc_password,omitempty"`
	// SecureErase says the disks support secure erase: erase_devices takes
	// the (emulated, faster) secure-erase path.
	SecureErase bool `yaml:"secure_erase" json:"secure_erase,omitempty"`
	// POSTTime is how long a fake machine's firmware takes before a network
	// boot ("2s"), so that skipped boots show in timings.
	POSTTime string `yaml:"post_time" json:"post_time,omitempty"`

	diskSize int64
	postTime time.Duration
}

// Step is one step; exactly one of its fields is set.
type Step struct {
	Enroll   *Target `yaml:"enroll" json:"enroll,omitempty"`
	Manage   *Target `yaml:"manage" json:"manage,omitempty"`
	Provide  *Target `yaml:"provide" json:"provide,omitempty"`
	Deploy   *Deploy `yaml:"deploy" json:"deploy,omitempty"`
	Undeploy *Target `yaml:"undeploy" json:"undeploy,omitempty"`
	Wait     *Wait   `yaml:"wait" json:"wait,omitempty"`
	Clean    *Clean  `yaml:"clean" json:"clean,omitempty"`
	Abort    *Target `yaml:"abort" json:"abort,omitempty"`
	// Rescue and Unrescue send the verbs rescue (with the password) and
	// unrescue (API 1.38).
	Rescue   *Rescue `yaml:"rescue" json:"rescue,omitempty"`
	Unrescue *Target `yaml:"unrescue" json:"unrescue,omitempty"`
	Power    *Power  `yaml:"power" json:"power,omitempty"`
	Fault    *Fault  `yaml:"fault" json:"fault,omitempty"`
	Expect   *Expect `yaml:"expect" json:"expect,omitempty"`
	Sleep    string  `yaml:"sleep" json:"sleep,omitempty"`
	// VirtualMedia and FirmwareUpdate act on Redfish nodes through their
	// BMC, as a user with curl would (not through the driver).
	VirtualMedia   *VirtualMedia   `yaml:"virtual_media" json:"virtual_media,omitempty"`
	FirmwareUpdate *FirmwareUpdate `yaml:"firmware_update" json:"firmware_update,omitempty"`
	// Only runs the step against one target: "builtin" or "ironic" (a
	// lab extension a real Ironic lacks, or what only ironlab's event API
	// can show); against the other it is skipped with a line saying so.
	Only string `yaml:"only" json:"only,omitempty"`

	line  int
	sleep time.Duration
}

// Target selects nodes: group names or node names; none means every node.
type Target struct {
	Nodes []string `yaml:"nodes" json:"nodes,omitempty"`
}

// Deploy deploys an image of the lab to the selected nodes.
type Deploy struct {
	Nodes []string `yaml:"nodes" json:"nodes,omitempty"`
	Image string   `yaml:"image" json:"image"`
	// Checksum is how the driver tells the agent the image's checksum:
	// "sha512" (os_hash_algo/os_hash_value, the default, as Glance computes
	// os_hash_value), "sha256" (the same fields) or "md5" (image_checksum).
	Checksum string `yaml:"checksum" json:"checksum,omitempty"`
	// Configdrive is sent with the deploy request, as `baremetal node
	// deploy --config-drive` does: meta_data, user_data, network_data and
	// vendor_data; the driver builds the config-2 image from it.
	Configdrive map[string]any `yaml:"configdrive" json:"configdrive,omitempty"`
}

// Rescue sends the verb rescue to the selected (active) nodes: they boot
// the agent as a rescue ramdisk with Password for the rescue user.
type Rescue struct {
	Nodes    []string `yaml:"nodes" json:"nodes,omitempty"`
	Password string   `yaml:"password" json:"password"`
}

// Power changes the selected nodes' power through the driver API.
type Power struct {
	Nodes []string `yaml:"nodes" json:"nodes,omitempty"`
	// Target is "power on", "power off", "rebooting" or "soft power off".
	Target string `yaml:"target" json:"target"`
}

// VirtualMedia boots the selected Redfish nodes from a virtual CD: it
// inserts the image (InsertMedia), sets a one-time boot from Cd and powers
// the node on (or restarts it), then waits for the machine's firmware to
// report the CD boot on the console.
type VirtualMedia struct {
	Nodes []string `yaml:"nodes" json:"nodes,omitempty"`
	// Image is a lab image whose URL goes into the drive.
	Image string `yaml:"image" json:"image,omitempty"`
	// MissingImage inserts a URL the lab's image server answers 404 for:
	// the boot fails, on the console.
	MissingImage bool `yaml:"missing_image" json:"missing_image,omitempty"`
	// AgentISO (libvirt backend) inserts the node's agent ISO, which the
	// lab builds (ISOLINUX + the agent ramdisk, the node's agent command
	// line): the VM boots it and the step waits for the agent on the
	// console.
	AgentISO bool `yaml:"agent_iso" json:"agent_iso,omitempty"`
	// ExpectFailure: the BMC refuses the insert (a fault), and the step
	// checks it did and left the drive as it was.
	ExpectFailure bool `yaml:"expect_failure" json:"expect_failure,omitempty"`
}

// FirmwareUpdate runs UpdateService.SimpleUpdate on the selected Redfish
// nodes with a lab firmware image of Version and waits for its task.
type FirmwareUpdate struct {
	Nodes   []string `yaml:"nodes" json:"nodes,omitempty"`
	Version string   `yaml:"version" json:"version"`
	// Target is bios (the system's firmware, default) or bmc.
	Target string `yaml:"target" json:"target,omitempty"`
	// ExpectFailure: the task must end in Exception.
	ExpectFailure bool `yaml:"expect_failure" json:"expect_failure,omitempty"`
}

// Clean runs manual cleaning (manageable nodes) with explicit steps.
type Clean struct {
	Nodes []string    `yaml:"nodes" json:"nodes,omitempty"`
	Steps []CleanStep `yaml:"steps" json:"steps"`
}

// CleanStep is one step of a manual clean, as Ironic's API takes it.
type CleanStep struct {
	Interface string         `yaml:"interface" json:"interface"`
	Step      string         `yaml:"step" json:"step"`
	Args      map[string]any `yaml:"args" json:"args,omitempty"`
}

// Fault injects failures, as data. Each part set replaces that part's
// knobs on the selected nodes (an empty part, e.g. agent: {}, clears them).
// Without after/after_events the fault applies when the step runs.
type Fault struct {
	Nodes []string `yaml:"nodes" json:"nodes,omitempty"`
	// After applies the fault this long after the step, in the background.
	After string `yaml:"after" json:"after,omitempty"`
	// AfterEvents applies it to each node once the node has recorded this
	// many more events (state transitions, commands, heartbeats), in the background.
	AfterEvents int `yaml:"after_events" json:"after_events,omitempty"`
	// Agent sets the knobs of the node's running agent and of every agent it
	// boots later; with until_reboot, only of the running one (or, if none
	// runs, the next one), so a reboot brings a healthy agent.
	Agent       *fakeagent.Faults `yaml:"agent" json:"agent,omitempty"`
	UntilReboot bool              `yaml:"until_reboot" json:"until_reboot,omitempty"`
	Machine     *fake.Faults      `yaml:"machine" json:"machine,omitempty"`
	BMC         *bmc.Faults       `yaml:"bmc" json:"bmc,omitempty"`
	// Redfish sets the knobs of the node's system on its Redfish BMC.
	Redfish *redfish.Faults `yaml:"redfish" json:"redfish,omitempty"`
	// Image sets the image server's knobs for one image.
	Image *ImageFault `yaml:"image" json:"image,omitempty"`
	// Conductor kills the driver process with SIGKILL and restarts it.
	Conductor *ConductorFault `yaml:"conductor" json:"conductor,omitempty"`

	after time.Duration
}

// ImageFault is a fault of the image server for one image.
type ImageFault struct {
	ID                 string `yaml:"id" json:"id"`
	imageserver.Faults `yaml:",inline" json:",inline"`
}

// ConductorFault kills a conductor (SIGKILL), pauses it (SIGSTOP, then
// SIGCONT: a hung process that stops heartbeating) or starts a new one
// (join): now, or when a selected node reaches a provision state or
// records an event of that name.
type ConductorFault struct {
	// Name is the conductor (c1..cN of lab.conductors, or one an earlier
	// step joined); empty: the one conductor of a lab without names.
	Name string `yaml:"name" json:"name,omitempty"`
	// KillAt is when the fault fires: a provision state ("wait call-back")
	// or an event name ("deploy.execute_deploy_step"); empty: at once.
	// With a name, only nodes that conductor services count.
	KillAt string `yaml:"kill_at" json:"kill_at,omitempty"`
	// Pause stops the conductor for this long (SIGSTOP) instead of
	// killing it, then lets it go on (SIGCONT).
	Pause string `yaml:"pause" json:"pause,omitempty"`
	// RestartAfter is how long a killed conductor stays dead before it is
	// started again on its port and database (default 1s for the one
	// conductor of a lab; a named one stays dead unless it is set).
	RestartAfter string `yaml:"restart_after" json:"restart_after,omitempty"`
	// Join starts a new conductor of this name on the lab's PostgreSQL.
	Join bool `yaml:"join" json:"join,omitempty"`

	restartAfter time.Duration
	restart      bool
	pause        time.Duration
}

// Wait waits until every selected node is in State, or (with Event) has
// recorded an event of that name since the wait began or earlier.
type Wait struct {
	Nodes   []string `yaml:"nodes" json:"nodes,omitempty"`
	State   string   `yaml:"state" json:"state,omitempty"`
	Event   string   `yaml:"event" json:"event,omitempty"`
	Timeout string   `yaml:"timeout" json:"timeout,omitempty"`
	// AllowFailed (with state): a node settled in a failed state ends
	// the wait as one in State does and is no failure of it, for runs
	// where some nodes are meant to fail (a takeover) and expectations
	// judge them.
	AllowFailed bool `yaml:"allow_failed" json:"allow_failed,omitempty"`

	timeout time.Duration
}
