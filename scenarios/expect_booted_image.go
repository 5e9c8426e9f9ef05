package scenarios

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `booted_image: id`: the machine's console since its last boot shows
// this image's marker, i.e. it booted the deployed disk.
type expectBootedImage string

func init() {
	registerExpectation("booted_image", func() expectation { return new(expectBootedImage) })
}

// bootWait bounds how long expect booted_image waits for a machine that
// was just powered on to print its image's marker.
const bootWait = 30 * time.Second

func (e *expectBootedImage) unset() bool { return *e == "" }

func (e *expectBootedImage) validate(v *validator, p string, l *Lab) {
	if !hasImage(l, string(*e)) {
		v.at(p, "no image %q in lab.images", string(*e))
	}
}

func (e *expectBootedImage) name() string { return "booted image " + string(*e) }

func (e *expectBootedImage) check(ctx context.Context, r *runner, n *lab.Node, _ ironic.Node) string {
	info, _ := r.lab.Images.Info(string(*e))
	// A node is active once its BMC has powered it on; a VM then still
	// boots for a moment (its BMC answers before the domain runs, as a
	// real BMC does): give its console bootWait.
	var msg string
	err := poll(ctx, 100*time.Millisecond, bootWait, func(context.Context) bool {
		log, err := sinceBoot(n.Machine)
		if err != nil {
			msg = "console: " + err.Error()
			return true
		}
		msg = ""
		return strings.Contains(log, info.Marker())
	})
	switch {
	case msg != "":
		return msg
	case err == errTimedOut:
		return fmt.Sprintf("the console since the last boot lacks %q (waited %s)", info.Marker(), bootWait)
	case err != nil:
		return "console: " + err.Error()
	}
	return ""
}

// lastBoot is the console output since the machine last booted.
func lastBoot(log string) string {
	if i := strings.LastIndex(log, "ironlab fake BIOS: boot"); i >= 0 {
		return log[i:]
	}
	return log
}
