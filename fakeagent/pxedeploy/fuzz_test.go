package pxedeploy

import (
	"net"
	"net/url"
	"strings"
	"testing"
)

// FuzzConfigFromCmdline feeds kernel command lines to the deploy ramdisk's
// parser. The corpus holds the lines the PXE driver and the libvirt backend
// write. An accepted line is a pxe-deploy line with a node, a key and an
// API URL, and whatever address it advertises is one the ramdisk can serve.
func FuzzConfigFromCmdline(f *testing.F) {
	f.Fuzz(func(t *testing.T, cmdline string) {
		c, err := ConfigFromCmdline(cmdline)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "kernel command line: ") && !strings.HasPrefix(msg, "pxedeploy: ") {
				t.Fatalf("error %q does not say what it is about", msg)
			}
			return
		}
		if Mode(cmdline) != ModePXEDeploy {
			t.Fatalf("accepted a line in mode %q", Mode(cmdline))
		}
		if c.NodeUUID == "" || c.DeployKey == "" {
			t.Fatalf("accepted a line without node (%q) or key (%q)", c.NodeUUID, c.DeployKey)
		}
		if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			t.Fatalf("accepted API URL %q (%v)", c.APIURL, err)
		}
		if c.AdvertiseURL != "" {
			u, err := url.Parse(c.AdvertiseURL)
			if err != nil || u.Host == "" || u.Path != "" {
				t.Fatalf("accepted advertise URL %q (%v)", c.AdvertiseURL, err)
			}
			if _, port, err := net.SplitHostPort(c.Listen); err != nil || port != u.Port() {
				t.Fatalf("listens on %q but advertises %q", c.Listen, c.AdvertiseURL)
			}
		}
	})
}
