package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"time"
)

// driverProfileEnv names the file `ironlab driver` writes its CPU profile
// to when --cpuprofile is not given: `ironlab bench --cpuprofile` sets it
// for the driver process the runner starts.
const driverProfileEnv = "IRONLAB_DRIVER_CPUPROFILE"

// startCPUProfile profiles this process's CPU into path until the returned
// function runs; it also samples where goroutines wait (channel, select,
// sync and database/sql connection waits of 100 us and more, and mutex
// contention) and writes those at the end as path.block and path.mutex:
// where the wall time goes that a CPU profile does not show.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("CPU profile %s: %w", path, err)
	}
	runtime.SetBlockProfileRate(int(100 * time.Microsecond))
	runtime.SetMutexProfileFraction(10)
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		for _, name := range []string{"block", "mutex"} {
			if out, err := os.Create(path + "." + name); err == nil {
				_ = pprof.Lookup(name).WriteTo(out, 0)
				out.Close()
			}
		}
	}, nil
}
