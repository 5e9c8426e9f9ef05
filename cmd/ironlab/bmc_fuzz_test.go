package main

import (
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
	"github.com/google/go-cmp/cmp"
)

// FuzzBMCFile feeds `ironlab bmc --config` files to their parser. The
// corpus holds the README's bmcs.yaml and its variants. A refused file gets
// an error naming the file and a line or an entry's field; an accepted one
// names only loopback addresses and distinct ports, and reads back the same
// when written out again.
func FuzzBMCFile(f *testing.F) {
	if b, err := os.ReadFile("../../README.md"); err == nil {
		if _, rest, ok := strings.Cut(string(b), "# bmcs.yaml\n"); ok {
			example, _, _ := strings.Cut(rest, "```")
			f.Add([]byte(example))
		}
	}
	where := regexp.MustCompile(`^bmcs\.yaml: (\[\d+:\d+\]|bmcs(\[\d+\]\.[a-z]+)?: )`)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parseBMCFile("bmcs.yaml", data)
		if err != nil {
			if !where.MatchString(err.Error()) {
				t.Fatalf("error %q names no line and no field", err)
			}
			return
		}
		if len(cfg.BMCs) == 0 {
			t.Fatal("accepted a file without BMCs")
		}
		seen := map[netip.AddrPort]bool{}
		for _, d := range cfg.BMCs {
			ip, err := netip.ParseAddr(d.Address)
			if err != nil || !ip.IsLoopback() || d.Domain == "" || d.Port < 1 || d.Port > 65535 {
				t.Fatalf("accepted entry %+v", d)
			}
			ap := netip.AddrPortFrom(ip.Unmap(), uint16(d.Port))
			if seen[ap] {
				t.Fatalf("accepted %s twice", ap)
			}
			seen[ap] = true
		}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseBMCFile("bmcs.yaml", out)
		if err != nil {
			t.Fatalf("the accepted file written out again is refused: %v\n%s", err, out)
		}
		if diff := cmp.Diff(cfg, again, cmp.AllowUnexported(bmcFile{}, bmcDomain{})); diff != "" {
			t.Fatalf("changed in a round trip (-first +second):\n%s", diff)
		}
	})
}
