package ramdisk

import (
	"strings"
	"testing"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/fakeagent/pxedeploy"
)

// FuzzCmdline feeds kernel command lines to what /init reads from them:
// its own options (probe, fetch, eth0's address) and, by mode, the agent's
// or the deploy ramdisk's. The corpus holds the lines the libvirt backend
// boots VMs with. An address /init accepts is one netUp can configure: IPv4
// with a prefix of at most 32 bits.
func FuzzCmdline(f *testing.F) {
	f.Fuzz(func(t *testing.T, cmdline string) {
		opts := options(cmdline)
		for _, w := range strings.Fields(cmdline) {
			k, _, _ := strings.Cut(w, "=")
			if _, ok := opts[k]; !ok {
				t.Fatalf("word %q lost from the options", w)
			}
		}
		ip, prefix, gw, err := netConfig(opts)
		if err == nil {
			if len(ip) != 4 || len(gw) != 4 || prefix < 0 || prefix > 32 {
				t.Fatalf("%s=%q %s=%q accepted as %v/%d via %v", OptIP, opts[OptIP], OptGateway, opts[OptGateway], ip, prefix, gw)
			}
			if _, ok := opts[OptIP]; !ok && (ip.String() != "10.0.2.15" || prefix != 24 || gw.String() != "10.0.2.2") {
				t.Fatalf("defaults are %v/%d via %v", ip, prefix, gw)
			}
		} else if !strings.Contains(err.Error(), "ironlab.") {
			t.Fatalf("error %q names no option", err)
		}
		if pxedeploy.Mode(cmdline) == pxedeploy.ModePXEDeploy {
			_, err = pxedeploy.ConfigFromCmdline(cmdline)
		} else {
			_, err = fakeagent.ConfigFromCmdline(cmdline)
		}
		if err != nil && err.Error() == "" {
			t.Fatal("an error without a message")
		}
	})
}
