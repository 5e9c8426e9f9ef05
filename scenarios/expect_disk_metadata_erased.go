package scenarios

import (
	"context"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `disk_metadata_erased: true`: the first and last MiB of the node's disk
// read zero (what erase_devices_metadata wipes).
type expectDiskMetadataErased bool

func init() {
	registerExpectation("disk_metadata_erased", func() expectation { return new(expectDiskMetadataErased) })
}

func (e *expectDiskMetadataErased) unset() bool { return !bool(*e) }

func (e *expectDiskMetadataErased) validate(*validator, string, *Lab) {}

func (e *expectDiskMetadataErased) name() string { return "disk metadata erased" }

func (e *expectDiskMetadataErased) check(_ context.Context, _ *runner, n *lab.Node, _ ironic.Node) string {
	if msg := checkZero(n.DiskPath(), 0, 1<<20); msg != "" {
		return "first MiB: " + msg
	}
	if msg := checkZero(n.DiskPath(), -(1 << 20), 1<<20); msg != "" {
		return "last MiB: " + msg
	}
	return ""
}
