package scenarios

import (
	"context"

	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `reservation_free: true`: no conductor holds the node's lock (its
// reservation field is empty), as no lock may outlive the conductor that
// took it.
type expectReservationFree bool

func init() {
	registerExpectation("reservation_free", func() expectation { return new(expectReservationFree) })
}

func (e *expectReservationFree) unset() bool { return !bool(*e) }

func (e *expectReservationFree) validate(*validator, string, *Lab) {}

func (e *expectReservationFree) name() string { return "no reservation left" }

func (e *expectReservationFree) check(_ context.Context, _ *runner, _ *lab.Node, an ironic.Node) string {
	if an.Reservation != nil && *an.Reservation != "" {
		return "still reserved by " + *an.Reservation
	}
	return ""
}
