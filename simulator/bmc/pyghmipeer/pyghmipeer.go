// Package pyghmipeer holds the pyghmi BMC that ironlab's BMC is measured
// against: a Python script for Debian's /usr/bin/python3 and python3-pyghmi
// (the base of virtualbmc), run by `ironlab bench --compare` and by
// simulator/bmc's benchmarks.
package pyghmipeer

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

//go:embed pyghmi_bmc.py
var script []byte

// write writes the script into dir and returns its path; run it as
// `/usr/bin/python3 PATH PORT`: it prints "ready" once it listens on
// 127.0.0.1:PORT (user admin, password password).
func write(dir string) (string, error) {
	p := filepath.Join(dir, "pyghmi_bmc.py")
	return p, os.WriteFile(p, script, 0o644)
}

// Start writes the script into dir and runs it with python on
// 127.0.0.1:port, returning once it says it listens (at most 10 s). The BMC
// runs until ctx ends or stop is called; stop waits for it to exit.
func Start(ctx context.Context, python, dir string, port int) (stop func(), err error) {
	script, err := write(dir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, python, script, strconv.Itoa(port))
	out, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("start pyghmi's BMC: %w", err)
	}
	stop = func() { cancel(); _ = cmd.Wait() }
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line == "ready\n"
	}()
	select {
	case ok := <-ready:
		if ok {
			return stop, nil
		}
		err = errors.New("pyghmi's BMC did not start")
	case <-time.After(10 * time.Second):
		err = errors.New("pyghmi's BMC did not start in 10 s")
	}
	stop()
	return nil, err
}
