package scenarios

import (
	"context"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `disk_image: id`: the node's disk holds this lab image, verified byte
// for byte.
type expectDiskImage string

func init() { registerExpectation("disk_image", func() expectation { return new(expectDiskImage) }) }

func (e *expectDiskImage) unset() bool { return *e == "" }

func (e *expectDiskImage) validate(v *validator, p string, l *Lab) {
	if !hasImage(l, string(*e)) {
		v.at(p, "no image %q in lab.images", string(*e))
	}
}

func (e *expectDiskImage) name() string { return "disk holds image " + string(*e) }

func (e *expectDiskImage) check(_ context.Context, _ *runner, n *lab.Node, _ ironic.Node) string {
	return verifyDisk(n.DiskPath(), string(*e))
}
