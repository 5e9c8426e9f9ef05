package libvirtvm

import "testing"

func TestNetworkCmdline(t *testing.T) {
	m := &Machine{hostPort: 40123}
	for name, tc := range map[string]struct{ in, want string }{
		"pxe deploy entry": {
			"console=ttyS0 ironlab.mode=pxe-deploy ipa-api-url=http://127.0.0.1:6385 ipa-node-uuid=u ironlab.deploy-key=k",
			"console=ttyS0 ironlab.mode=pxe-deploy ipa-api-url=http://10.0.2.2:6385 ipa-node-uuid=u ironlab.deploy-key=k ipa-advertise-host=127.0.0.1 ipa-advertise-port=40123",
		},
		"agent entry passes unchanged": {
			"console=ttyS0 ipa-api-url=http://10.0.2.2:6385 ipa-advertise-host=127.0.0.1 ipa-advertise-port=40123",
			"console=ttyS0 ipa-api-url=http://10.0.2.2:6385 ipa-advertise-host=127.0.0.1 ipa-advertise-port=40123",
		},
		"a remote API stays": {
			"ipa-api-url=https://ironic.example:6385 ipa-advertise-host=192.0.2.1",
			"ipa-api-url=https://ironic.example:6385 ipa-advertise-host=192.0.2.1",
		},
	} {
		if got := m.networkCmdline(tc.in); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", name, got, tc.want)
		}
	}
}
