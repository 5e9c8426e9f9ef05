package memrelease

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// GCPercent is the garbage collector's target that TuneGC sets: the heap
// may grow to five times the live heap before the next GC, instead of
// Go's default twice. A lab's processes are busy in bursts (a thousand
// deploys, a heartbeat storm) and idle between them, when Watch gives the
// free heap back; during a burst, GOGC=100 spent a large share of the CPU
// collecting (bench --nodes 1000 on a 2-core VM: the driver's CPU per
// heartbeat 70.6 -> 56.0 us, 15,764 -> 19,102 heartbeats/s, one BMC's
// IPMI sessions 20,799 -> 28,649/s, deploy wall 9.8 -> 6.9 s). Idle
// nodes cost a little more after Watch's release (47.1 -> 55.1 KiB each
// at 1000): the live heap is spread over more pages.
const GCPercent = 400

// TuneGC sets GCPercent, with a soft memory limit of a quarter of the
// machine's memory so that a heap grown that large is collected as often
// as it must be to stay below it. GOGC or GOMEMLIMIT in the environment
// win: the user's settings are left as they are.
func TuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if total := MemTotal(); total > 0 {
			debug.SetMemoryLimit(total / 4)
		}
	}
}

// MemTotal is MemTotal of /proc/meminfo in bytes, 0 where unknown.
func MemTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kib << 10
		}
	}
	return 0
}
