package scenarios

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMakeFuzzRunsEveryTarget: a fuzz target that make fuzz does not list
// only ever replays its corpus.
func TestMakeFuzzRunsEveryTarget(t *testing.T) {
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, m := range regexp.MustCompile(`(?m)^\s+\./(\S+):(Fuzz\w+)`).FindAllStringSubmatch(string(mk), -1) {
		listed = append(listed, m[1]+":"+m[2])
	}
	var found []string
	fuzzFunc := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(\w+ \*testing\.F\)`)
	err = filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && p != ".." || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range fuzzFunc.FindAllStringSubmatch(string(b), -1) {
			rel, _ := filepath.Rel("..", filepath.Dir(p))
			found = append(found, filepath.ToSlash(rel)+":"+m[1])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(listed)
	sort.Strings(found)
	if diff := cmp.Diff(found, listed); diff != "" {
		t.Errorf("Makefile FUZZ_TARGETS (-fuzz targets in the code +listed):\n%s", diff)
	}
}
