package main

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	driverapi "github.com/ironlab/ironlab/driver/api"
)

// burn spends about d of CPU in the function the profile names.
//
//go:noinline
func burnBeforePieces(d time.Duration) int { return spin(d) }

//go:noinline
func burnInPieceOne(d time.Duration) int { return spin(d) }

//go:noinline
func burnAfterRefusal(d time.Duration) int { return spin(d) }

func spin(d time.Duration) int {
	x := 0
	for start := time.Now(); time.Since(start) < d; {
		for i := range 100_000 {
			x += i ^ x
		}
	}
	return x
}

// readProfile parses a CPU profile piece and names the functions its
// samples were in.
func readProfile(t *testing.T, path string) (*profile.Profile, []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var funcs []string
	for _, s := range p.Sample {
		for _, l := range s.Location {
			for _, ln := range l.Line {
				if ln.Function != nil && !slices.Contains(funcs, ln.Function.Name) {
					funcs = append(funcs, ln.Function.Name)
				}
			}
		}
	}
	return p, funcs
}

func hasFunc(funcs []string, suffix string) bool {
	return slices.ContainsFunc(funcs, func(f string) bool { return strings.HasSuffix(f, suffix) })
}

// A CPU profile is written in pieces: the samples before the first piece
// in the file given, each piece's in a file named after it, and a piece
// refused (a bad name, a name used before) leaves the current one going.
func TestCPUProfilePieces(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "driver.cpu")
	p, err := startCPUProfile(base)
	if err != nil {
		t.Fatal(err)
	}
	burnBeforePieces(300 * time.Millisecond)
	one, err := p.Piece("one")
	if err != nil || one != filepath.Join(dir, "driver.one.cpu") {
		t.Fatalf("Piece(one) = %q, %v; want %s", one, err, filepath.Join(dir, "driver.one.cpu"))
	}
	burnInPieceOne(300 * time.Millisecond)
	two, err := p.Piece("after-one")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]error{"one": driverapi.ErrProfilePieceExists, "Deploy": driverapi.ErrProfileName,
		"../x": driverapi.ErrProfileName, "": driverapi.ErrProfileName, strings.Repeat("a", 65): driverapi.ErrProfileName} {
		if _, err := p.Piece(name); !errors.Is(err, want) {
			t.Errorf("Piece(%q) = %v, want %v", name, err, want)
		}
	}
	burnAfterRefusal(300 * time.Millisecond)
	p.Stop()

	for _, c := range []struct {
		path, want string
		not        []string
	}{
		{base, "burnBeforePieces", []string{"burnInPieceOne", "burnAfterRefusal"}},
		{one, "burnInPieceOne", []string{"burnBeforePieces", "burnAfterRefusal"}},
		{two, "burnAfterRefusal", []string{"burnBeforePieces", "burnInPieceOne"}},
	} {
		prof, funcs := readProfile(t, c.path)
		if !hasFunc(funcs, c.want) {
			t.Errorf("%s: no samples in %s (functions %v)", filepath.Base(c.path), c.want, funcs)
		}
		for _, f := range c.not {
			if hasFunc(funcs, f) {
				t.Errorf("%s has samples of %s, another piece's", filepath.Base(c.path), f)
			}
		}
		if d := time.Duration(prof.DurationNanos); d < 250*time.Millisecond {
			t.Errorf("%s lasts %s, less than the 300 ms burnt in it (250 ms at least)", filepath.Base(c.path), d)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "driver.Deploy.cpu")); err == nil {
		t.Error("a refused piece's file was written")
	}
	for _, ext := range []string{".block", ".mutex"} {
		if fi, err := os.Stat(base + ext); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v (want the whole run's %s profile)", base+ext, err, ext[1:])
		}
	}
}
