package scenarios

import (
	"context"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `disk_zeroed: true`: every byte of the node's disk reads zero.
type expectDiskZeroed bool

func init() { registerExpectation("disk_zeroed", func() expectation { return new(expectDiskZeroed) }) }

func (e *expectDiskZeroed) unset() bool { return !bool(*e) }

func (e *expectDiskZeroed) validate(*validator, string, *Lab) {}

func (e *expectDiskZeroed) name() string { return "disk zeroed" }

func (e *expectDiskZeroed) check(_ context.Context, _ *runner, n *lab.Node, _ ironic.Node) string {
	return checkZero(n.DiskPath(), 0, -1)
}
