package main

import "testing"

// The binary is PID 1 both as the ramdisk's /init (the kernel runs it as
// "/init") and in a FROM-scratch container (as /ironlab driver ...): only
// the first may boot the guest.
func TestRamdiskInitOnlyAsKernelInit(t *testing.T) {
	for _, c := range []struct {
		pid   int
		argv0 string
		want  bool
	}{
		{1, "/init", true},
		{1, "/ironlab", false}, // a conductor container's entrypoint
		{1, "ironlab", false},
		{4242, "/init", false},
		{4242, "/usr/local/bin/ironlab", false},
	} {
		if got := isRamdiskInit(c.pid, c.argv0); got != c.want {
			t.Errorf("isRamdiskInit(%d, %q) = %v, want %v", c.pid, c.argv0, got, c.want)
		}
	}
}
