// Package pyghmipeer holds the pyghmi BMC that ironlab's BMC is measured
// against: a Python script for Debian's /usr/bin/python3 and python3-pyghmi
// (the base of virtualbmc), run by `ironlab bench --compare` and by
// simulator/bmc's benchmarks.
package pyghmipeer

import (
	_ "embed"
	"os"
	"path/filepath"
)

//go:embed pyghmi_bmc.py
var script []byte

// Write writes the script into dir and returns its path; run it as
// `/usr/bin/python3 PATH PORT`: it prints "ready" once it listens on
// 127.0.0.1:PORT (user admin, password password).
func Write(dir string) (string, error) {
	p := filepath.Join(dir, "pyghmi_bmc.py")
	return p, os.WriteFile(p, script, 0o644)
}
