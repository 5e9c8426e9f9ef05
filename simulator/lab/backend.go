package lab

import (
	"fmt"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/fake"
)

// backend is where a lab's machines run, chosen once in New from
// Spec.Backend ("fake" or "libvirt"). What a machine can do beyond
// simulator.Machine is found on the machine by interface
// (simulator.FaultInjector, simulator.BootConsole, simulator.FirmwareStore).
type backend interface {
	// machine builds node n's machine of hardware hw: powered off, its
	// disk empty.
	machine(n *Node, hw simulator.Hardware) (simulator.Machine, error)
	// start readies what the machines network-boot, once Lab.Start knows
	// the driver's URL.
	start() error
	// checkAgentFaults says why n's agents cannot take faults (for every
	// boot, or until the next reboot), if they cannot; setAgentFaults
	// gives them.
	checkAgentFaults(n *Node, everyBoot bool) error
	setAgentFaults(n *Node, f fakeagent.Faults, everyBoot bool) error
	// guestURL is a URL on the host's loopback as the machines reach it.
	guestURL(u string) string
	close() error
}

// accelerated is a backend whose machines run under an accelerator.
type accelerated interface {
	accel() string
}

// ramdiskBackend is a backend whose machines boot a real agent ramdisk,
// whose files a real Ironic can be given as deploy_kernel/deploy_ramdisk.
type ramdiskBackend interface {
	deployRamdisk() (kernel, initrd string)
}

// DeployRamdiskURLs registers (once) and returns the URLs of the deploy
// kernel and ramdisk on the image server: the agent ramdisk the machines
// boot where the backend has one (libvirt), small stand-ins otherwise (fake
// machines start an in-process agent on a network boot, whatever the files
// hold).
func (l *Lab) DeployRamdiskURLs() (kernel, ramdisk string) {
	l.bootFilesOnce.Do(func() {
		if b, ok := l.backend.(ramdiskBackend); ok {
			k, r := b.deployRamdisk()
			l.Images.AddFilePath("deploy_kernel", k)
			l.Images.AddFilePath("deploy_ramdisk", r)
			return
		}
		l.Images.AddFile("deploy_kernel", []byte("ironlab deploy kernel stand-in: fake machines boot an in-process agent\n"))
		l.Images.AddFile("deploy_ramdisk", []byte("ironlab deploy ramdisk stand-in: fake machines boot an in-process agent\n"))
	})
	return l.Images.FileURL("deploy_kernel"), l.Images.FileURL("deploy_ramdisk")
}

// fakeBackend runs fake machines in process; a network boot runs what
// the lab serves (NetBoot) in process too.
type fakeBackend struct{ l *Lab }

func (b fakeBackend) machine(n *Node, hw simulator.Hardware) (simulator.Machine, error) {
	return fake.New(fake.Options{Name: n.Name, UUID: n.UUID, Hardware: hw, NetBoot: b.l, POSTTime: n.Hardware.POSTTime})
}

func (fakeBackend) start() error { return nil }

func (fakeBackend) checkAgentFaults(*Node, bool) error { return nil }

func (fakeBackend) setAgentFaults(n *Node, f fakeagent.Faults, everyBoot bool) error {
	return n.setInProcessFaults(f, everyBoot)
}

func (fakeBackend) guestURL(u string) string { return u }

func (fakeBackend) close() error { return nil }

// errOneNIC: a libvirt guest has one NIC (user-mode networking).
var errOneNIC = fmt.Errorf("the libvirt backend gives a VM one NIC")
