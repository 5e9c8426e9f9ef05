// Package interop is ironlab's interop tier: its tests run Debian's real
// OpenStack Ironic (ironic-api + ironic-conductor, started by
// scripts/ironic.sh on loopback) against the lab, as someone testing their own
// Ironic against ironlab would. `make interop` runs it; it has no code of its
// own beyond the tests.
package interop
