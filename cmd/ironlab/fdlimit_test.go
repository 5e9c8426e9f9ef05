package main

import (
	"strings"
	"syscall"
	"testing"
)

// TestRaiseFDLimit: a lab that fits leaves the limit alone; a larger one
// raises it to what its nodes need (as root), or says how to.
func TestRaiseFDLimit(t *testing.T) {
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	if got, err := raiseFDLimit(1); err != nil || got < fdsShared+fdsPerNode {
		t.Fatalf("raiseFDLimit(1) = %d, %v; want at least %d", got, err, fdsShared+fdsPerNode)
	}
	nodes := int(old.Cur)/fdsPerNode + 1000
	want := uint64(nodes*fdsPerNode + fdsShared)
	got, err := raiseFDLimit(nodes)
	if err != nil {
		if !strings.Contains(err.Error(), "ulimit -Hn") {
			t.Fatalf("refused raise says no way out: %v", err)
		}
		t.Skipf("not allowed to raise the hard limit here: %v", err)
	}
	var now syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &now); err != nil {
		t.Fatal(err)
	}
	if got != want || now.Cur != want {
		t.Errorf("raiseFDLimit(%d) = %d, limit now %d; want %d", nodes, got, now.Cur, want)
	}
}
