package main

import (
	"fmt"
	"syscall"
)

// fdsPerNode is what one node holds open in the lab process while idle
// (its BMC's socket); fdsShared is what the whole lab needs beside that at
// most: the agents' connections to the driver API and the image server
// (bounded by their shared client), the driver's to the agents, the disks
// of the commands running, the runner's requests.
const (
	fdsPerNode = 1
	fdsShared  = 8192
)

// raiseFDLimit raises this process's open-file limit (and so the driver
// process's, which inherits it) to what nodes need, when it is lower;
// above the hard limit that needs root (CAP_SYS_RESOURCE). It returns the
// limit in force.
func raiseFDLimit(nodes int) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read the open-file limit: %w", err)
	}
	want := uint64(nodes*fdsPerNode + fdsShared)
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	next := lim
	next.Cur = want
	if next.Max < want {
		next.Max = want
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err != nil {
		return lim.Cur, fmt.Errorf("raise the open-file limit from %d to %d (%d nodes; as root, or raise ulimit -Hn): %w", lim.Cur, want, nodes, err)
	}
	return want, nil
}
