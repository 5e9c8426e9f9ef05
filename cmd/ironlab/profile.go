package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// driverProfileEnv names the file `ironlab driver` writes its CPU profile
// to when --cpuprofile is not given: `ironlab bench --cpuprofile` sets it
// for the driver process the runner starts.
const driverProfileEnv = "IRONLAB_DRIVER_CPUPROFILE"

// startCPUProfile profiles this process's CPU into path until the returned
// function runs.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("CPU profile %s: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
