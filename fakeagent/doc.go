// Package fakeagent is ironlab's fake Ironic Python Agent (IPA).
//
// One Agent stands for the agent ramdisk of one machine. It looks its node up
// in the driver API (the spec's legacy vendor_passthru dialect or the modern
// /v1/lookup + /v1/heartbeat dialect with agent tokens), heartbeats with IPA's
// jitter, and serves IPA's REST API (/v1/status, /v1/commands) with IPA's
// command names and result shapes. Commands really act on the machine: the
// image writer downloads, verifies and streams an image onto a Disk, clean
// steps zero disks and change the BIOS state that the next inventory reports.
//
// The package is used two ways: in-process by the fake backend, where a Mux
// serves thousands of agents under per-node path prefixes on one loopback
// listener, and standalone (`ironlab agent`, the /init of the VM ramdisk),
// where one agent serves its API on its own listener.
//
// Faults (stop heartbeating, fail/crash/hang a command, slow disk) are data
// that scenarios set at runtime with Agent.SetFaults.
package fakeagent
