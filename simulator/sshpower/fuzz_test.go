package sshpower

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/fake"
)

// FuzzRun feeds command lines to the SSH host's shell and virsh. The corpus
// holds the command lines Ironic's SSH power driver (ssh.py) sends for
// virsh. Whatever the line: a failure says why on stderr (grep finding
// nothing aside) and changes no domain; a command that only reads (list,
// domstate, dumpxml, ...) changes none either; and the shell's word
// splitting agrees with sh's quoting, so a line built by quoting the words
// it split splits back into the same words.
func FuzzRun(f *testing.F) {
	dir := f.TempDir()
	var ms []simulator.Machine
	for i, name := range []string{"vm-0", "vm-1"} {
		m, err := fake.New(fake.Options{Name: name, UUID: []string{"11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"}[i],
			Hardware: simulator.Hardware{CPUs: 1, MemoryMB: 512,
				NICs:  []simulator.NIC{{Name: "eth0", MAC: []string{"52:54:00:aa:bb:01", "52:54:00:aa:bb:02"}[i]}},
				Disks: []simulator.Disk{{Name: "vda", SizeBytes: 1 << 20, Path: filepath.Join(dir, name+".raw")}}}})
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { m.Close() })
		ms = append(ms, m)
	}
	s, err := New(Config{Users: []User{{Name: "admin", Password: "secret"}}, Machines: func() []simulator.Machine { return ms }})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	state := func() string {
		var b strings.Builder
		for _, m := range ms {
			p, _ := m.Power(ctx)
			bc, _ := m.BootConfig(ctx)
			b.WriteString(string(p) + "/" + string(bc.Device) + " ")
		}
		return b.String()
	}
	f.Fuzz(func(t *testing.T, line string) {
		before := state()
		out, errOut, status := s.Run(ctx, line, nil)
		after := state()
		segs, splitErr := splitPipeline(line)
		switch {
		case status == 0 && errOut != "":
			t.Fatalf("status 0 with stderr %q", errOut)
		case status != 0 && errOut == "" && !(status == 1 && splitErr == nil && len(segs) > 1 && segs[len(segs)-1][0] == "grep"):
			t.Fatalf("status %d without a word on stderr (stdout %q)", status, out)
		case status != 0 && out != "" && !strings.HasPrefix(errOut, "sh: "):
			t.Fatalf("status %d with stdout %q", status, out)
		}
		if status != 0 && after != before {
			t.Fatalf("a failed command (%d: %q) changed the domains from %s to %s", status, errOut, before, after)
		}
		if after != before && !changes(segs) {
			t.Fatalf("a read-only command changed the domains from %s to %s", before, after)
		}
		if splitErr != nil {
			return
		}
		var quoted []string
		for _, seg := range segs {
			var ws []string
			for _, w := range seg {
				ws = append(ws, "'"+strings.ReplaceAll(w, "'", `'\''`)+"'")
			}
			quoted = append(quoted, strings.Join(ws, " "))
		}
		again, err := splitPipeline(strings.Join(quoted, " | "))
		if err != nil || len(again) != len(segs) {
			t.Fatalf("words %q, quoted, split into %q (%v)", segs, again, err)
		}
		for i := range segs {
			if strings.Join(segs[i], "\x00") != strings.Join(again[i], "\x00") {
				t.Fatalf("words %q, quoted, split into %q", segs, again)
			}
		}
	})
}

// changes says whether a pipeline runs a virsh command that may change a domain.
func changes(segs [][]string) bool {
	if len(segs) == 0 {
		return false
	}
	for _, w := range segs[0] {
		switch w {
		case "start", "destroy", "reset", "shutdown", "reboot", "edit":
			return true
		}
	}
	return false
}
