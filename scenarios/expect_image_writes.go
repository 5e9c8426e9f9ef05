package scenarios

import (
	"context"
	"fmt"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `image_writes_at_most: N`: the node's disk got an image at most N times
// in this run, counted on the machine's side (its agent's write_image or
// prepare_image, or its PXE deploy ramdisk's stream); 1 after one deploy
// says no two conductors wrote it.
type expectImageWritesAtMost int

func init() {
	registerExpectation("image_writes_at_most", func() expectation { return new(expectImageWritesAtMost) })
}

func (e *expectImageWritesAtMost) validate(v *validator, p string, _ *Lab) {
	if *e < 0 {
		v.at(p, "must not be negative, got %d", int(*e))
	}
}

func (e *expectImageWritesAtMost) name() string {
	return fmt.Sprintf("image written at most %d times", int(*e))
}

func (e *expectImageWritesAtMost) check(_ context.Context, r *runner, n *lab.Node, _ ironic.Node) string {
	// The agent logs under the node's name, the PXE deploy ramdisk under its UUID.
	if got := r.writes.count(n.Name) + r.writes.count(n.UUID); got > int(*e) {
		return fmt.Sprintf("the image was written %d times (at most %d expected)", got, int(*e))
	}
	return ""
}
