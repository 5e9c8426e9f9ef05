package fakeagent

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestConfigFromCmdline(t *testing.T) {
	faults := base64.StdEncoding.EncodeToString([]byte(`{"crash_during": "write_image"}`))
	tests := []struct {
		name    string
		cmdline string
		want    CmdlineConfig
		wantErr string
	}{
		{
			name:    "VM ramdisk",
			cmdline: "console=ttyS0 quiet ipa-api-url=http://10.0.2.2:6385 ipa-advertise-host=127.0.0.1 ipa-advertise-port=19999 BOOTIF=01-52-54-00-12-34-56 ironlab.dialect=legacy ironlab.driver=agent_ssh ironlab.heartbeat-error-backoff=1s ironlab.faults=" + faults,
			want: CmdlineConfig{
				Config: Config{APIURL: "http://10.0.2.2:6385", AdvertiseURL: "http://127.0.0.1:19999", Dialect: DialectLegacy, Driver: "agent_ssh",
					HeartbeatErrorBackoff: time.Second, Faults: Faults{CrashDuring: "write_image"}},
				BootMAC: "52:54:00:12:34:56",
			},
		},
		{
			name:    "defaults and underscores",
			cmdline: "ipa_api_url=http://api:6385 ipa_advertise_host=10.0.2.15 ipa-node-uuid=" + nodeA + " ipa-lookup-interval=0.5",
			want: CmdlineConfig{Config: Config{APIURL: "http://api:6385", AdvertiseURL: "http://10.0.2.15:9999", NodeUUID: nodeA,
				LookupInterval: 500 * time.Millisecond}},
		},
		{
			name:    "virtual media ISO",
			cmdline: "initrd=/initrd text ipa-api-url=http://127.0.0.1:6385 ipa-advertise-host=127.0.0.1 ipa-agent-token=Zm9vYmFy --",
			want:    CmdlineConfig{Config: Config{APIURL: "http://127.0.0.1:6385", AdvertiseURL: "http://127.0.0.1:9999", AgentToken: "Zm9vYmFy"}},
		},
		{name: "no api url", cmdline: "ipa-advertise-host=x", wantErr: "ipa-api-url is missing"},
		{name: "no advertise host", cmdline: "ipa-api-url=http://x", wantErr: "ipa-advertise-host is missing"},
		{name: "bad port", cmdline: "ipa-api-url=http://x ipa-advertise-host=h ipa-advertise-port=99999", wantErr: "not a port"},
		{name: "bad dialect", cmdline: "ipa-api-url=http://x ipa-advertise-host=h ironlab.dialect=v2", wantErr: "want v1 or legacy"},
		{name: "bad faults", cmdline: "ipa-api-url=http://x ipa-advertise-host=h ironlab.faults=" + base64.StdEncoding.EncodeToString([]byte(`{"nope": 1}`)), wantErr: "unknown field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ConfigFromCmdline(tc.cmdline)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreUnexported(Config{}), cmpopts.IgnoreFields(Config{}, "OpenDisk", "PowerOff", "Hardware", "Mux", "HTTPClient", "Logger")); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	hw := NewMemHardware(testHardware(t, macA))
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no api", Config{Hardware: hw, AdvertiseURL: "http://x"}, "APIURL is required"},
		{"no hardware", Config{APIURL: "http://x", AdvertiseURL: "http://x"}, "Hardware is required"},
		{"no advertise url", Config{APIURL: "http://x", Hardware: hw}, "AdvertiseURL is required"},
		{"bad dialect", Config{APIURL: "http://x", Hardware: hw, AdvertiseURL: "http://x", Dialect: "v3"}, "dialect"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}
