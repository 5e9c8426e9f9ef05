package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ironlab/ironlab/scenarios"
)

func init() {
	register("bench", "deploy many in-process nodes at once and report throughput", benchCmd)
}

// benchScenario is the scale scenario `ironlab bench` plays.
const benchScenario = `name: bench
description: Deploy %[1]d fake_agent nodes at once.
seed: 1
lab:
  heartbeat_timeout: %[2]s
  automated_clean: false
  images: [{id: bench-os, size: %[3]s}]
  groups: [{name: n, count: %[1]d, driver: fake_agent, dialect: %[5]s, disk_size: %[4]s}]
steps:
  - enroll: {}
  - manage: {}
  - provide: {}
  - wait: {state: available, timeout: %[6]s}
  - deploy: {image: bench-os}
  - wait: {state: active, timeout: %[6]s}
  - expect: {state: active, last_error: ""}
`

func benchCmd(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	nodes := fs.Int("nodes", 500, "nodes to deploy at once (at most 5000)")
	image := fs.String("image-size", "1MiB", "image size")
	hb := fs.Duration("heartbeat-timeout", 10*time.Second, "agent.heartbeat_timeout (agents heartbeat every 0.3-0.6 of it)")
	dialect := fs.String("dialect", "v1", "agent dialect: v1 or legacy")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up on a phase after this long")
	results := fs.String("results", "results", "results folder")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: ironlab bench [flags]

Enrolls, manages, provides and deploys --nodes fake_agent nodes at once (in
one process, all on loopback) through the built-in driver's HTTP API, and
reports how long each phase took and the deploy throughput. Bounded: it stops
after --timeout per phase.

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *nodes < 1 || *nodes > scenarios.MaxNodes {
		fmt.Fprintf(os.Stderr, "ironlab bench: --nodes must be 1 to %d\n", scenarios.MaxNodes)
		return 2
	}
	size, err := scenarios.ParseSize(*image)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ironlab bench: --image-size:", err)
		return 2
	}
	disk := fmt.Sprintf("%d", max(size*2, 1<<20))
	text := fmt.Sprintf(benchScenario, *nodes, hb.String(), *image, disk, *dialect, timeout.String())
	s, err := scenarios.Parse("bench", []byte(text))
	if err != nil {
		fmt.Fprintln(os.Stderr, "ironlab bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	runID := time.Now().Format("20060102-150405")
	dir := filepath.Join(*results, runID)
	fmt.Printf("deploying %d nodes at once (image %s) ...\n", *nodes, *image)
	res, err := scenarios.Run(ctx, s, scenarios.Options{
		ResultsDir: dir, ImageCache: defaultCache("images"), StartDriver: builtinDriver,
		Out: os.Stdout, Logger: slog.New(slog.DiscardHandler),
		// CI must run every group: a missing tool there is an error.
		FailOnMissingTools: os.Getenv("CI") == "true",
		// Many agents: look up less eagerly than a small lab does.
		LookupInterval: time.Second,
	})
	if res == nil {
		fmt.Fprintln(os.Stderr, "ironlab bench:", err)
		return 1
	}
	var deploy float64
	fmt.Println()
	for _, c := range res.Checks {
		fmt.Printf("  %-40s %6.1fs  %s\n", c.Name, c.DurationS, passWord(c.Passed))
		if c.Name == "step 6: wait for active" {
			deploy = c.DurationS
		}
	}
	var sum float64
	for _, n := range res.Nodes {
		sum += n.DeploySeconds
	}
	if deploy > 0 && len(res.Nodes) > 0 {
		fmt.Printf("\n  %d nodes active in %.1fs: %.1f deploys/s; mean deploy request to active %.2fs; %d MiB of images served\n",
			len(res.Nodes), deploy, float64(len(res.Nodes))/deploy, sum/float64(len(res.Nodes)), res.ImageBytesServed>>20)
	}
	fmt.Printf("  results: %s (open %s)\n", dir, filepath.Join(dir, s.Name, "report.html"))
	if err != nil || !res.Passed {
		if err != nil {
			fmt.Fprintln(os.Stderr, "ironlab bench:", err)
		}
		return 1
	}
	return 0
}

func passWord(ok bool) string {
	if ok {
		return "ok"
	}
	return "FAILED"
}
