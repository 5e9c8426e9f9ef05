package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	driverapi "github.com/ironlab/ironlab/driver/api"
)

// driverProfileEnv names the file `ironlab driver` writes its CPU profile
// to when --cpuprofile is not given: `ironlab bench --cpuprofile` sets it
// for the driver process the runner starts.
const driverProfileEnv = "IRONLAB_DRIVER_CPUPROFILE"

// cpuProfiler is a CPU profile written in pieces: path until the first
// Piece, then one file per piece, named after it beside path
// (driver.cpu -> driver.deploy.cpu), each holding the samples from its
// Piece to the next. pprof merges pieces given together
// (`go tool pprof driver*.cpu` is the whole run). It also samples where
// goroutines wait (channel, select, sync and database/sql connection waits
// of 100 us and more, and mutex contention) and writes those for the whole
// run at Stop as path.block and path.mutex: where the wall time goes that
// a CPU profile does not show.
type cpuProfiler struct {
	mu    sync.Mutex
	path  string
	f     *os.File
	names map[string]bool
}

// pieceName is what a piece may be called: it becomes part of a file name.
var pieceName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// startCPUProfile profiles this process's CPU into path until Piece or Stop.
func startCPUProfile(path string) (*cpuProfiler, error) {
	p := &cpuProfiler{path: path, names: map[string]bool{}}
	if err := p.begin(path); err != nil {
		return nil, err
	}
	runtime.SetBlockProfileRate(int(100 * time.Microsecond))
	runtime.SetMutexProfileFraction(10)
	return p, nil
}

func (p *cpuProfiler) begin(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("CPU profile %s: %w", path, err)
	}
	p.f = f
	return nil
}

// end writes out the current piece (pprof's writer wakes every 100 ms, so
// this takes up to about that long).
func (p *cpuProfiler) end() {
	if p.f == nil {
		return
	}
	pprof.StopCPUProfile()
	p.f.Close()
	p.f = nil
}

// PiecePath is the file a piece named name is written to.
func (p *cpuProfiler) PiecePath(name string) string {
	ext := filepath.Ext(p.path)
	return strings.TrimSuffix(p.path, ext) + "." + name + ext
}

// Piece ends the current piece and begins one named name, written to
// PiecePath(name), which it returns. A name is lower-case letters, digits,
// '_' and '-' (up to 64), and names each piece once: a name used before is
// refused (driverapi.ErrProfileName, driverapi.ErrProfilePieceExists) and the current
// piece goes on.
func (p *cpuProfiler) Piece(name string) (string, error) {
	if !pieceName.MatchString(name) {
		return "", fmt.Errorf("%w: %q (lower-case letters, digits, '_' and '-', at most 64, starting with a letter or digit)", driverapi.ErrProfileName, name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.names[name] {
		return "", fmt.Errorf("%w: %q", driverapi.ErrProfilePieceExists, name)
	}
	path := p.PiecePath(name)
	p.end()
	if err := p.begin(path); err != nil {
		return "", err
	}
	p.names[name] = true
	return path, nil
}

// Stop ends the current piece and writes the block and mutex profiles.
func (p *cpuProfiler) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.end()
	for _, name := range []string{"block", "mutex"} {
		if out, err := os.Create(p.path + "." + name); err == nil {
			_ = pprof.Lookup(name).WriteTo(out, 0)
			out.Close()
		}
	}
}
