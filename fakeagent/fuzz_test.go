package fakeagent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzConfigFromCmdline feeds kernel command lines to the agent's parser
// (and so to ParseIPAOptions, which the PXE deploy ramdisk shares). The
// corpus holds the command lines the lab really writes (fake and VM
// backends, both dialects, with faults). An accepted line must give a config
// New accepts as it is, and its IPA options must come back unchanged when
// written out again.
func FuzzConfigFromCmdline(f *testing.F) {
	f.Fuzz(func(t *testing.T, cmdline string) {
		c, err := ConfigFromCmdline(cmdline)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "kernel command line: ") {
				t.Fatalf("error %q does not say it is about the kernel command line", err)
			}
			return
		}
		u, err := url.Parse(c.AdvertiseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" {
			t.Fatalf("accepted a line whose advertise URL %q is no http(s) URL (%v)", c.AdvertiseURL, err)
		}
		if c.BootMAC != "" {
			if hw, err := net.ParseMAC(c.BootMAC); err != nil || hw.String() != c.BootMAC {
				t.Fatalf("BootMAC %q is not a lower-case MAC", c.BootMAC)
			}
		}
		if c.LookupInterval < 0 || c.HeartbeatErrorBackoff < 0 {
			t.Fatalf("negative intervals: lookup %s, backoff %s", c.LookupInterval, c.HeartbeatErrorBackoff)
		}
		for _, w := range strings.Fields(cmdline) {
			k, v, _ := strings.Cut(w, "=")
			if (k == "ipa-lookup-interval" || k == "ipa_lookup_interval") && c.LookupInterval == 0 {
				t.Fatalf("%s was accepted and gave no interval", w)
			}
			if k == "ironlab.heartbeat-error-backoff" && c.HeartbeatErrorBackoff == 0 && v != "" {
				t.Fatalf("%s was accepted and gave no backoff", w)
			}
		}
		cfg := c.Config
		cfg.Hardware = NewMemHardware(testHardware(t, "52:54:00:12:34:56"))
		want := c.Config
		if err := cfg.setDefaults(); err != nil {
			t.Fatalf("ConfigFromCmdline accepted %q but the agent refuses the config: %v", cmdline, err)
		}
		for what, got := range map[string][2]any{
			"lookup interval":         {want.LookupInterval, cfg.LookupInterval},
			"heartbeat error backoff": {want.HeartbeatErrorBackoff, cfg.HeartbeatErrorBackoff},
		} {
			if got[0] != time.Duration(0) && got[0] != got[1] {
				t.Fatalf("the %s from the command line, %v, became %v", what, got[0], got[1])
			}
		}

		o, err := ParseIPAOptions(cmdline, nil)
		if err != nil {
			t.Fatalf("ConfigFromCmdline accepted what ParseIPAOptions refuses: %v", err)
		}
		again, err := ParseIPAOptions(ipaCmdline(o), nil)
		if err != nil || again != o {
			t.Fatalf("IPA options %+v written as %q parse back as %+v (%v)", o, ipaCmdline(o), again, err)
		}
	})
}

// ipaCmdline writes options as the driver would put them on a command line.
func ipaCmdline(o IPAOptions) string {
	var w []string
	for k, v := range map[string]string{"ipa-api-url": o.APIURL, "ipa-node-uuid": o.NodeUUID, "ipa-advertise-host": o.AdvertiseHost,
		"ipa-advertise-port": o.AdvertisePort, "ipa-advertise-protocol": o.AdvertiseProtocol, "BOOTIF": o.BootMAC} {
		if v != "" {
			w = append(w, k+"="+v)
		}
	}
	return strings.Join(w, " ")
}

// FuzzCommand posts command bodies to an agent's API (a fresh agent each
// time, legacy dialect so no token is needed, downloads refused before they
// leave the process). The corpus holds the bodies Ironic sends for every
// command the agent has. Whatever the body, the agent answers 200 with a
// finished command, or a 4xx fault and records no command; and it keeps
// answering.
func FuzzCommand(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := New(Config{
			APIURL:       "http://127.0.0.1:1",
			AdvertiseURL: "http://127.0.0.1:1",
			Dialect:      DialectLegacy,
			Hardware:     NewMemHardware(testHardware(t, "52:54:00:12:34:56", 1<<20)),
			HTTPClient:   noNetwork,
			Logger:       quietLogger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer a.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		status, res := serveAgent(ctx, t, a, "POST", "/v1/commands?wait=true", body)
		n := len(a.Commands())
		switch status {
		case 200:
			st, _ := res["command_status"].(string)
			cerr, hasErr := res["command_error"].(map[string]any)
			switch {
			case st == StatusSucceeded && res["command_error"] == nil:
			case (st == StatusFailed || st == StatusCleanVersionMismatch) && hasErr && cerr["message"] != nil:
			default:
				t.Fatalf("200 with command_status %q and command_error %v after wait=true", st, res["command_error"])
			}
			if n != 1 {
				t.Fatalf("a command ran and the agent lists %d", n)
			}
		case 400, 404, 409:
			fs, _ := res["faultstring"].(string)
			if res["faultcode"] != "Client" || fs == "" {
				t.Fatalf("%d without a client fault: %v", status, res)
			}
			if status == 400 && !strings.HasPrefix(fs, "400 Bad Request") {
				t.Fatalf("400 fault %q", fs)
			}
			if n != 0 {
				t.Fatalf("a refused command (%d) left %d commands in the list", status, n)
			}
		default:
			t.Fatalf("status %d: %v", status, res)
		}
		if status, _ := serveAgent(ctx, t, a, "GET", "/v1/status", nil); status != 200 {
			t.Fatalf("after the command GET /v1/status = %d", status)
		}
	})
}

// noNetwork refuses every connection: a fuzzed image URL must not leave the host.
var noNetwork = &http.Client{Transport: &http.Transport{
	Proxy: nil,
	DialContext: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("fuzz: no network")
	},
}}

func serveAgent(ctx context.Context, t *testing.T, a *Agent, method, path string, body []byte) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequestWithContext(ctx, method, path, bytes.NewReader(body))
	w := httptest.NewRecorder()
	a.ServeHTTP(w, req)
	var res map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil {
		t.Fatalf("%s %s = %d with a body that is no JSON object: %q", method, path, w.Code, w.Body.String())
	}
	return w.Code, res
}
