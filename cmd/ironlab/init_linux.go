package main

import "github.com/ironlab/ironlab/fakeagent/ramdisk"

// As PID 1 (the agent ramdisk's /init inside a VM) the binary boots the
// guest and runs the fake agent instead of the CLI.
func init() { initHook = ramdisk.Main }
