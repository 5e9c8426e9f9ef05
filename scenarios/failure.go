package scenarios

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode"
)

// What a failed run leaves a user to read it by. The results always keep
// every machine's console (console/<node>.log) and the driver's node events
// (events.jsonl); on the libvirt backend the run also writes the lab's and
// the built-in driver's log (LabLogName). When a scenario fails, the runner
// prints the end of the consoles of the nodes the failure names (a VM's
// console is its agent's log: the guest's /init logs to the serial port),
// so the output alone often says why, and where the rest is.

// LabLogName is the lab's and the in-process driver's log (debug level) in
// a libvirt run's results folder: domain starts with their boot device,
// power and boot device commands, the conductor's warnings and errors.
const LabLogName = "lab.log"

// consoleTailLines is how much of each console a failure prints.
const consoleTailLines = 25

// maxFailedConsoles bounds the consoles a failure prints (a large fake lab
// whose failure names no node prints none).
const maxFailedConsoles = 4

// openLabLog creates <results>/<scenario>/lab.log for a libvirt run and
// returns the handler that writes it (nil, nil when there is none to write).
func openLabLog(opts Options, s *Scenario) (*os.File, slog.Handler, error) {
	if opts.ResultsDir == "" || s.Lab.Backend != "libvirt" {
		return nil, nil, nil
	}
	dir := filepath.Join(opts.ResultsDir, s.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("results folder of %s: %w", s.Name, err)
	}
	f, err := os.Create(filepath.Join(dir, LabLogName))
	if err != nil {
		return nil, nil, fmt.Errorf("lab log of %s: %w", s.Name, err)
	}
	return f, slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}), nil
}

// failedNodes are the nodes a failed run's error and failed checks name,
// in lab order; when they name none, every node of a lab small enough to
// print. At most maxFailedConsoles.
func failedNodes(res *Result, names []string) []string {
	text := res.Error
	for _, c := range res.Checks {
		if !c.Passed {
			text += "\n" + strings.Join(c.Failures, "\n")
		}
	}
	words := map[string]bool{}
	for _, w := range strings.FieldsFunc(text, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || unicode.IsLetter(r) || unicode.IsDigit(r))
	}) {
		words[strings.TrimRight(w, ".")] = true
	}
	var named []string
	for _, n := range names {
		if words[n] {
			named = append(named, n)
		}
	}
	if len(named) == 0 && len(names) <= maxFailedConsoles {
		named = slices.Clone(names)
	}
	if len(named) > maxFailedConsoles {
		named = named[:maxFailedConsoles]
	}
	return named
}

// printFailure prints, for a failed run, each named node's state and the
// end of its console, and where the whole of it is kept.
func printFailure(w io.Writer, dir string, res *Result) {
	names := make([]string, 0, len(res.Nodes))
	byName := map[string]NodeResult{}
	for _, n := range res.Nodes {
		names = append(names, n.Name)
		byName[n.Name] = n
	}
	nodes := failedNodes(res, names)
	if len(nodes) == 0 {
		return
	}
	where := filepath.Join(dir, "console")
	if _, err := os.Stat(filepath.Join(dir, LabLogName)); err == nil {
		where += "/, the lab's and driver's log in " + filepath.Join(dir, LabLogName)
	} else {
		where += "/"
	}
	fmt.Fprintf(w, "  the failed nodes' consoles, last %d lines each (all in %s; the driver's events in %s):\n",
		consoleTailLines, where, filepath.Join(dir, "events.jsonl"))
	for _, name := range nodes {
		n := byName[name]
		fmt.Fprintf(w, "  --- %s: %s, %s", name, n.FinalState, n.PowerState)
		if n.LastError != "" {
			fmt.Fprintf(w, ", last_error: %s", clip(n.LastError, 200))
		}
		fmt.Fprintln(w)
		b, err := os.ReadFile(filepath.Join(dir, "console", name+".log"))
		if err != nil {
			fmt.Fprintf(w, "  | (no console: %v)\n", err)
			continue
		}
		for _, l := range TailLines(string(b), consoleTailLines) {
			fmt.Fprintf(w, "  | %s\n", l)
		}
	}
}

// TailLines is the last n lines of a console log, printable: carriage
// returns and the firmware's escape sequences dropped.
func TailLines(log string, n int) []string {
	log = ansi.ReplaceAllString(log, "")
	log = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || (r >= ' ' && r != 0x7f) {
			return r
		}
		return -1
	}, log)
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	lines = slices.DeleteFunc(lines, func(l string) bool { return strings.TrimSpace(l) == "" })
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

var ansi = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>cM78])`)
