// Package contract holds the tests that the driver and the lab agree on
// the wires between them. The driver links nothing of the lab (see
// driver's TestDriverLinksNoLabCode), so each side owns its copy of a
// wire: the PXE deploy ramdisk's kernel command line words and key header
// (driver/deploy/pxe, fakeagent/pxedeploy), the boot folder's layout
// (driver/deploy/pxe, simulator/bootfiles) and the event detail that counts
// image bytes through the conductor (driver/deploy/pxe, scenarios). This
// package may import both sides; it has no code of its own.
package contract
