// Command ironlab is the virtual bare-metal lab: one binary for the scenario
// runner, the lab, the driver (conductor + API), the fake agent and the BMCs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"

	"github.com/ironlab/ironlab/internal/memrelease"
)

// command is one subcommand; each lives in its own file and registers itself.
type command struct {
	summary string
	run     func(args []string) int // exit status: 0 ok, 1 failed, 2 bad input
}

var commands = map[string]command{}

func register(name, summary string, run func(args []string) int) {
	commands[name] = command{summary: summary, run: run}
}

func usage() {
	fmt.Fprintf(os.Stderr, "ironlab: a virtual bare-metal lab\n\nUsage: ironlab <command> [flags]\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'ironlab <command> --help' for a command's flags.\n")
}

func main() {
	if hook := initHook; hook != nil && isRamdiskInit(os.Getpid(), os.Args[0]) {
		os.Exit(hook())
	}
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	c, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "ironlab: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	// Every command that runs long (the driver, the lab, the bench) lets
	// its heap grow further between collections during a burst of work,
	// and gives its free heap back once it goes quiet.
	memrelease.TuneGC()
	go memrelease.Watch(context.Background(), memrelease.Options{})
	os.Exit(c.run(os.Args[2:]))
}

// parseFlags parses a command's flags. When it says !ok the command returns
// code: 0 after --help, 2 for bad flags (the flag package printed why).
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}

// initHook, when set (by the ramdisk's file), runs instead of the CLI when the
// binary is /init of the agent ramdisk inside a VM (see isRamdiskInit).
var initHook func() int

// isRamdiskInit says whether this process is the agent ramdisk's /init: PID 1
// started by the kernel, which runs the initramfs's /init with argv[0]
// "/init". PID 1 alone is not enough: in a FROM-scratch container the binary
// is PID 1 too (as /ironlab, running a command such as driver), and must
// stay the CLI there.
func isRamdiskInit(pid int, argv0 string) bool {
	return pid == 1 && argv0 == "/init"
}
