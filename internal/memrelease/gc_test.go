package memrelease

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"testing"
)

// TuneGC sets GCPercent and a quarter of the machine's memory as the soft
// limit, and leaves a GOGC or GOMEMLIMIT of the environment alone: run in
// a child process (the settings are process-wide), which prints what the
// runtime then holds.
func TestTuneGC(t *testing.T) {
	if os.Getenv("MEMRELEASE_TUNE_CHILD") == "1" {
		TuneGC()
		printGC()
		return
	}
	total := MemTotal()
	if total <= 0 {
		t.Skip("no MemTotal in /proc/meminfo")
	}
	tests := map[string]struct {
		env  []string
		want string
	}{
		"defaults":        {want: gcLine(GCPercent, total/4)},
		"GOGC kept":       {env: []string{"GOGC=150"}, want: gcLine(150, total/4)},
		"GOMEMLIMIT kept": {env: []string{"GOMEMLIMIT=1GiB"}, want: gcLine(GCPercent, 1<<30)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestTuneGC$")
			var env []string
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "GOGC=") && !strings.HasPrefix(kv, "GOMEMLIMIT=") {
					env = append(env, kv)
				}
			}
			cmd.Env = append(env, append(tc.env, "MEMRELEASE_TUNE_CHILD=1")...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("child printed:\n%s\nwant a line %q", out, tc.want)
			}
		})
	}
}

func gcLine(percent int, limit int64) string {
	return fmt.Sprintf("gc percent %d, memory limit %d\n", percent, limit)
}

// printGC prints the runtime's GC percent and memory limit, reading each
// by setting it and putting it back.
func printGC() {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	l := debug.SetMemoryLimit(math.MaxInt64)
	debug.SetMemoryLimit(l)
	fmt.Print(gcLine(p, l))
}
